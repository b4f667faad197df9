"""Synthetic DICOM files for tests, written with pydicom, with identifiers planted in them.

Every file carries a distinctive value in each identifying element of the confidentiality profile
that applies to it (patient, institution, physicians, operator, station, accession number, study
ID, dates and times, instance UIDs, device serial number) and in a private block of an odd group:
:data:`PLANTED` lists those strings, so a test can check that none reaches a store, an export, a
log or a rejection reason. The UIDs all start with :data:`UID_ROOT`, which is planted too.

Builders return the file's bytes (64x64 pixels unless told otherwise); the ``*_pixels`` functions
return the stored values a builder writes by default, to compare decoded frames with.
:func:`write_site` writes a small multi-patient folder and :func:`write_labels_csv` a label table
for it.
"""

from __future__ import annotations

import csv
import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
)

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
US_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"

#: Every UID of these files starts with this root (2.25: a UUID-derived root, made up here).
UID_ROOT = "2.25.424242424242"
#: The identifying elements every builder fills, and their values.
PLANTED_ELEMENTS: dict[str, str] = {
    "PatientName": "PLANTEDNAME^ZEBULON^Q",
    "PatientID": "PLANTED-PID-7730419",
    "PatientBirthDate": "19230417",
    "PatientAddress": "PLANTED 12 Elm Street Springfield",
    "OtherPatientIDs": "PLANTED-OPID-5521",
    "InstitutionName": "PLANTED Saint Quimby Hospital",
    "InstitutionAddress": "PLANTED 1 Hospital Road Shelbyville",
    "ReferringPhysicianName": "PLANTEDREFERRER^ALMA",
    "PerformingPhysicianName": "PLANTEDPERFORMER^BORIS",
    "OperatorsName": "PLANTEDOPERATOR^CLEO",
    "StationName": "PLANTEDSTATION7",
    "AccessionNumber": "PLACC90817263",
    "StudyID": "PLSTUDY4471",
    "StudyDescription": "PLANTED study of Zebulon",
    "StudyDate": "19870314",
    "SeriesDate": "19870315",
    "AcquisitionDate": "19870316",
    "ContentDate": "19870317",
    "StudyTime": "101112.123456",
    "SeriesTime": "101113.234567",
    "AcquisitionDateTime": "19870316101114.345678",
    "DeviceSerialNumber": "PLANTED-SN-90210",
}
#: The private block planted in every file: (group, creator, element offset, VR, value).
PRIVATE_GROUP = 0x0009
PRIVATE_CREATOR = "PLANTED PRIVATE CREATOR"
PRIVATE_VALUE = "PLANTED-PRIVATE-VALUE-31337"
#: Strings that must never appear in anything derived from these files.
PLANTED: list[str] = [*PLANTED_ELEMENTS.values(), PRIVATE_CREATOR, PRIVATE_VALUE, UID_ROOT]
#: The planted UID elements (their values start with UID_ROOT).
PLANTED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
#: Finding labels that write_site puts in SeriesDescription.
FINDINGS = ("normal", "pneumonia", "effusion")


def uid(*parts: int) -> str:
    """A UID under :data:`UID_ROOT`."""
    return ".".join([UID_ROOT, *(str(part) for part in parts)])


