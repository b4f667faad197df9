"""TensorFlow's ``tf.train.Example`` message without TensorFlow.

The message types of ``tensorflow/core/example/{example,feature}.proto`` are described
here with ``protobuf``'s descriptor API in a private descriptor pool (so they never clash
with TensorFlow's own classes in the same process); the serialized messages are the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from fedimage.extras import require

PACKAGE = "tensorflow"
_OPTIONAL = 1
_REPEATED = 3


def _message(file: Any, name: str, fields: Sequence[tuple[str, int, int, int, str]]) -> Any:
    """Add a message type to ``file``; a field is (name, number, label, type, type_name)."""
    message = file.message_type.add(name=name)
    for field_name, number, label, kind, type_name in fields:
        field = message.field.add(name=field_name, number=number, label=label, type=kind)
        if type_name:
            field.type_name = type_name
    return message


@cache
def example_class() -> type:
    """The ``tensorflow.Example`` message class (needs the ``protobuf`` package)."""
    require("google.protobuf", "the tfrecords export")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    kinds = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="fedimage/tensorflow_example.proto", package=PACKAGE, syntax="proto3"
    )
    _message(file, "BytesList", [("value", 1, _REPEATED, kinds.TYPE_BYTES, "")])
    _message(file, "FloatList", [("value", 1, _REPEATED, kinds.TYPE_FLOAT, "")])
    _message(file, "Int64List", [("value", 1, _REPEATED, kinds.TYPE_INT64, "")])
    feature = _message(
        file,
        "Feature",
        [
            ("bytes_list", 1, _OPTIONAL, kinds.TYPE_MESSAGE, f".{PACKAGE}.BytesList"),
            ("float_list", 2, _OPTIONAL, kinds.TYPE_MESSAGE, f".{PACKAGE}.FloatList"),
            ("int64_list", 3, _OPTIONAL, kinds.TYPE_MESSAGE, f".{PACKAGE}.Int64List"),
        ],
    )
    feature.oneof_decl.add(name="kind")
    for field in feature.field:
        field.oneof_index = 0
    features = _message(
        file,
        "Features",
        [("feature", 1, _REPEATED, kinds.TYPE_MESSAGE, f".{PACKAGE}.Features.FeatureEntry")],
    )
    entry = features.nested_type.add(name="FeatureEntry")
    entry.field.add(name="key", number=1, label=_OPTIONAL, type=kinds.TYPE_STRING)
    entry.field.add(
        name="value", number=2, label=_OPTIONAL, type=kinds.TYPE_MESSAGE, type_name=f".{PACKAGE}.Feature"
    )
    entry.options.map_entry = True
    _message(file, "Example", [("features", 1, _OPTIONAL, kinds.TYPE_MESSAGE, f".{PACKAGE}.Features")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{PACKAGE}.Example"))


def serialize_example(
    bytes_features: Mapping[str, bytes | Sequence[bytes]],
    int64_features: Mapping[str, Sequence[int]],
    float_features: Mapping[str, Sequence[float]] | None = None,
) -> bytes:
    """One serialized ``tf.train.Example`` (features in a deterministic order).

    A bytes feature is one value (``bytes``) or a list of them. A feature given an empty list is
    kept, as an empty list of its kind (``tf.io.VarLenFeature`` reads it as no value). A float
    feature holds 32-bit floats, as TensorFlow's ``FloatList`` does.
    """
    example = example_class()()
    feature = example.features.feature
    for key, value in bytes_features.items():
        values = feature[key].bytes_list
        values.SetInParent()
        if isinstance(value, bytes):
            values.value.append(value)
        else:
            values.value.extend(value)
    for key, numbers in int64_features.items():
        feature[key].int64_list.SetInParent()
        feature[key].int64_list.value.extend(numbers)
    for key, floats in (float_features or {}).items():
        feature[key].float_list.SetInParent()
        feature[key].float_list.value.extend(floats)
    return example.SerializeToString(deterministic=True)
