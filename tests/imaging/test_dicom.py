"""DICOM input: detection, rendering as pydicom's LUT pipeline does, frames, and rejections that
never quote what a header holds."""

from __future__ import annotations

import io
import logging
import sys
import traceback
import warnings
from collections.abc import Callable

import numpy as np
import pydicom
import pytest
from dicom_helpers import (
    PLANTED,
    PRIVATE_VALUE,
    burned_in_dicom,
    cr_monochrome1_dicom,
    cr_pixels,
    ct_dicom,
    ct_pixels,
    implicit_dicom,
    j2k_dicom,
    multiframe_dicom,
    multiframe_pixels,
    no_pixels_dicom,
    palette_dicom,
    rgb_pixels,
    rle_dicom,
    site_identifiers,
    to_bytes,
    truncated_dicom,
    uid,
    ultrasound_dicom,
    ultrasound_jpeg_dicom,
    write,
    write_labels_csv,
    write_site,
)
from helpers import jpeg_bytes, photo
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_modality_lut, apply_voi_lut, convert_color_space
from pydicom.uid import MPEG2MPML, RLELossless

from fedimage.errors import MissingExtraError, OptionError
from fedimage.imaging.dicom import (
    BURNED_IN,
    DEFAULT_OPTIONS,
    FLOAT_PIXELS,
    NO_PIXELS,
    NOT_DICOM,
    UNDECODABLE,
    DicomOptions,
    frame_count,
    frames_to_read,
    header,
    is_dicom,
    read_dicom,
    read_dicom_frames,
)
from fedimage.imaging.standardize import ImageRejected


def to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)


def windowing_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """The output range of pydicom's windowing for ``ds`` (PS3.3 C.11.2.1.2), worked out here."""
    bits = int(ds.BitsStored)
    low, high = (0, 2**bits - 1) if ds.PixelRepresentation == 0 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        low, high = low * ds.RescaleSlope + ds.RescaleIntercept, high * ds.RescaleSlope + ds.RescaleIntercept
    return low, high


def pydicom_rendering(ds: pydicom.Dataset, stored: np.ndarray) -> np.ndarray:
    """pydicom's modality LUT then VOI LUT (window), scaled from the window's output range to 8 bits."""
    low, high = windowing_range(ds)
    return to_uint8((apply_voi_lut(apply_modality_lut(stored, ds), ds) - low) / (high - low))


def parse(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def mutated(data: bytes, change: Callable[[pydicom.Dataset], None]) -> bytes:
    ds = parse(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a test's invalid value
        change(ds)
    return to_bytes(ds)


# -- detection and header ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "build",
    [
        ct_dicom,
        rle_dicom,
        ultrasound_jpeg_dicom,
        implicit_dicom,
        lambda: implicit_dicom(preamble=False),  # a bare implicit-VR dataset
        lambda: ct_dicom(preamble=False),  # a bare explicit-VR dataset
        lambda: ct_dicom()[132:],  # file meta without the preamble
    ],
)
def test_dicom_is_detected_with_or_without_preamble(build):
    data = build()
    assert is_dicom(data) and is_dicom(bytearray(data)) and is_dicom(memoryview(data))


def test_other_bytes_are_not_dicom():
    rng = np.random.default_rng(0)
    png = io.BytesIO()
    photo(32, 32).save(png, "PNG")
    candidates = [
        b"",
        b"DICM",
        png.getvalue(),
        jpeg_bytes(photo(32, 32)),
        b"patient,finding\nPLANTED,normal\n" * 20,
        b"\x08\x00\x05\x00" + b"ZZ" + rng.bytes(200),  # a group 0x0008 tag, no VR, absurd length
        b"\x02\x00\x00\x00" + rng.bytes(200),  # group 0x0002 must be explicit VR
        b"\0" * 128 + b"DICM" + rng.bytes(300),  # DICM, then no file meta
        *(rng.bytes(400) for _ in range(50)),
    ]
    assert not any(is_dicom(candidate) for candidate in candidates)


def test_header_reads_tags_without_pixels():
    ds = header(ct_dicom())
    assert ds.PatientID == "PLANTED-PID-7730419" and ds.Modality == "CT"
    assert "PixelData" not in ds
    assert frame_count(ct_dicom()) == 1 and frame_count(multiframe_dicom(4)) == 4
    with pytest.raises(ImageRejected, match=f"^{NOT_DICOM}$"):
        header(b"not a dicom file at all" * 10)
    with pytest.raises(ImageRejected, match=f"^{NOT_DICOM}$"):
        frame_count(jpeg_bytes(photo(16, 16)))


def test_header_reads_from_a_path_and_only_the_tags_asked_for(tmp_path):
    path = write(tmp_path / "IM0001", implicit_dicom(preamble=False))
    for source in (path, str(path), path.read_bytes()):
        assert header(source).PatientID == "PLANTED-PID-7730419"
    subset = header(path, tags=["PatientID", "SeriesDescription"])
    assert subset.PatientID == "PLANTED-PID-7730419" and "PatientName" not in subset
    with pytest.raises(ImageRejected, match=f"^{NOT_DICOM}$"):
        header(write(tmp_path / "photo.jpg", jpeg_bytes(photo(16, 16))))
    with pytest.raises(FileNotFoundError):
        header(tmp_path / "missing")


# -- grayscale rendering ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"signed": True},
        {"signed": False},  # uint16 with intercept -1024
        {"signed": True, "slope": 2.0, "intercept": -500.0, "window": (300.0, 1500.0)},
        {"signed": True, "bits_stored": 16, "window": (-600.0, 1200.0)},
        {"signed": True, "voi_function": "LINEAR_EXACT", "window": (40.0, 0.5)},
        {"signed": True, "voi_function": "SIGMOID"},
    ],
)
def test_ct_renders_as_pydicoms_modality_and_voi_luts(options):
    data = ct_dicom(**options)
    image = read_dicom(data)
    ds = parse(data)
    assert image.display.dtype == np.uint8 and image.display.shape == (64, 64)
    np.testing.assert_array_equal(image.display, pydicom_rendering(ds, ds.pixel_array))
    assert image.voi == "window"
    assert (image.window_center, image.window_width) == (float(ds.WindowCenter), float(ds.WindowWidth))
    assert (image.rescale_slope, image.rescale_intercept) == (
        float(ds.RescaleSlope),
        float(ds.RescaleIntercept),
    )
    assert 0 < (image.display == 0).mean() < 1 and 0 < (image.display == 255).mean() < 1