def new_dataset(
    sop_class: str = CT_STORAGE,
    modality: str = "CT",
    *,
    serial: int | tuple[int, ...] = 1,
    identifiers: dict[str, str] | None = None,
) -> Dataset:
    """A dataset with file meta, every planted identifier, a private block, and no pixels.

    ``serial`` (numbers) makes the instance UIDs unique; ``identifiers`` overrides planted values.
    """
    parts = serial if isinstance(serial, tuple) else (serial,)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.Modality = modality
    ds.BodyPartExamined = "CHEST"
    ds.PatientSex = "O"
    for keyword, value in {**PLANTED_ELEMENTS, **(identifiers or {})}.items():
        setattr(ds, keyword, value)
    ds.StudyInstanceUID = uid(1, *parts)
    ds.SeriesInstanceUID = uid(2, *parts)
    ds.SOPInstanceUID = uid(3, *parts)
    ds.FrameOfReferenceUID = uid(4, *parts)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    block = ds.private_block(PRIVATE_GROUP, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", PRIVATE_VALUE)
    return ds


def to_bytes(ds: Dataset, *, preamble: bool = True) -> bytes:
    """The dataset as a DICOM file (Part 10, with preamble and file meta), or as a bare dataset
    (no preamble, no file meta, in its transfer syntax's encoding) when ``preamble`` is False."""
    buffer = io.BytesIO()
    if preamble:
        ds.save_as(buffer, enforce_file_format=True)
    else:
        syntax = ds.file_meta.TransferSyntaxUID
        bare = Dataset()  # the elements without the file meta
        bare.update(ds)
        pydicom.dcmwrite(
            buffer, bare, enforce_file_format=False, implicit_vr=syntax.is_implicit_VR, little_endian=True
        )
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` (parents created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def ct_pixels(rows: int = 64, columns: int = 64, *, signed: bool = True, seed: int = 0) -> np.ndarray:
    """CT-like stored values, 12 bits: int16 in [-2048, 2047] or uint16 in [0, 4095], with a disc
    (soft tissue), a rim (bone) and noise, so every window shows something."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns]
    radius = np.hypot(y - rows / 2, x - columns / 2) / (min(rows, columns) / 2)
    hu = np.where(radius < 0.7, 40.0, -1000.0)
    hu = np.where((radius >= 0.7) & (radius < 0.85), 1200.0, hu)
    hu += rng.normal(0, 60, size=hu.shape) + 300 * np.sin(x / 5.0)
    stored = np.clip(np.rint(hu + (0 if signed else 1024)), *((-2048, 2047) if signed else (0, 4095)))
    return stored.astype(np.int16 if signed else np.uint16)


def ct_dicom(
    pixels: np.ndarray | None = None,
    *,
    signed: bool = True,
    slope: float | None = 1.0,
    intercept: float | None = None,
    window: tuple[float, float] | None = (40.0, 400.0),
    voi_function: str | None = None,
    voi_lut: bool = False,
    bits_stored: int = 12,
    serial: int = 1,
    transfer_syntax: str | None = None,
    preamble: bool = True,
    seed: int = 0,
) -> bytes:
    """A 16-bit CT slice (MONOCHROME2) with rescale and window.

    ``pixels``: the stored values (default :func:`ct_pixels`); ``intercept`` defaults to 0 for
    signed storage and -1024 for unsigned; ``slope`` or ``intercept`` None leaves that element out;
    ``window`` None leaves the window out; ``voi_lut`` adds a VOI LUT Sequence (a 256-entry ramp
    over [-160, 240] HU, 8 bits); ``transfer_syntax`` compresses (RLE, JPEG 2000).
    """
    if pixels is None:
        pixels = ct_pixels(signed=signed, seed=seed)
    ds = new_dataset(CT_STORAGE, "CT", serial=serial)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.set_pixel_data(pixels, "MONOCHROME2", bits_stored, generate_instance_uid=False)
    if intercept is None:
        intercept = 0.0 if pixels.dtype.kind == "i" else -1024.0
    if slope is not None:
        ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    ds.RescaleType = "HU"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    if voi_function is not None:
        ds.VOILUTFunction = voi_function
    if voi_lut:
        item = Dataset()
        item.LUTDescriptor = [256, -160, 8]
        item.LUTData = list(range(256))
        item["LUTDescriptor"].VR = "SS"
        item["LUTData"].VR = "US"
        ds.VOILUTSequence = Sequence([item])
    return _finish(ds, transfer_syntax, preamble)


def cr_pixels(rows: int = 64, columns: int = 64, *, seed: int = 1) -> np.ndarray:
    """Radiograph-like 10-bit stored values (uint16): a horizontal gradient plus noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(50, 1000, columns)[None, :].repeat(rows, axis=0)
    return np.clip(np.rint(ramp + rng.normal(0, 10, (rows, columns))), 0, 1023).astype(np.uint16)


def cr_monochrome1_dicom(
    pixels: np.ndarray | None = None, *, window: tuple[float, float] | None = None, serial: int = 2
) -> bytes:
    """A computed radiograph in MONOCHROME1 (high values dark), 10 bits stored, no rescale."""
    ds = new_dataset(CR_STORAGE, "CR", serial=serial)
    ds.set_pixel_data(
        cr_pixels() if pixels is None else pixels, "MONOCHROME1", 10, generate_instance_uid=False
    )
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    return _finish(ds, None, True)


def rgb_pixels(rows: int = 64, columns: int = 64, *, seed: int = 2) -> np.ndarray:
    """An ultrasound-like RGB frame (uint8): a gray fan with a coloured Doppler patch."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:columns]
    gray = np.clip(60 + 120 * np.sin(y / 6.0) ** 2 + rng.normal(0, 15, (rows, columns)), 0, 255)
    rgb = np.stack([gray, gray, gray], axis=-1)
    patch = (abs(y - rows / 2) < rows / 6) & (abs(x - columns / 2) < columns / 5)
    rgb[patch] = [200, 40, 30]
    rgb[patch & (x > columns / 2)] = [30, 60, 210]
    return rgb.astype(np.uint8)


def ultrasound_dicom(
    pixels: np.ndarray | None = None,
    *,
    photometric: str = "YBR_FULL",
    serial: int = 3,
    transfer_syntax: str | None = None,
) -> bytes:
    """An 8-bit colour ultrasound frame, stored as ``YBR_FULL`` (converted from :func:`rgb_pixels`
    with pydicom) or ``RGB``."""
    rgb = rgb_pixels() if pixels is None else pixels
    ds = new_dataset(US_STORAGE, "US", serial=serial)
    stored = convert_color_space(rgb, "RGB", "YBR_FULL") if photometric == "YBR_FULL" else rgb
    ds.set_pixel_data(stored, photometric, 8, generate_instance_uid=False)
    return _finish(ds, transfer_syntax, True)


def ultrasound_jpeg_dicom(pixels: np.ndarray | None = None, *, serial: int = 4, quality: int = 95) -> bytes:
    """A colour ultrasound frame as most scanners send it: JPEG Baseline, YBR_FULL_422 (the JPEG
    stream is Pillow's, 4:2:0 subsampled, encapsulated by pydicom)."""
    rgb = rgb_pixels() if pixels is None else pixels
    buffer = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buffer, "JPEG", quality=quality, subsampling=2)
    ds = new_dataset(US_STORAGE, "US", serial=serial)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.LossyImageCompression = "01"
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    return to_bytes(ds)


def palette_dicom(*, serial: int = 5) -> bytes:
    """An 8-bit PALETTE COLOR image with 16-bit lookup tables (red ramp, green inverse, blue 0)."""
    ds = new_dataset(SC_STORAGE, "OT", serial=serial)
    indices = (np.add.outer(np.arange(64), np.arange(64)) * 2).astype(np.uint8)
    ds.set_pixel_data(indices, "PALETTE COLOR", 8, generate_instance_uid=False)
    ramp = np.arange(256, dtype=np.uint16) * 257
    for color, table in (("Red", ramp), ("Green", 65535 - ramp), ("Blue", np.zeros(256, np.uint16))):
        setattr(ds, f"{color}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{color}PaletteColorLookupTableData", table.astype("<u2").tobytes())
    return to_bytes(ds)


def compressed(data: bytes, transfer_syntax: str) -> bytes:
    """``data`` re-encoded in ``transfer_syntax`` by pydicom (RLE Lossless: pydicom's own or
    pylibjpeg-rle's encoder; JPEG 2000 Lossless: pylibjpeg-openjpeg's, 32x32 pixels at least)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.compress(transfer_syntax, generate_instance_uid=False)
    return to_bytes(ds)


def rle_dicom() -> bytes:
    """:func:`ct_dicom` compressed with RLE Lossless."""
    return compressed(ct_dicom(), RLELossless)


def j2k_dicom() -> bytes:
    """:func:`ct_dicom` compressed with JPEG 2000 Lossless (raises RuntimeError when no encoder)."""
    return compressed(ct_dicom(), JPEG2000Lossless)


def multiframe_pixels(frames: int = 3, rows: int = 64, columns: int = 64) -> np.ndarray:
    """``frames`` int16 frames; frame k is :func:`ct_pixels` (seed k) plus 100 * k."""
    return np.stack([ct_pixels(rows, columns, seed=k) + 100 * k for k in range(frames)]).astype(np.int16)


def multiframe_dicom(
    frames: int = 3,
    *,
    functional_groups: bool = False,
    serial: int = 6,
    transfer_syntax: str | None = None,
) -> bytes:
    """A multi-frame CT (:func:`multiframe_pixels`), its rescale and window at the top level or,
    with ``functional_groups``, as an enhanced CT keeps them: a shared rescale (intercept -1000)
    and a window per frame (center 40 + 100 * k, width 400 + 100 * k)."""
    pixels = multiframe_pixels(frames)
    ds = new_dataset(ENHANCED_CT_STORAGE if functional_groups else CT_STORAGE, "CT", serial=serial)
    ds.set_pixel_data(pixels, "MONOCHROME2", 12, generate_instance_uid=False)
    if not functional_groups:
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1000.0
        ds.WindowCenter, ds.WindowWidth = 40.0, 400.0
        return _finish(ds, transfer_syntax, True)
    transform = Dataset()
    transform.RescaleSlope, transform.RescaleIntercept, transform.RescaleType = 1.0, -1000.0, "HU"
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in range(frames):
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = 40.0 + 100 * k, 400.0 + 100 * k
        item = Dataset()
        item.FrameVOILUTSequence = Sequence([voi])
        per_frame.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    return _finish(ds, transfer_syntax, True)


def truncated_dicom(keep: float = 0.5) -> bytes:
    """:func:`ct_dicom` with its pixel data cut to ``keep`` of its length (the header is whole)."""
    data = ct_dicom()
    pixel_bytes = 64 * 64 * 2
    return data[: len(data) - pixel_bytes + int(pixel_bytes * keep)]


def no_pixels_dicom() -> bytes:
    """A CT header without Pixel Data (the image module's elements are there)."""
    ds = pydicom.dcmread(io.BytesIO(ct_dicom()))
    del ds.PixelData
    return to_bytes(ds)


def burned_in_dicom() -> bytes:
    """A secondary capture flagged *Burned In Annotation* YES."""
    ds = pydicom.dcmread(io.BytesIO(ct_dicom()))
    ds.BurnedInAnnotation = "YES"
    return to_bytes(ds)


def implicit_dicom(*, preamble: bool = True) -> bytes:
    """:func:`ct_dicom` in Implicit VR Little Endian; without preamble and file meta when told."""
    ds = pydicom.dcmread(io.BytesIO(ct_dicom()))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return to_bytes(ds, preamble=preamble)


@dataclass(frozen=True)
class SiteImage:
    """One file of :func:`write_site`: where it is and what its tags say."""

    path: Path
    relative: str  # posix path under the site folder
    patient_id: str
    patient_name: str
    finding: str | None  # in SeriesDescription; None: no SeriesDescription
    modality: str
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str


def write_site(
    folder: Path,
    site_name: str,
    patients: int,
    images_per_patient: int,
    seed: int = 0,
    *,
    extensionless: bool = False,
) -> list[SiteImage]:
    """A site's DICOM folder: ``patients`` patients with ``images_per_patient`` files each.

    Every file has its patient's PatientID (``PLANTED-<site>-P<n>``) and PatientName, and
    InstitutionName = ``site_name``, besides the other planted identifiers; patient n's modality
    is CT (16-bit signed), CR (MONOCHROME1) or US (YBR_FULL colour) by n % 3. A finding from
    :data:`FINDINGS` is in SeriesDescription (BodyPartExamined is CHEST), except in about one file
    in four, which has none. Files lie in ``<folder>/study<n>/IM<k>.dcm`` (no ``.dcm`` with
    ``extensionless``): paths name no patient. Returns the files in the order written.
    """
    rng = np.random.default_rng(seed)
    images = []
    for patient in range(patients):
        patient_id = f"PLANTED-{site_name}-P{patient:03d}"
        patient_name = f"PLANTED^{site_name.upper()}^P{patient:03d}"
        modality = ("CT", "CR", "US")[patient % 3]
        for index in range(images_per_patient):
            serial = (zlib.crc32(site_name.encode()), seed, patient + 1, index + 1)
            finding = None if rng.random() < 0.25 else str(rng.choice(FINDINGS))
            data = _site_file(modality, serial, patient_id, patient_name, site_name, finding, rng)
            relative = f"study{patient:03d}/IM{index:04d}" + ("" if extensionless else ".dcm")
            path = write(folder / relative, data)
            images.append(
                SiteImage(
                    path=path,
                    relative=relative,
                    patient_id=patient_id,
                    patient_name=patient_name,
                    finding=finding,
                    modality=modality,
                    study_instance_uid=uid(1, *serial),
                    series_instance_uid=uid(2, *serial),
                    sop_instance_uid=uid(3, *serial),
                )
            )
    return images


def _site_file(
    modality: str,
    serial: tuple[int, ...],
    patient_id: str,
    patient_name: str,
    site_name: str,
    finding: str | None,
    rng: np.random.Generator,
) -> bytes:
    identifiers = {"PatientID": patient_id, "PatientName": patient_name, "InstitutionName": site_name}
    seed = int(rng.integers(1 << 30))
    if modality == "CT":
        ds = new_dataset(CT_STORAGE, "CT", serial=serial, identifiers=identifiers)
        ds.set_pixel_data(ct_pixels(seed=seed), "MONOCHROME2", 12, generate_instance_uid=False)
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, 0.0
        ds.WindowCenter, ds.WindowWidth = 40.0, 400.0
    elif modality == "CR":
        ds = new_dataset(CR_STORAGE, "CR", serial=serial, identifiers=identifiers)
        ds.set_pixel_data(cr_pixels(seed=seed), "MONOCHROME1", 10, generate_instance_uid=False)
    else:
        ds = new_dataset(US_STORAGE, "US", serial=serial, identifiers=identifiers)
        ybr = convert_color_space(rgb_pixels(seed=seed), "RGB", "YBR_FULL")
        ds.set_pixel_data(ybr, "YBR_FULL", 8, generate_instance_uid=False)
    if finding is not None:
        ds.SeriesDescription = finding
    return to_bytes(ds)


def site_identifiers(images: list[SiteImage]) -> list[str]:
    """The per-file identifiers of :func:`write_site`'s files (patient IDs and names, instance
    UIDs), to scan output for besides :data:`PLANTED`. The site name is left out: it is
    InstitutionName, but a federation may name its sites."""
    values: set[str] = set()
    for image in images:
        values |= {image.patient_id, image.patient_name, image.sop_instance_uid}
        values |= {image.study_instance_uid, image.series_instance_uid}
    return sorted(values)


def write_labels_csv(
    path: Path, images: list[SiteImage], *, key: str = "path", include_unlabeled: bool = False
) -> Path:
    """A label table for :func:`write_site`'s files.

    ``key="path"``: columns ``path,patient,finding`` (path relative to the site folder, patient
    its PatientID); ``key="sop"``: columns ``sop_instance_uid,finding``. Files without a finding
    are left out, or given an empty finding with ``include_unlabeled``.
    """
    if key not in ("path", "sop"):
        raise ValueError(f"key must be 'path' or 'sop', got {key!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "patient", "finding"] if key == "path" else ["sop_instance_uid", "finding"])
        for image in images:
            if image.finding is None and not include_unlabeled:
                continue
            finding = image.finding or ""
            if key == "path":
                writer.writerow([image.relative, image.patient_id, finding])
            else:
                writer.writerow([image.sop_instance_uid, finding])
    return path


def _finish(ds: Dataset, transfer_syntax: str | None, preamble: bool) -> bytes:
    if transfer_syntax is not None:
        ds.compress(transfer_syntax, generate_instance_uid=False)
    return to_bytes(ds, preamble=preamble)
