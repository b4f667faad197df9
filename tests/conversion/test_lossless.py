"""Lossless stores: PNG per image, 8-bit RGB or gray, or 16-bit gray with DICOM's stored values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import fast_options, write_jsonl
from PIL import Image

import fedimage
from fedimage import ImageOptions, convert
from fedimage.errors import OptionError
from fedimage.privacy.pseudonyms import Pseudonymizer

KEY = bytes(range(32))


def pixels_of(path: Path) -> dict[str, np.ndarray]:
    """{image_id: pixels} over a store."""
    with fedimage.open(path) as store:
        return {
            image_id: data.images[index]
            for split in store.splits
            for user in store.users(split)
            for data in [store.load_user(split, user)]
            for index, image_id in enumerate(data.image_ids)
        }


def manifest_of(root: Path, arrays: dict[str, np.ndarray]) -> Path:
    rows = []
    for index, (name, array) in enumerate(arrays.items()):
        Image.fromarray(array).save(root / name)
        rows.append({"image": name, "image_id": name, "user_id": f"u{index % 2}"})
    return write_jsonl(root / "m.jsonl", rows)


@pytest.mark.parametrize("color", ["rgb", "gray"])
def test_8_bit_images_at_the_store_size_are_kept_exactly(tmp_path, color):
    rng = np.random.default_rng(0)
    shape = (24, 24, 3) if color == "rgb" else (24, 24)
    arrays = {f"im{index}.png": rng.integers(0, 256, shape, dtype=np.uint8) for index in range(6)}
    manifest = manifest_of(tmp_path, arrays)
    convert(
        manifest,
        tmp_path / "s.h5",
        fast_options(image=ImageOptions(size=24, storage="lossless", color=color)),
    )
    stored = pixels_of(tmp_path / "s.h5")
    for name, array in arrays.items():
        assert stored[name].dtype == np.uint8
        np.testing.assert_array_equal(stored[name], array.reshape(24, 24, -1))
    assert fedimage.verify_store(tmp_path / "s.h5", decode=True).ok


def test_16_bit_values_exact_8_bit_sources_scaled_and_resizing_in_floating_point(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {f"deep{index}.png": rng.integers(0, 65536, (32, 32), dtype=np.uint16) for index in range(3)}
    arrays["shallow.png"] = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    arrays["large.png"] = np.full((64, 64), 40000, dtype=np.uint16)
    manifest = manifest_of(tmp_path, arrays)
    image = ImageOptions(size=32, storage="lossless", color="gray", bit_depth=16)
    report = convert(manifest, tmp_path / "s.h5", fast_options(image=image))
    assert report.rejected == 0
    stored = pixels_of(tmp_path / "s.h5")
    for index in range(3):
        np.testing.assert_array_equal(stored[f"deep{index}.png"][:, :, 0], arrays[f"deep{index}.png"])
    np.testing.assert_array_equal(
        stored["shallow.png"][:, :, 0], arrays["shallow.png"].astype(np.uint16) * 257
    )
    assert (stored["large.png"] == 40000).all()  # a uniform image stays uniform through the resize
    with fedimage.open(tmp_path / "s.h5") as store:
        assert (store.storage, store.bit_depth, store.dtype) == ("lossless", 16, np.uint16)
        assert store.manifest["bit_depth"] == 16
        user = next(iter(store.users("train")))
        assert store.load_image("train", user, 0).dtype == np.uint16
        assert all(data.startswith(b"\x89PNG") for data in store.encoded_images("train", user))
    assert fedimage.verify_store(tmp_path / "s.h5", decode=True).ok
    convert(manifest, tmp_path / "again.h5", fast_options(image=image))
    assert (tmp_path / "s.h5").read_bytes() == (tmp_path / "again.h5").read_bytes()


def test_dicom_ct_values_and_hounsfield_units_exact_in_a_sealed_16_bit_store(tmp_path):
    pytest.importorskip("pydicom")
    from dicom_helpers import ct_dicom, ct_pixels, ultrasound_dicom, write

    root = tmp_path / "dicom"
    write(root / "p1" / "signed.dcm", ct_dicom(serial=1))
    write(
        root / "p1" / "unsigned.dcm",
        ct_dicom(ct_pixels(signed=False), signed=False, intercept=-1024.0, serial=2),
    )
    write(root / "p2" / "colour.dcm", ultrasound_dicom())
    image = ImageOptions(size=64, storage="lossless", color="gray", bit_depth=16)
    report = convert(
        root,
        tmp_path / "ct.h5",
        fast_options(
            image=image,
            pseudonyms=Pseudonymizer(KEY),
            encrypt_key=KEY,
            plan=fedimage.PlanOptions(split=fedimage.SplitRatios.parse("1,0,0")),
        ),
    )
    assert [reject.text for reject in report.rejects] == [
        "a 16-bit store keeps gray images; this DICOM file is colour (store it 8-bit)"
    ]
    with fedimage.open(tmp_path / "ct.h5", key=KEY) as store:
        (user,) = store.users("train")
        data = store.load_user("train", user)
    units = {}
    for index in range(len(data)):
        slope, intercept = data.metadata["rescale_slope"][index], data.metadata["rescale_intercept"][index]
        units[intercept] = data.images[index, :, :, 0].astype(np.float64) * slope + intercept
        assert data.metadata["window_center"][index] == 40.0 and data.metadata["window_width"][index] == 400.0
    np.testing.assert_array_equal(units[-32768.0], ct_pixels().astype(np.float64))  # signed: shifted
    np.testing.assert_array_equal(units[-1024.0], ct_pixels(signed=False).astype(np.float64) - 1024.0)
    unsigned = next(
        index for index in range(len(data)) if data.metadata["rescale_intercept"][index] == -1024.0
    )
    np.testing.assert_array_equal(
        data.images[unsigned, :, :, 0], ct_pixels(signed=False)
    )  # the file's values


def test_option_errors():
    with pytest.raises(OptionError, match="`bit_depth` 16 keeps gray images losslessly"):
        ImageOptions(storage="jpeg", color="gray", bit_depth=16)
    with pytest.raises(OptionError, match="`bit_depth` 16 keeps gray images losslessly"):
        ImageOptions(storage="lossless", bit_depth=16)
    with pytest.raises(OptionError, match="`bit_depth` must be 8 or 16"):
        ImageOptions(storage="lossless", bit_depth=12)