def test_stored_values_are_the_files_exactly():
    for signed in (True, False):
        image = read_dicom(ct_dicom(signed=signed))
        expected = ct_pixels(signed=signed)
        assert image.stored.dtype == expected.dtype == (np.int16 if signed else np.uint16)
        np.testing.assert_array_equal(image.stored, expected)
        assert image.bits_stored == 12 and image.photometric == "MONOCHROME2"


def test_a_window_override_replaces_the_files():
    data = ct_dicom()
    image = read_dicom(data, options=DicomOptions(window=(400, 1800)))
    ds = parse(data)
    ds.WindowCenter, ds.WindowWidth = 400, 1800
    np.testing.assert_array_equal(image.display, pydicom_rendering(ds, ds.pixel_array))
    assert (image.window_center, image.window_width, image.voi) == (400.0, 1800.0, "window")
    assert not np.array_equal(image.display, read_dicom(data).display)
    # The override wins over a VOI LUT Sequence too.
    assert read_dicom(ct_dicom(voi_lut=True), options=DicomOptions(window=(400, 1800))).voi == "window"


def test_without_a_window_the_modality_values_min_max_are_used():
    data = ct_dicom(window=None)
    image = read_dicom(data)
    modality = apply_modality_lut(ct_pixels(), parse(data))
    expected = to_uint8((modality - modality.min()) / (modality.max() - modality.min()))
    np.testing.assert_array_equal(image.display, expected)
    assert (image.voi, image.window_center, image.window_width) == ("minmax", None, None)
    assert image.display.min() == 0 and image.display.max() == 255


def test_an_invalid_window_falls_back_to_min_max():
    data = ct_dicom(window=(40.0, 12345.0))
    broken = data.replace(b"12345.0 ", b"PLANTED!")  # not a decimal string any more
    assert broken != data
    image = read_dicom(broken)
    assert image.voi == "minmax"
    np.testing.assert_array_equal(image.display, read_dicom(ct_dicom(window=None)).display)


@pytest.mark.filterwarnings("ignore:Applying a VOI LUT on a float input array")  # pydicom, on rescaled values
def test_a_voi_lut_sequence_is_applied_before_the_window():
    data = ct_dicom(voi_lut=True)
    image = read_dicom(data)
    ds = parse(data)
    lut = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)  # 8-bit LUT: 0..255
    np.testing.assert_array_equal(image.display, lut.astype(np.uint8))
    assert (image.voi, image.window_center) == ("lut", None)


