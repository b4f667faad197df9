"""Dataset digests and group checksums (fedimage.store.checksum)."""

from __future__ import annotations

import hashlib

import blake3
import h5py
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedimage.store import schema
from fedimage.store.checksum import DatasetDigest, array_line, checksum_of_group, current_digest

DTYPES = st.sampled_from([np.uint8, np.uint16, np.int64, np.float32, "S7"])


def test_the_stores_written_now_digest_with_blake3():
    assert current_digest() == schema.dataset_digest(schema.FORMAT_VERSION) == "blake3"
    assert [schema.dataset_digest(version) for version in (1, 2, 3)] == ["sha256", "sha256", "blake3"]


@given(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, max_side=5)))
def test_an_array_is_digested_as_its_bytes_in_c_order(array: np.ndarray):
    for algorithm, reference in (("sha256", hashlib.sha256), ("blake3", blake3.blake3)):
        digest = DatasetDigest(algorithm)
        digest.update(np.asfortranarray(array))
        assert digest.hexdigest() == reference(np.ascontiguousarray(array).tobytes()).hexdigest()


@given(st.binary(max_size=3000), st.integers(min_value=0, max_value=3000))
def test_feeding_in_pieces_is_feeding_at_once(data: bytes, cut: int):
    whole, pieces = DatasetDigest(), DatasetDigest()
    whole.update(data)
    pieces.update(memoryview(data)[:cut])
    pieces.update(np.frombuffer(data[cut:], dtype=np.uint8))
    assert pieces.hexdigest() == whole.hexdigest()


def test_a_typed_memoryview_is_digested_as_its_bytes():
    values = np.arange(6, dtype=np.uint16)
    for algorithm in ("sha256", "blake3"):
        typed, flat = DatasetDigest(algorithm), DatasetDigest(algorithm)
        typed.update(memoryview(values))
        flat.update(values.tobytes())
        assert typed.hexdigest() == flat.hexdigest()


def test_unknown_algorithm_is_refused():
    with pytest.raises(KeyError):
        DatasetDigest("md5")


def test_a_group_recomputes_to_its_written_lines(tmp_path):
    arrays = {
        "images": np.arange(96, dtype=np.uint8).reshape(2, 4, 4, 3),
        "image_ids": np.array([b"a", b"bc"]),
    }
    with h5py.File(tmp_path / "g.h5", "w") as h5:
        group = h5.create_group("user")
        for name, array in arrays.items():
            group[name] = array
        for algorithm in ("sha256", "blake3"):
            lines = [array_line(name, array, algorithm) for name, array in arrays.items()]
            assert all(line.endswith("\n") and line.count(":") == 3 for line in lines)
            expected = hashlib.sha256("".join(sorted(lines)).encode("utf-8")).hexdigest()
            assert checksum_of_group(group, algorithm=algorithm) == expected
        assert checksum_of_group(group, algorithm="sha256") != checksum_of_group(group, algorithm="blake3")


def test_variable_length_values_are_digested_deterministically(tmp_path):
    with h5py.File(tmp_path / "v.h5", "w") as h5:
        group = h5.create_group("user")
        group.create_dataset("image_ids", data=["a", "bc"], dtype=h5py.string_dtype())
        first = checksum_of_group(group)
        assert checksum_of_group(group) == first
        group["image_ids"][1] = "bd"
        assert checksum_of_group(group) != first
