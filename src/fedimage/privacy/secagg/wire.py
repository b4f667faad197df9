"""Flat records of the SecAgg+ messages (and of a client's state) for a transport such as Flower's records.

A record is a ``dict[str, Value]`` whose values are the types Flower's ``ConfigRecord`` takes: ``int``,
``float``, ``str``, ``bytes``, ``bool`` and lists of one of them (this module does not import Flower).
Every record names its kind under ``secagg-kind`` and the format under ``secagg-version``. Mappings
become parallel lists in ascending key order with a count (``senders`` + ``ciphertexts`` +
``senders-count``), sets become ascending ``list[int]``, and an array becomes its little-endian
bytes with its dtype name and length.

Empty lists are never written: a list whose count is 0 is left out (an empty list's type cannot be
told apart in a ``ConfigRecord``, and Flower's ``count_bytes`` fails on one). On reading, a left-out
list is empty only when its count is 0; an empty list is accepted in its place too. (``count_bytes``
fails on an empty ``bytes`` value as well; no valid message has one, and a client state leaves out
the secrets it has not drawn yet.)

``from_record`` checks everything it reads, so a malformed, truncated or hostile record raises
``SecAggError`` with one line naming the field, never a ``KeyError`` or ``IndexError``. Protocol
checks (who may send what, key sizes, the threshold) stay with ``SecAggServer`` and ``SecAggClient``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NoReturn, TypeVar, overload

import numpy as np

from fedimage.errors import OptionError
from fedimage.privacy.secagg.errors import SecAggError
from fedimage.privacy.secagg.masks import PRGS
from fedimage.privacy.secagg.messages import (
    AdvertiseKeys,
    KeysBroadcast,
    MaskedInput,
    RoundSetup,
    ShareKeys,
    SharesDelivery,
    UnmaskRequest,
    UnmaskResponse,
)
from fedimage.privacy.secagg.quantization import MAX_MODULUS_BITS, Quantizer

Scalar = int | float | str | bytes | bool
Value = Scalar | list[int] | list[float] | list[str] | list[bytes] | list[bool]
Record = dict[str, Value]
Message = (
    RoundSetup
    | AdvertiseKeys
    | KeysBroadcast
    | ShareKeys
    | SharesDelivery
    | MaskedInput
    | UnmaskRequest
    | UnmaskResponse
)
M = TypeVar("M")

KIND_KEY = "secagg-kind"
VERSION_KEY = "secagg-version"
VERSION = 1
INDEX_LIMIT = 1 << 32  # client indices travel as 4-byte words (``messages.INDEX_BYTES``)
WORD_DTYPES = {"uint32": np.dtype("<u4"), "uint64": np.dtype("<u8")}  # as sent: little-endian
NUMBER_BYTES = 8

KINDS: dict[type, str] = {
    RoundSetup: "round-setup",
    AdvertiseKeys: "advertise-keys",
    KeysBroadcast: "keys-broadcast",
    ShareKeys: "share-keys",
    SharesDelivery: "shares-delivery",
    MaskedInput: "masked-input",
    UnmaskRequest: "unmask-request",
    UnmaskResponse: "unmask-response",
}


# -- writing ----------------------------------------------------------------------------------------


def new_record(kind: str) -> Record:
    """An empty record of ``kind``, with the kind and format version."""
    return {KIND_KEY: kind, VERSION_KEY: VERSION}


def put_blob(record: Record, key: str, value: bytes) -> None:
    """Store ``value`` under ``key``, or nothing when empty (for fields read with ``optional=True``)."""
    if value:
        record[key] = bytes(value)


def put_list(record: Record, key: str, values: Sequence[int] | Sequence[bytes]) -> None:
    """Store ``values`` as a list under ``key``, or nothing when empty (its count says it is empty)."""
    if values:
        record[key] = list(values)


def put_mapping(record: Record, name: str, keys_key: str, mapping: Mapping[int, object], **columns) -> None:
    """A mapping from client index as ``<name>-count``, ascending ``keys_key`` and one list per column.

    ``columns`` maps a record key to a function of the mapping's value giving that column's entry.
    """
    order = sorted(mapping)
    record[f"{name}-count"] = len(order)
    put_list(record, keys_key, order)
    for key, column in columns.items():
        put_list(record, key, [column(mapping[index]) for index in order])


def put_setup(record: Record, setup: RoundSetup, prefix: str = "") -> None:
    """The fields of ``setup`` under keys starting with ``prefix``."""
    record[f"{prefix}round-id"] = bytes(setup.round_id)
    record[f"{prefix}num-clients"] = setup.num_clients
    put_list(record, f"{prefix}degrees", [len(row) for row in setup.neighbours])
    put_list(record, f"{prefix}neighbours", [int(peer) for row in setup.neighbours for peer in row])
    record[f"{prefix}threshold"] = int(setup.threshold)
    record[f"{prefix}dimension"] = int(setup.dimension)
    record[f"{prefix}prg"] = setup.prg
    record[f"{prefix}quantizer-clip"] = float(setup.quantizer.clip)
    record[f"{prefix}quantizer-levels"] = int(setup.quantizer.levels)
    record[f"{prefix}quantizer-modulus-bits"] = int(setup.quantizer.modulus_bits)


def _put_words(record: Record, key: str, words: np.ndarray) -> None:
    array = np.asarray(words)
    name = f"uint{8 * array.dtype.itemsize}"
    if array.ndim != 1 or array.dtype.kind != "u" or name not in WORD_DTYPES:
        raise SecAggError(
            f"cannot encode {key}: expected a 1-D uint32 or uint64 array, got {array.dtype}{array.shape}"
        )
    record[key] = array.astype(WORD_DTYPES[name], copy=False).tobytes()
    record[f"{key}-dtype"] = name
    record[f"{key}-length"] = int(array.size)


def to_record(message: Message) -> Record:
    """The flat record of a protocol message (see the module docstring for the encoding)."""
    kind = KINDS.get(type(message))
    if kind is None:
        raise SecAggError(f"cannot encode a {type(message).__name__} as a SecAgg record")
    record = new_record(kind)
    if isinstance(message, RoundSetup):
        put_setup(record, message)
    elif isinstance(message, AdvertiseKeys):
        record["sender"] = int(message.sender)
        record["cipher-public-key"] = bytes(message.cipher_public_key)
        record["mask-public-key"] = bytes(message.mask_public_key)
    elif isinstance(message, KeysBroadcast):
        record["recipient"] = int(message.recipient)
        put_mapping(
            record,
            "peers",
            "peers",
            message.keys,
            **{
                "cipher-public-keys": lambda pair: bytes(pair[0]),
                "mask-public-keys": lambda pair: bytes(pair[1]),
            },
        )
    elif isinstance(message, ShareKeys):
        record["sender"] = int(message.sender)
        record["seed-commitment"] = bytes(message.seed_commitment)
        put_mapping(record, "holders", "holders", message.ciphertexts, ciphertexts=bytes)
    elif isinstance(message, SharesDelivery):
        record["recipient"] = int(message.recipient)
        put_mapping(record, "senders", "senders", message.ciphertexts, ciphertexts=bytes)
    elif isinstance(message, MaskedInput):
        record["sender"] = int(message.sender)
        _put_words(record, "masked", message.masked)
    elif isinstance(message, UnmaskRequest):
        for name, members in (("survivors", message.survivors), ("dropped", message.dropped)):
            record[f"{name}-count"] = len(members)
            put_list(record, name, sorted(int(index) for index in members))
    else:  # UnmaskResponse
        record["sender"] = int(message.sender)
        put_mapping(record, "seed-shares", "seed-owners", message.seed_shares, **{"seed-shares": bytes})
        put_mapping(record, "key-shares", "key-owners", message.key_shares, **{"key-shares": bytes})
    return record


# -- reading ----------------------------------------------------------------------------------------


class RecordReader:
    """Typed, checked access to the fields of one record; every failure is a one-line ``SecAggError``.

    ``setup``, when given, bounds client indices by its number of clients (else by ``INDEX_LIMIT``).
    """

    def __init__(self, record: object, what: str = "SecAgg", setup: RoundSetup | None = None) -> None:
        if not isinstance(record, Mapping):
            raise SecAggError(f"a {what} record must be a mapping, got {type(record).__name__}")
        self.record = record
        self.what = what
        self.index_limit = setup.num_clients if setup is not None else INDEX_LIMIT

    def fail(self, key: str, problem: str) -> NoReturn:
        raise SecAggError(f"malformed {self.what} record: field {key!r} {problem}")

    def value(self, key: str) -> object:
        if key not in self.record:
            self.fail(key, "is missing")
        return self.record[key]

    def integer(self, key: str, low: int | None = None, high: int | None = None) -> int:
        """An int (not a bool) with ``low <= value < high``."""
        value = self.value(key)
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(key, f"must be an int, got {type(value).__name__}")
        _check_range(self, key, value, low, high)
        return int(value)

    def number(self, key: str) -> float:
        value = self.value(key)
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.fail(key, f"must be a float, got {type(value).__name__}")
        return float(value)

    def text(self, key: str) -> str:
        value = self.value(key)
        if not isinstance(value, str):
            self.fail(key, f"must be a str, got {type(value).__name__}")
        return value

    def blob(self, key: str, size: int | None = None, *, optional: bool = False) -> bytes:
        """Bytes (of ``size`` when given); ``optional``: a missing field reads as empty."""
        if optional and key not in self.record:
            value: object = b""
        else:
            value = self.value(key)
        if not isinstance(value, bytes):
            self.fail(key, f"must be bytes, got {type(value).__name__}")
        if size is not None and len(value) != size:
            self.fail(key, f"has {len(value)} bytes, expected {size}")
        return value

    def index(self, key: str) -> int:
        """A client index, in range for the round."""
        return self.integer(key, 0, self.index_limit)

    def count(self, key: str) -> int:
        return self.integer(key, 0)

    def _list(self, key: str, length: int, kind: type, kind_name: str) -> list:
        if length == 0 and key not in self.record:
            return []
        value = self.value(key)
        if not isinstance(value, list):
            self.fail(key, f"must be a list of {kind_name}, got {type(value).__name__}")
        if len(value) != length:
            self.fail(key, f"has {len(value)} entries, expected {length}")
        for item in value:
            if not isinstance(item, kind) or (kind is int and isinstance(item, bool)):
                self.fail(key, f"must be a list of {kind_name}, has a {type(item).__name__}")
        return value

    def integers(self, key: str, length: int, low: int | None = None, high: int | None = None) -> list[int]:
        values = self._list(key, length, int, "int")
        for value in values:
            _check_range(self, key, value, low, high)
        return [int(value) for value in values]

    def blobs(self, key: str, length: int) -> list[bytes]:
        return list(self._list(key, length, bytes, "bytes"))

    def indices(self, key: str, length: int) -> list[int]:
        """Distinct client indices."""
        values = self.integers(key, length, 0, self.index_limit)
        if len(set(values)) != len(values):
            self.fail(key, "repeats a client index")
        return values

    def index_set(self, name: str) -> frozenset[int]:
        """A set stored as ``<name>-count`` and the list ``<name>``."""
        return frozenset(self.indices(name, self.count(f"{name}-count")))

    def mapping(self, name: str, keys_key: str, *columns: str) -> list[tuple[int, ...]]:
        """Rows ``(index, column values...)`` of a mapping written by ``put_mapping`` (bytes columns)."""
        count = self.count(f"{name}-count")
        keys = self.indices(keys_key, count)
        values = [self.blobs(column, count) for column in columns]
        return list(zip(keys, *values, strict=True))

    def words(self, key: str, setup: RoundSetup | None = None) -> np.ndarray:
        """An array written by ``_put_words``; with ``setup``, of its dimension and word type."""
        name = self.text(f"{key}-dtype")
        if name not in WORD_DTYPES:
            self.fail(f"{key}-dtype", f"is {name!r}, expected one of {', '.join(WORD_DTYPES)}")
        wire = WORD_DTYPES[name]
        length = self.integer(f"{key}-length", 0)
        data = self.blob(key)
        if len(data) % wire.itemsize:
            self.fail(key, f"has {len(data)} bytes, not a multiple of the {wire.itemsize}-byte {name} words")
        if len(data) != length * wire.itemsize:
            self.fail(key, f"holds {len(data) // wire.itemsize} words, but {key}-length says {length}")
        if setup is not None:
            if length != setup.dimension:
                self.fail(key, f"holds {length} words, but the round's dimension is {setup.dimension}")
            if np.dtype(name) != setup.quantizer.dtype:
                self.fail(f"{key}-dtype", f"is {name}, but the round's words are {setup.quantizer.dtype}")
        return np.frombuffer(data, dtype=wire).astype(np.dtype(name))


def _check_range(reader: RecordReader, key: str, value: int, low: int | None, high: int | None) -> None:
    if low is not None and value < low:
        reader.fail(key, f"is {value}, below {low}")
    if high is not None and value >= high:
        reader.fail(key, f"is {value}, not below {high}")


def read_setup(reader: RecordReader, prefix: str = "") -> RoundSetup:
    """The ``RoundSetup`` written by ``put_setup`` with ``prefix``, checked: a symmetric simple graph."""
    round_id = reader.blob(f"{prefix}round-id")
    if not round_id:
        reader.fail(f"{prefix}round-id", "is empty")
    num_clients = reader.integer(f"{prefix}num-clients", 1, INDEX_LIMIT)
    degrees = reader.integers(f"{prefix}degrees", num_clients, 0, num_clients)
    flat = reader.integers(f"{prefix}neighbours", sum(degrees), 0, num_clients)
    rows: list[tuple[int, ...]] = []
    start = 0
    for client, degree in enumerate(degrees):
        row = tuple(flat[start : start + degree])
        start += degree
        if client in row or len(set(row)) != len(row):
            reader.fail(f"{prefix}neighbours", f"lists client {client} as its own neighbour or twice")
        rows.append(row)
    edges = {(client, peer) for client, row in enumerate(rows) for peer in row}
    for client, peer in edges:
        if (peer, client) not in edges:
            reader.fail(f"{prefix}neighbours", f"is not symmetric: {peer} is a neighbour of {client} only")
    threshold = reader.integer(f"{prefix}threshold", 1)
    dimension = reader.integer(f"{prefix}dimension", 1)
    prg = reader.text(f"{prefix}prg")
    if prg not in PRGS:
        reader.fail(f"{prefix}prg", f"is {prg!r}, expected one of {', '.join(PRGS)}")
    clip = reader.number(f"{prefix}quantizer-clip")
    if not (math.isfinite(clip) and clip > 0):
        reader.fail(f"{prefix}quantizer-clip", f"is {clip}, not a positive finite number")
    bits = reader.integer(f"{prefix}quantizer-modulus-bits", 1, MAX_MODULUS_BITS + 1)
    levels = reader.integer(f"{prefix}quantizer-levels", 2)
    try:
        quantizer = Quantizer(clip=clip, levels=levels, modulus_bits=bits)
    except OptionError as error:
        reader.fail(f"{prefix}quantizer-levels", f"is invalid: {error}")
    return RoundSetup(
        round_id=round_id,
        neighbours=tuple(rows),
        threshold=threshold,
        quantizer=quantizer,
        dimension=dimension,
        prg=prg,
    )


def check_kind(reader: RecordReader, kind: str) -> None:
    """The record's format version is this module's, and its kind is ``kind``."""
    version = reader.integer(VERSION_KEY)
    if version != VERSION:
        reader.fail(VERSION_KEY, f"is {version}, this code reads version {VERSION}")
    found = reader.text(KIND_KEY)
    if found != kind:
        reader.fail(KIND_KEY, f"is {found!r}, expected {kind!r}")


def kind_of(record: object) -> str:
    """The kind a record states (not checked further)."""
    return RecordReader(record).text(KIND_KEY)


@overload
def from_record(record: object, expected: type[M], *, setup: RoundSetup | None = None) -> M: ...


@overload
def from_record(record: object, expected: None = None, *, setup: RoundSetup | None = None) -> Message: ...


def from_record(record: object, expected: type | None = None, *, setup: RoundSetup | None = None) -> object:
    """The message a record holds, checked field by field; ``SecAggError`` names the first bad field.

    ``expected``: the message class the caller waits for (another kind is an error). ``setup``: the
    round's setup, when known: client indices must then be among its clients, and a masked input
    must have its dimension and word type.
    """
    reader = RecordReader(record, "SecAgg", setup)
    kind = reader.text(KIND_KEY)
    classes = {name: cls for cls, name in KINDS.items()}
    if kind not in classes:
        reader.fail(KIND_KEY, f"is {kind!r}, not one of {', '.join(classes)}")
    reader.what = f"SecAgg {kind}"
    if expected is not None and classes[kind] is not expected:
        reader.fail(KIND_KEY, f"is {kind!r}, expected {KINDS.get(expected, expected.__name__)!r}")
    check_kind(reader, kind)
    if kind == "round-setup":
        return read_setup(reader)
    if kind == "advertise-keys":
        return AdvertiseKeys(
            reader.index("sender"), reader.blob("cipher-public-key"), reader.blob("mask-public-key")
        )
    if kind == "keys-broadcast":
        recipient = reader.index("recipient")
        rows = reader.mapping("peers", "peers", "cipher-public-keys", "mask-public-keys")
        return KeysBroadcast(recipient, {peer: (cipher, mask) for peer, cipher, mask in rows})
    if kind == "share-keys":
        sender = reader.index("sender")
        commitment = reader.blob("seed-commitment")
        rows = reader.mapping("holders", "holders", "ciphertexts")
        return ShareKeys(sender, dict(rows), commitment)
    if kind == "shares-delivery":
        recipient = reader.index("recipient")
        return SharesDelivery(recipient, dict(reader.mapping("senders", "senders", "ciphertexts")))
    if kind == "masked-input":
        return MaskedInput(reader.index("sender"), reader.words("masked", setup))
    if kind == "unmask-request":
        return UnmaskRequest(reader.index_set("survivors"), reader.index_set("dropped"))
    sender = reader.index("sender")
    seed_shares = dict(reader.mapping("seed-shares", "seed-owners", "seed-shares"))
    key_shares = dict(reader.mapping("key-shares", "key-owners", "key-shares"))
    return UnmaskResponse(sender, seed_shares, key_shares)


# -- accounting -------------------------------------------------------------------------------------


def record_bytes(record: Mapping[str, object]) -> int:
    """The payload size of a record: bytes and UTF-8 string lengths, 8 per int or float, 1 per bool.

    Keys and framing are not counted (they are the transport's overhead).
    """
    total = 0
    for key, value in record.items():
        for item in value if isinstance(value, list) else (value,):
            if isinstance(item, bool):
                total += 1
            elif isinstance(item, int | float):
                total += NUMBER_BYTES
            elif isinstance(item, bytes):
                total += len(item)
            elif isinstance(item, str):
                total += len(item.encode("utf-8"))
            else:
                raise SecAggError(f"record field {key!r} holds a {type(item).__name__}, not a record value")
    return total