def test_monochrome1_is_inverted():
    image = read_dicom(cr_monochrome1_dicom())
    stored = cr_pixels().astype(np.float64)
    minmax = to_uint8((stored - stored.min()) / (stored.max() - stored.min()))
    np.testing.assert_array_equal(image.display, 255 - minmax)
    assert image.photometric == "MONOCHROME1" and image.voi == "minmax"
    assert image.display[np.unravel_index(cr_pixels().argmax(), (64, 64))] == 0  # high values dark
    windowed_data = cr_monochrome1_dicom(window=(500.0, 600.0))
    ds = parse(windowed_data)
    np.testing.assert_array_equal(
        read_dicom(windowed_data).display, 255 - pydicom_rendering(ds, ds.pixel_array)
    )


# -- colour ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("build", [ultrasound_dicom, lambda: ultrasound_dicom(photometric="RGB")])
def test_colour_renders_as_pydicoms_rgb(build):
    data = build()
    image = read_dicom(data)
    assert image.display.shape == (64, 64, 3) and image.display.dtype == np.uint8
    np.testing.assert_array_equal(image.display, parse(data).pixel_array)  # pydicom 3 converts YBR
    assert np.abs(image.display.astype(int) - rgb_pixels()).max() <= 2  # YCbCr rounding only
    assert (image.voi, image.rescale_slope, image.window_center) == ("none", None, None)


def test_ybr_stored_values_stay_ycbcr():
    image = read_dicom(ultrasound_dicom())
    assert image.photometric == "YBR_FULL"
    np.testing.assert_array_equal(image.stored, convert_color_space(rgb_pixels(), "RGB", "YBR_FULL"))


def test_jpeg_baseline_ybr_full_422_renders_as_pydicom():
    data = ultrasound_jpeg_dicom()
    image = read_dicom(data)
    np.testing.assert_array_equal(image.display, parse(data).pixel_array)
    assert np.abs(image.display.astype(int) - rgb_pixels()).mean() < 8  # lossy, 4:2:0


def test_palette_color_uses_its_lookup_tables():
    image = read_dicom(palette_dicom())
    indices = image.stored
    assert indices.dtype == np.uint8 and indices.shape == (64, 64) and image.photometric == "PALETTE COLOR"
    np.testing.assert_array_equal(image.display[..., 0], indices)  # red: a ramp of 16-bit values
    np.testing.assert_array_equal(image.display[..., 1], 255 - indices)
    assert not image.display[..., 2].any()


# -- compression -----------------------------------------------------------------------------------


def test_rle_decodes_to_the_uncompressed_values():
    reference = read_dicom(ct_dicom())
    image = read_dicom(rle_dicom())
    assert parse(rle_dicom()).file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_array_equal(image.stored, reference.stored)
    np.testing.assert_array_equal(image.display, reference.display)


def test_jpeg_2000_lossless_decodes_to_the_uncompressed_values():
    try:
        data = j2k_dicom()
    except RuntimeError as error:  # pydicom found no JPEG 2000 encoder (pylibjpeg-openjpeg)
        pytest.skip(f"no JPEG 2000 encoder to write the test file: {error}")
    reference = read_dicom(ct_dicom())
    image = read_dicom(data)
    assert parse(data).file_meta.TransferSyntaxUID.name.startswith("JPEG 2000")
    assert image.stored.dtype == np.int16
    np.testing.assert_array_equal(image.stored, reference.stored)
    np.testing.assert_array_equal(image.display, reference.display)


# -- frames ----------------------------------------------------------------------------------------


def test_frames_to_read_picks_first_middle_or_all():
    assert frames_to_read(3) == frames_to_read(3, DEFAULT_OPTIONS) == [0]
    assert frames_to_read(3, DicomOptions(frames="middle")) == [1]
    assert frames_to_read(4, DicomOptions(frames="middle")) == [2]
    assert frames_to_read(1, DicomOptions(frames="middle")) == [0]
    assert frames_to_read(3, DicomOptions(frames="all")) == [0, 1, 2]
    assert frames_to_read(0, DicomOptions(frames="all")) == []


@pytest.mark.parametrize("transfer_syntax", [None, RLELossless])
def test_each_frame_of_a_multiframe_file_reads(transfer_syntax):
    data = multiframe_dicom(3, transfer_syntax=transfer_syntax)
    assert frame_count(data) == 3
    expected = multiframe_pixels(3)
    for frame in frames_to_read(3, DicomOptions(frames="all")):
        image = read_dicom(data, frame)
        np.testing.assert_array_equal(image.stored, expected[frame])
        assert (image.frame, image.frame_count) == (frame, 3)


def test_frames_of_one_file_read_in_one_pass():
    data = multiframe_dicom(4)
    chosen = [image.frame for image in read_dicom_frames(data, options=DicomOptions(frames="middle"))]
    assert chosen == [2]
    images = list(read_dicom_frames(data, options=DicomOptions(frames="all")))
    assert [image.frame for image in images] == [0, 1, 2, 3]
    for image in images:
        np.testing.assert_array_equal(image.display, read_dicom(data, image.frame).display)
    assert [image.frame for image in read_dicom_frames(data, [3, 1])] == [3, 1]
    frames = read_dicom_frames(data, [0, 4])
    assert next(frames).frame == 0
    with pytest.raises(ImageRejected, match=r"^DICOM frame 4 is out of range \(4 frames\)$"):
        next(frames)


def test_an_enhanced_objects_functional_groups_give_each_frames_rescale_and_window():
    data = multiframe_dicom(3, functional_groups=True)
    flat = parse(multiframe_dicom(3))  # the same pixels, rescale and window at the top level
    for frame in range(3):
        image = read_dicom(data, frame)
        assert (image.rescale_slope, image.rescale_intercept) == (1.0, -1000.0)
        assert (image.window_center, image.window_width) == (40.0 + 100 * frame, 400.0 + 100 * frame)
        flat.WindowCenter, flat.WindowWidth = image.window_center, image.window_width
        np.testing.assert_array_equal(image.display, pydicom_rendering(flat, multiframe_pixels(3)[frame]))


# -- rejections ------------------------------------------------------------------------------------


def _unknown_transfer_syntax(ds: pydicom.Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = uid(9, 9)


def _mpeg2(ds: pydicom.Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([b"\0\0\1\xb3" + b"PLANTED-PID-7730419" * 4 + b"\0"])
    ds["PixelData"].VR = "OB"


def _corrupt_rle(ds: pydicom.Dataset) -> None:
    ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([b"\x01\0\0\0" + b"\0" * 60 + PRIVATE_VALUE.encode() * 2])
    ds["PixelData"].VR = "OB"


def _float_pixels(ds: pydicom.Dataset) -> None:
    del ds.PixelData
    ds.BitsAllocated = 32
    ds.FloatPixelData = np.zeros(64 * 64, np.float32).tobytes()


def _photometric(value: str) -> Callable[[pydicom.Dataset], None]:
    def change(ds: pydicom.Dataset) -> None:
        ds.PhotometricInterpretation = value

    return change


REJECTIONS = [
    (lambda: b"PLANTED-PID-7730419 is not a DICOM file" * 5, {}, NOT_DICOM),
    (lambda: jpeg_bytes(photo(32, 32)), {}, NOT_DICOM),
    (truncated_dicom, {}, UNDECODABLE),
    (lambda: truncated_dicom(keep=0.0), {}, UNDECODABLE),
    (lambda: rle_dicom()[:-100], {}, UNDECODABLE),  # pydicom warns: no sequence delimiter
    (no_pixels_dicom, {}, NO_PIXELS),
    (lambda: mutated(ct_dicom(), _float_pixels), {}, FLOAT_PIXELS),
    (
        lambda: mutated(ct_dicom(), _mpeg2),
        {},
        "DICOM transfer syntax MPEG2 Main Profile / Main Level is not supported",
    ),
    (
        lambda: mutated(ct_dicom(), _unknown_transfer_syntax),
        {},
        "DICOM transfer syntax (unknown) is not supported",
    ),
    (lambda: mutated(ct_dicom(), _corrupt_rle), {}, UNDECODABLE),
    (burned_in_dicom, {}, BURNED_IN),
    (ct_dicom, {"frame": 1}, "DICOM frame 1 is out of range (1 frames)"),
    (ct_dicom, {"frame": -1}, "DICOM frame -1 is out of range (1 frames)"),
    (multiframe_dicom, {"frame": 3}, "DICOM frame 3 is out of range (3 frames)"),
    (ct_dicom, {"max_pixels": 4000}, "DICOM frame has more than 4000 pixels"),
    (
        lambda: mutated(ct_dicom(), _photometric("PLANTED-PI")),
        {},
        "DICOM photometric interpretation (unknown) is not supported",
    ),
    (
        lambda: mutated(ct_dicom(), _photometric("HSV")),
        {},
        "DICOM photometric interpretation HSV is not supported",
    ),
]


@pytest.mark.parametrize(("build", "arguments", "reason"), REJECTIONS)
def test_rejections_give_fixed_reasons_that_quote_no_identifier(build, arguments, reason, caplog):
    data = build()
    caplog.set_level(logging.DEBUG)
    caplog.clear()  # what building the file logged
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageRejected) as raised:
            read_dicom(data, **arguments)
    assert str(raised.value) == reason
    # Nothing pydicom said (its messages quote values) comes along: not in the traceback's chain,
    # not as a warning, not in the log.
    assert raised.value.__cause__ is None
    assert raised.value.__context__ is None or raised.value.__suppress_context__
    shown = "".join(traceback.format_exception(raised.value)) + repr(raised.value)
    assert not [planted for planted in PLANTED if planted in shown]
    assert not caught
    assert not [record for record in caplog.records if record.name.startswith("pydicom")]


def test_burned_in_annotation_is_read_when_allowed():
    image = read_dicom(burned_in_dicom(), options=DicomOptions(allow_burned_in=True))
    np.testing.assert_array_equal(image.stored, ct_pixels())


def test_reading_leaks_no_pydicom_warning_or_log_record(caplog):
    invalid_date = mutated(ct_dicom(), lambda ds: setattr(ds, "PatientBirthDate", "PLANTED-DATE"))
    caplog.set_level(logging.DEBUG)
    caplog.clear()  # what building the file logged
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for data in (invalid_date, ct_dicom(window=(40.0, 12345.0)).replace(b"12345.0 ", b"PLANTED!")):
            read_dicom(data)
            tags = header(data)
            assert [str(element.value) for element in tags.iterall()]
    assert not caught and not caplog.records


# -- options and the extra -------------------------------------------------------------------------


def test_options_are_validated_with_the_parameters_names():
    with pytest.raises(OptionError, match=r"^`dicom_frames` must be one of first, middle, all, got 'x'$"):
        DicomOptions(frames="x")
    for window in [(40,), (40, 0), (40, 0.5), ("40", "400"), (40, float("nan")), (True, 400), 40, "40,400"]:
        with pytest.raises(OptionError, match=r"^`dicom_window` must be"):
            DicomOptions(window=window)
    with pytest.raises(OptionError, match=r"^`allow_burned_in` must be True or False"):
        DicomOptions(allow_burned_in="yes")
    assert DicomOptions(window=[40, 400]).window == (40.0, 400.0)


def test_without_pydicom_detection_works_and_reading_names_the_extra(monkeypatch):
    data = ct_dicom()
    for name in [name for name in sys.modules if name == "pydicom" or name.startswith("pydicom.")]:
        monkeypatch.setitem(sys.modules, name, None)
    assert is_dicom(data)
    with pytest.raises(MissingExtraError, match=r"pip install 'fedimage\[dicom\]'") as raised:
        read_dicom(data)
    assert raised.value.extra == "dicom" and "\n" not in str(raised.value)
    with pytest.raises(MissingExtraError):
        header(data)


# -- the site folder helper ------------------------------------------------------------------------


def test_a_site_folder_reads_and_its_csv_joins(tmp_path):
    images = write_site(tmp_path / "alpha", "alpha", patients=3, images_per_patient=4, seed=1)
    assert len(images) == 12 and len({image.sop_instance_uid for image in images}) == 12
    assert {image.modality for image in images} == {"CT", "CR", "US"}
    assert any(image.finding is None for image in images) and any(image.finding for image in images)
    for image in images:
        data = image.path.read_bytes()
        tags = header(data)
        assert (tags.PatientID, tags.InstitutionName, tags.SOPInstanceUID) == (
            image.patient_id,
            "alpha",
            image.sop_instance_uid,
        )
        assert tags.get("SeriesDescription") == image.finding
        assert read_dicom(data).display.shape[:2] == (64, 64)
        assert image.patient_id not in image.relative
    rows = write_labels_csv(tmp_path / "labels.csv", images).read_text().splitlines()
    assert rows[0] == "path,patient,finding" and len(rows) == 1 + sum(bool(i.finding) for i in images)
    by_sop = write_labels_csv(tmp_path / "sop.csv", images, key="sop", include_unlabeled=True)
    assert by_sop.read_text().splitlines()[0] == "sop_instance_uid,finding"
    assert len(by_sop.read_text().splitlines()) == 13
    identifiers = site_identifiers(images)
    assert "PLANTED-alpha-P000" in identifiers and "alpha" not in identifiers
    other = write_site(
        tmp_path / "beta", "beta", patients=1, images_per_patient=1, seed=1, extensionless=True
    )
    assert other[0].path.suffix == "" and other[0].sop_instance_uid not in identifiers
