"""DICOM input: detect a DICOM file, read its header, and render one frame as 8-bit pixels.

Parsing and decoding are pydicom's (with the pylibjpeg plugins for JPEG, JPEG-LS, JPEG 2000 and
RLE), installed by the ``dicom`` extra; this module imports them only when a file is read, so
``import fedimage.imaging.dicom`` works without them and :func:`is_dicom` needs none of them.

A frame is rendered in DICOM's order (PS3.4 Annex N): the modality LUT (*Rescale Slope* and
*Rescale Intercept*, or a *Modality LUT Sequence*), then the VOI LUT (a window given in
:class:`DicomOptions`, else the file's first *VOI LUT Sequence* item, else its first *Window
Center* / *Window Width*, else the minimum and maximum of the frame's modality values),
*MONOCHROME1* inverted, YCbCr converted to RGB, and scaled to 8 bits. Enhanced (multi-frame)
objects' rescale and window are read from their shared and per-frame functional groups.

Every reason a file is rejected (:class:`~fedimage.imaging.rejection.ImageRejected`) is one of a
few fixed sentences: none quotes a value of the file's header, which may identify a patient, nor
passes on a message of pydicom's (they quote values). pydicom's warnings and log records are
silenced while a file is read for the same reason.

Example::

    data = Path("IM0001.dcm").read_bytes()
    if is_dicom(data):
        patient = header(data).get("PatientID")  # identifying: pseudonymize it
        for image in read_dicom_frames(data, options=DicomOptions(frames="all")):
            image.display  # uint8 [H, W] or [H, W, 3]
"""

from __future__ import annotations

import copy
import io
import logging
import math
import numbers
import os
import struct
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from fedimage.errors import MissingExtraError, OptionError
from fedimage.extras import require
from fedimage.imaging.rejection import ImageRejected, fixed_reason

if TYPE_CHECKING:
    from pydicom import Dataset

#: Frames of more pixels are rejected before they are decoded (Pillow's decompression-bomb threshold,
#: as :data:`fedimage.imaging.standardize.DEFAULT_MAX_PIXELS`).
DEFAULT_MAX_PIXELS = 89_478_485
#: ``first``: a multi-frame file gives its first frame; ``middle``: its middle one; ``all``: every one.
FRAME_MODES = ("first", "middle", "all")

NOT_DICOM = fixed_reason("not a readable DICOM file")
NO_PIXELS = fixed_reason("DICOM file has no pixel data")
FLOAT_PIXELS = fixed_reason("DICOM float pixel data is not supported")
UNDECODABLE = fixed_reason("DICOM pixel data is truncated or cannot be decoded")
BAD_MODALITY_LUT = fixed_reason("DICOM rescale or modality LUT cannot be applied")
BAD_PALETTE = fixed_reason("DICOM palette color lookup table cannot be applied")
BAD_WINDOW = fixed_reason("DICOM window cannot be applied to this image")
DEEP_YBR = fixed_reason("DICOM YCbCr pixel data of more than 8 bits is not supported")
BURNED_IN = fixed_reason(
    "DICOM file flags burned-in annotation (BurnedInAnnotation YES): text on the image may identify "
    "the patient; pass `allow_burned_in` to keep it"
)

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
#: Decoded samples that are RGB already (JPEG 2000's decoder reverses its colour transforms).
_RGB = ("RGB", "YBR_ICT", "YBR_RCT")
_YBR = ("YBR_FULL", "YBR_FULL_422")
_PALETTE = "PALETTE COLOR"
#: Every defined Photometric Interpretation: a name from this list may be quoted in a reason.
_KNOWN_PHOTOMETRIC = (
    *_MONOCHROME,
    *_RGB,
    *_YBR,
    _PALETTE,
    "YBR_PARTIAL_422",
    "YBR_PARTIAL_420",
    "HSV",
    "ARGB",
    "CMYK",
    "XYB",
)
_VOI_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")
#: Rendering attributes an enhanced object keeps in its functional groups, by functional group macro.
_FRAME_MACROS = {
    "PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept"),
    "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction"),
}
#: Attributes that render a grayscale frame (the rest of the header stays out of the view).
_RENDERING_KEYWORDS = (
    "PhotometricInterpretation",
    "BitsAllocated",
    "BitsStored",
    "PixelRepresentation",
    "RescaleSlope",
    "RescaleIntercept",
    "ModalityLUTSequence",
    "VOILUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
)

# Explicit VRs, and those with a 4-byte length after 2 reserved bytes (PS3.5 7.1.2).
_EXPLICIT_VRS = frozenset(
    b"AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ SS ST SV TM UC UI UL UN UR US "
    b"UT UV".split()
)
_LONG_VRS = frozenset(b"OB OD OF OL OV OW SQ UC UN UR UT SV UV".split())
_UNDEFINED_LENGTH = 0xFFFFFFFF
_ELEMENTS_CHECKED = 3
#: How much of a file :func:`header` reads from disk to check that it is DICOM.
_HEAD_BYTES = 1 << 16


@dataclass(frozen=True, slots=True)
class DicomOptions:
    """How DICOM files are read.

    ``frames``: which frames of a multi-frame file become images (:data:`FRAME_MODES`);
    ``window``: ``(center, width)`` in modality units (Hounsfield units for CT), used instead of
    the file's VOI LUT or window (its *VOI LUT Function* still applies); ``allow_burned_in``: keep
    files whose *Burned In Annotation* is ``YES`` (text on the pixels may identify the patient).

        DicomOptions(frames="all", window=(40, 400))  # every frame, CT soft-tissue window
    """

    frames: str = "first"
    window: tuple[float, float] | None = None
    allow_burned_in: bool = False

    def __post_init__(self) -> None:
        if self.frames not in FRAME_MODES:
            raise OptionError(f"`dicom_frames` must be one of {', '.join(FRAME_MODES)}, got {self.frames!r}")
        if self.window is not None:
            object.__setattr__(self, "window", _window_option(self.window))
        if not isinstance(self.allow_burned_in, bool):
            raise OptionError(f"`allow_burned_in` must be True or False, got {self.allow_burned_in!r}")


DEFAULT_OPTIONS = DicomOptions()


def _window_option(window: Any) -> tuple[float, float]:
    message = f"`dicom_window` must be (center, width): two numbers, width at least 1, got {window!r}"
    if isinstance(window, str | bytes) or not hasattr(window, "__len__") or len(window) != 2:
        raise OptionError(message)
    if not all(isinstance(value, numbers.Real) and not isinstance(value, bool) for value in window):
        raise OptionError(message)
    center, width = float(window[0]), float(window[1])
    if not (math.isfinite(center) and math.isfinite(width) and width >= 1):
        raise OptionError(message)
    return center, width


@dataclass(frozen=True, slots=True, eq=False)
class DicomImage:
    """One frame of a DICOM file: its stored values and their 8-bit rendering.

    ``display``: uint8, ``[H, W]`` for grayscale or ``[H, W, 3]`` RGB, rendered as the module
    docstring says. ``stored``: the frame's pixel values as decoded, before any LUT: uint8,
    uint16 or int16 (or wider) ``[H, W]``, or ``[H, W, 3]`` samples in ``photometric``;
    ``YBR_FULL_422`` is upsampled to full resolution (so reported as ``YBR_FULL``), JPEG 2000's
    ``YBR_ICT``/``YBR_RCT`` decode to ``RGB``, and ``PALETTE COLOR`` gives the indices.
    ``photometric``: the interpretation of ``stored``; ``bits_stored``: the file's *Bits Stored*.
    ``rescale_slope``/``rescale_intercept``: the rescale applied (1 and 0 when none; None when a
    Modality LUT Sequence was used instead, or for colour). ``window_center``/``window_width``:
    the window used; None when none was (``voi`` then says what was: ``"lut"`` for a VOI LUT
    Sequence, ``"minmax"``, or ``"none"`` for colour). ``frame`` of ``frame_count``.

        image = read_dicom(data)
        Image.fromarray(image.display).save("preview.png")
    """

    display: np.ndarray
    stored: np.ndarray
    photometric: str
    bits_stored: int
    rescale_slope: float | None
    rescale_intercept: float | None
    window_center: float | None
    window_width: float | None
    voi: str
    frame: int
    frame_count: int


def is_dicom(data: bytes) -> bool:
    """Whether ``data`` is a DICOM file: ``DICM`` at byte 128, or a dataset without the preamble.

    The first elements must parse as DICOM: after ``DICM``, file meta elements (group 0x0002,
    explicit VR); without the 128-byte preamble, a group 0x0002 or 0x0008 tag first, then
    ascending tags, valid explicit VRs (or implicit lengths) and even lengths that fit in the
    file. Needs no pydicom.

        is_dicom(Path("IM0001").read_bytes())  # True
        is_dicom(b"\\x89PNG\\r\\n\\x1a\\n...")  # False
    """
    if len(data) >= 132 and bytes(data[128:132]) == b"DICM":  # the file meta (group 0x0002) must follow
        return bytes(data[132:134]) == b"\x02\x00" and _elements_parse(data, explicit=True, start=132)
    if len(data) < 8:
        return False
    group = int.from_bytes(data[0:2], "little")
    if group not in (0x0002, 0x0008):
        return False
    explicit = bytes(data[4:6]) in _EXPLICIT_VRS
    if group == 0x0002 and not explicit:  # file meta is always explicit VR little endian
        return False
    return _elements_parse(data, explicit)


def _elements_parse(data: bytes, explicit: bool, start: int = 0) -> bool:
    """Whether the first few elements from ``start`` parse (file meta, or a preamble-less dataset)."""
    offset, previous, first_group = start, -1, int.from_bytes(data[start : start + 2], "little")
    for _ in range(_ELEMENTS_CHECKED):
        if offset == len(data):
            return previous >= 0
        if offset + 8 > len(data):
            return False
        group, element = struct.unpack_from("<HH", data, offset)
        if group != first_group:  # the file meta ended: the dataset may use another encoding
            return first_group == 0x0002 and group > first_group
        tag = group << 16 | element
        if tag <= previous:
            return False
        vr = bytes(data[offset + 4 : offset + 6])
        if explicit:
            if vr not in _EXPLICIT_VRS:
                return False
            if vr in _LONG_VRS:
                if offset + 12 > len(data) or bytes(data[offset + 6 : offset + 8]) != b"\0\0":
                    return False
                length = struct.unpack_from("<I", data, offset + 8)[0]
                offset += 12
            else:
                length = struct.unpack_from("<H", data, offset + 6)[0]
                offset += 8
        else:
            length = struct.unpack_from("<I", data, offset + 4)[0]
            offset += 8
        if length == _UNDEFINED_LENGTH:  # a sequence: its items are not followed here
            return not explicit or vr in (b"SQ", b"UN")
        if length % 2 or offset + length > len(data):
            return False
        offset += length
        previous = tag
    return True


def header(source: bytes | str | os.PathLike[str], tags: Iterable[str | int] | None = None) -> Dataset:
    """The file's header, read without its pixel data, for sources that take users or labels from
    tags: ``source`` is the file's bytes or its path (then only the header is read from disk);
    ``tags`` (keywords or tags) reads only those elements (and the group 0x0028 ones pydicom needs).

    Every value is converted while pydicom is silenced (:func:`quiet_pydicom`), so reading the
    returned dataset warns about no invalid value later. Raises
    :class:`~fedimage.imaging.rejection.ImageRejected` (``"not a readable DICOM file"``) when
    ``source`` is not DICOM; OSError when the path cannot be read.

        patient = header(Path("IM0001")).get("PatientID")
        header(data, tags=["PatientID", "SeriesDescription"])
    """
    with quiet_pydicom():
        ds = _read(source, pixels=False, tags=None if tags is None else list(tags))
        for _ in ds.iterall():  # convert every value now: pydicom warns, quoting it, on an invalid one
            pass
        for _ in ds.file_meta:
            pass
    return ds


def frame_count(data: bytes) -> int:
    """How many frames the file holds (*Number of Frames*, 1 when absent), read from its header only.

    frame_count(data)  # 3
    """
    with quiet_pydicom():
        return _frame_count(_read(data, pixels=False))


def frames_to_read(count: int, options: DicomOptions = DEFAULT_OPTIONS) -> list[int]:
    """The frame indices ``options.frames`` selects among ``count`` frames (the middle of 4 is 2).

    frames_to_read(5, DicomOptions(frames="middle"))  # [2]
    """
    if count < 1:
        return []
    if options.frames == "first":
        return [0]
    if options.frames == "middle":
        return [count // 2]
    return list(range(count))


def read_dicom(
    data: bytes,
    frame: int = 0,
    options: DicomOptions = DEFAULT_OPTIONS,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DicomImage:
    """Decode frame ``frame`` of a DICOM file and render it as 8 bits (see the module docstring).

    Raises :class:`~fedimage.imaging.rejection.ImageRejected` with one of this module's fixed
    reasons: not DICOM, no pixel data, an unsupported transfer syntax or photometric
    interpretation, burned-in annotation (unless ``options.allow_burned_in``), a frame out of
    range, a frame of more than ``max_pixels`` pixels, or pixel data that does not decode.

        image = read_dicom(data, options=DicomOptions(window=(40, 400)))
        image.display.shape, image.stored.dtype  # (512, 512) uint8, int16
    """
    return next(read_dicom_frames(data, [frame], options, max_pixels=max_pixels))


def read_dicom_frames(
    data: bytes,
    frames: Iterable[int] | None = None,
    options: DicomOptions = DEFAULT_OPTIONS,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    render: bool = True,
) -> Iterator[DicomImage]:
    """:func:`read_dicom` for several frames of one file, parsed once: ``frames`` (default: those
    ``options.frames`` selects), in order. Rejections are raised as the frames are reached.
    ``render=False`` skips the 8-bit rendering (``display`` is then empty, with no window or
    rescale found: a 16-bit store keeps ``stored`` only).

        middle = next(read_dicom_frames(data, options=DicomOptions(frames="middle")))
    """
    with quiet_pydicom():
        try:
            ds = _read(data, pixels=True)
        except ImageRejected:
            ds = None
        if ds is None:
            _read(data, pixels=False)  # not DICOM, unless the header reads without the pixel data
            raise ImageRejected(UNDECODABLE)
        wanted = frames_to_read(_frame_count(ds), options) if frames is None else frames
    for frame in wanted:
        with quiet_pydicom():  # not held across a yield: it changes process-wide warning and log state
            count = _check(ds, frame, options, max_pixels)
            stored, photometric = _decode(ds, frame)
            if render:
                image = _render(ds, stored, photometric, frame, count, options)
            else:
                bits = int(ds.get("BitsStored") or stored.dtype.itemsize * 8)
                image = DicomImage(
                    display=np.zeros((0, 0), dtype=np.uint8),
                    stored=stored,
                    photometric=photometric,
                    bits_stored=bits,
                    rescale_slope=None,
                    rescale_intercept=None,
                    window_center=None,
                    window_width=None,
                    voi="none",
                    frame=frame,
                    frame_count=count,
                )
        yield image


def require_pydicom(module: str = "pydicom") -> ModuleType:
    """Import a pydicom module, or raise :class:`~fedimage.errors.MissingExtraError` naming the
    ``dicom`` extra (one line: ``pip install 'fedimage[dicom]'``).

        datadict = require_pydicom("pydicom.datadict")
    """
    try:
        return require(module, "DICOM input")
    except MissingExtraError as error:
        if error.extra == "dicom":
            raise
        raise MissingExtraError(
            f"DICOM input needs {module.split('.')[0]!r}, which is not installed: "
            "pip install 'fedimage[dicom]'",
            extra="dicom",
        ) from error.__cause__


@contextmanager
def quiet_pydicom() -> Iterator[None]:
    """Silence pydicom's warnings and log records (its decoders log errors) in this block: they
    quote header values. Process-wide while it lasts (not thread-safe); hold it across no yield.

        with quiet_pydicom():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
    """
    loggers = [
        logger
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger) and (name == "pydicom" or name.startswith("pydicom."))
    ]
    disabled = [logger.disabled for logger in loggers]
    for logger in loggers:
        logger.disabled = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, was in zip(loggers, disabled, strict=True):
            logger.disabled = was


def _read(source: Any, *, pixels: bool, tags: list[str | int] | None = None) -> Dataset:
    """Read a DICOM file (bytes or a path) with pydicom, or reject it as not DICOM."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
        readable: Any = source
    else:
        head, readable = source, io.BytesIO(source)
    if not is_dicom(head):
        raise ImageRejected(NOT_DICOM)
    pydicom = require_pydicom()
    try:
        ds = pydicom.dcmread(readable, force=True, stop_before_pixels=not pixels, specific_tags=tags)
        if len(ds) == 0 and not tags:
            raise ValueError("empty dataset")
        _set_transfer_syntax(ds)
    except Exception:  # pydicom raises many types, with messages that may quote values
        raise ImageRejected(NOT_DICOM) from None
    return ds


def _set_transfer_syntax(ds: Dataset) -> None:
    """Give a dataset read without file meta the transfer syntax it was read with."""
    uid = require_pydicom("pydicom.uid")
    if "TransferSyntaxUID" in getattr(ds, "file_meta", {}):
        return
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        raise ValueError("unknown encoding")
    if not hasattr(ds, "file_meta"):
        ds.file_meta = require_pydicom("pydicom.dataset").FileMetaDataset()
    if implicit:
        ds.file_meta.TransferSyntaxUID = uid.ImplicitVRLittleEndian
    else:
        ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian if little else uid.ExplicitVRBigEndian


def _frame_count(ds: Dataset) -> int:
    try:
        count = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return 1
    return max(count, 1)


def _check(ds: Dataset, frame: int, options: DicomOptions, max_pixels: int) -> int:
    """Reject what cannot or must not be decoded; the frame count."""
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            raise ImageRejected(FLOAT_PIXELS)
        raise ImageRejected(NO_PIXELS)
    _check_transfer_syntax(ds.file_meta.TransferSyntaxUID)
    if not options.allow_burned_in and str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES":
        raise ImageRejected(BURNED_IN)
    count = _frame_count(ds)
    if not 0 <= frame < count:
        raise ImageRejected(f"DICOM frame {frame} is out of range ({count} frames)")
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
    except (AttributeError, TypeError, ValueError):
        raise ImageRejected(UNDECODABLE) from None
    if rows * columns > max_pixels:
        raise ImageRejected(f"DICOM frame has more than {max_pixels} pixels")
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if photometric not in (*_MONOCHROME, *_RGB, *_YBR, _PALETTE):
        name = photometric if photometric in _KNOWN_PHOTOMETRIC else "(unknown)"
        raise ImageRejected(f"DICOM photometric interpretation {name} is not supported")
    return count


def _check_transfer_syntax(uid: Any) -> None:
    pixels = require_pydicom("pydicom.pixels")
    try:
        name = uid.name if uid.is_transfer_syntax else "(unknown)"
    except Exception:
        name = "(unknown)"
    try:
        decoder = pixels.get_decoder(uid)
    except Exception:  # NotImplementedError: no decoder for this UID (or not a UID at all)
        raise ImageRejected(f"DICOM transfer syntax {name} is not supported") from None
    if not decoder.is_available:
        raise ImageRejected(
            f"DICOM transfer syntax {name} is not supported: no decoder for it is installed "
            "(pip install 'fedimage[dicom]')"
        )


def _decode(ds: Dataset, frame: int) -> tuple[np.ndarray, str]:
    """The frame's samples before any colour conversion, and their photometric interpretation."""
    pixels = require_pydicom("pydicom.pixels")
    decoder = pixels.get_decoder(ds.file_meta.TransferSyntaxUID)
    try:
        array, meta = decoder.as_array(
            ds, index=frame, validate=True, raw=True, **pixels.as_pixel_options(ds)
        )
    except Exception:  # any decoder's failure (its message may quote values)
        raise ImageRejected(UNDECODABLE) from None
    photometric = str(meta.get("photometric_interpretation", ds.PhotometricInterpretation)).upper()
    samples = 1 if photometric in (*_MONOCHROME, _PALETTE) else 3
    if array.ndim != (2 if samples == 1 else 3) or (samples == 3 and array.shape[2] != 3):
        raise ImageRejected(UNDECODABLE)
    return np.ascontiguousarray(array), photometric


def _render(
    ds: Dataset, stored: np.ndarray, photometric: str, frame: int, count: int, options: DicomOptions
) -> DicomImage:
    bits = int(ds.get("BitsStored") or stored.dtype.itemsize * 8)
    common = {"stored": stored, "photometric": photometric, "bits_stored": bits}
    common |= {"frame": frame, "frame_count": count}
    if photometric not in _MONOCHROME:
        display = _render_color(ds, stored, photometric, bits)
        return DicomImage(
            display=display,
            rescale_slope=None,
            rescale_intercept=None,
            window_center=None,
            window_width=None,
            voi="none",
            **common,
        )
    view = _frame_view(ds, frame)
    processing = require_pydicom("pydicom.pixels")
    try:
        modality = processing.apply_modality_lut(stored, view)
    except Exception:
        raise ImageRejected(BAD_MODALITY_LUT) from None
    slope, intercept = _rescale(view)
    unit, center, width, voi = _voi(modality, view, options)
    display = _to_uint8(unit)
    if photometric == "MONOCHROME1":
        display = 255 - display
    return DicomImage(
        display=display,
        rescale_slope=slope,
        rescale_intercept=intercept,
        window_center=center,
        window_width=width,
        voi=voi,
        **common,
    )


def _render_color(ds: Dataset, stored: np.ndarray, photometric: str, bits: int) -> np.ndarray:
    processing = require_pydicom("pydicom.pixels")
    if photometric == _PALETTE:
        try:
            rgb = processing.apply_color_lut(stored, ds)
        except Exception:
            raise ImageRejected(BAD_PALETTE) from None
        return rgb if rgb.dtype == np.uint8 else _to_uint8(rgb / float(np.iinfo(rgb.dtype).max))
    if photometric in _YBR:
        if stored.dtype.itemsize > 1 or bits > 8:
            raise ImageRejected(DEEP_YBR)
        return processing.convert_color_space(stored, "YBR_FULL", "RGB")
    if stored.dtype == np.uint8 and bits == 8:
        return stored.copy()
    return _to_uint8(stored / float(2**bits - 1))


def _frame_view(ds: Dataset, frame: int) -> Dataset:
    """The attributes that render ``frame``: the top level's, then the shared and the frame's
    functional groups' (enhanced objects keep rescale and window there)."""
    dataset = require_pydicom("pydicom.dataset")
    view = dataset.Dataset()
    view.file_meta = ds.file_meta  # the endianness of OW LUT data
    view.set_original_encoding(*ds.original_encoding)
    for keyword in _RENDERING_KEYWORDS:
        if keyword in ds:
            view.add(copy.copy(ds[keyword]))
    for groups, index in (("SharedFunctionalGroupsSequence", 0), ("PerFrameFunctionalGroupsSequence", frame)):
        try:
            item = ds[groups].value[index]
        except (KeyError, IndexError, TypeError):
            continue
        for macro, keywords in _FRAME_MACROS.items():
            try:
                inner = item[macro].value[0]
            except (KeyError, IndexError, TypeError):
                continue
            for keyword in keywords:
                if keyword in inner:
                    view.add(copy.copy(inner[keyword]))
    return view


def _rescale(view: Dataset) -> tuple[float | None, float | None]:
    """The rescale :func:`pydicom.pixels.apply_modality_lut` applied (None, None for a LUT)."""
    if view.get("ModalityLUTSequence"):
        return None, None
    if "RescaleSlope" in view and "RescaleIntercept" in view:
        return float(view.RescaleSlope), float(view.RescaleIntercept)
    return 1.0, 0.0


def _voi(
    modality: np.ndarray, view: Dataset, options: DicomOptions
) -> tuple[np.ndarray, float | None, float | None, str]:
    """The VOI stage, as values in [0, 1]: the window, center and width used, and which stage ran."""
    processing = require_pydicom("pydicom.pixels")
    function = str(view.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function not in _VOI_FUNCTIONS:
        function = "LINEAR"
    window = options.window
    if window is None and _has_voi_lut(view):
        try:
            item = view.VOILUTSequence[0]
            depth = int(item.LUTDescriptor[2])
            return processing.apply_voi(modality, view, 0) / float(2**depth - 1), None, None, "lut"
        except Exception:  # a broken LUT: fall back to the window, else min-max
            pass
    if window is None:
        window = _file_window(view, function)
    if window is not None:
        center, width = window
        view.WindowCenter, view.WindowWidth, view.VOILUTFunction = center, width, function
        try:
            low, high = _window_range(view)
            windowed = np.asarray(processing.apply_windowing(modality, view), dtype=np.float64)
            if not windowed.flags.writeable or windowed is modality:
                windowed = windowed.copy()
            windowed -= low
            windowed /= high - low
            return windowed, center, width, "window"
        except Exception:
            if options.window is not None:
                raise ImageRejected(BAD_WINDOW) from None
    values = np.asarray(modality, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    unit = (values - low) / (high - low) if high > low else np.zeros_like(values)
    return unit, None, None, "minmax"


def _has_voi_lut(view: Dataset) -> bool:
    try:
        item = view.VOILUTSequence[0]
        return item.get("LUTDescriptor") is not None and item.get("LUTData") is not None
    except (AttributeError, IndexError, TypeError):
        return False


def _file_window(view: Dataset, function: str) -> tuple[float, float] | None:
    """The file's first window, or None when it has none or an invalid one."""
    try:
        values = []
        for keyword in ("WindowCenter", "WindowWidth"):
            element = view[keyword]
            value = element.value[0] if element.VM > 1 else element.value
            values.append(float(value))
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    center, width = values
    smallest_ok = 1.0 if function == "LINEAR" else math.ulp(0.0)
    if not (math.isfinite(center) and math.isfinite(width) and width >= smallest_ok):
        return None
    return center, width


def _window_range(view: Dataset) -> tuple[float, float]:
    """The output range of :func:`pydicom.pixels.apply_windowing` for ``view`` (PS3.3 C.11.2.1.2)."""
    if view.get("ModalityLUTSequence"):
        low, high = 0.0, float(2 ** int(view.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    elif int(view.PixelRepresentation) == 0:
        low, high = 0.0, float(2 ** int(view.BitsStored) - 1)
    else:
        low, high = float(-(2 ** (int(view.BitsStored) - 1))), float(2 ** (int(view.BitsStored) - 1) - 1)
    slope, intercept = view.get("RescaleSlope"), view.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    if high == low:
        raise ValueError("empty output range")
    return low, high


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    """Values in [0, 1] as uint8 0..255 (rounded, clipped), computed in place on one float64 copy."""
    scaled = np.multiply(np.asarray(unit, dtype=np.float64), 255.0)
    np.rint(scaled, out=scaled)
    np.clip(scaled, 0, 255, out=scaled)
    return scaled.astype(np.uint8)


#: What a 16-bit lossless store keeps of each DICOM file so its stored values convert back to modality
#: units (``value * rescale_slope + rescale_intercept``: Hounsfield units for CT) and display as the
#: file meant (the window); each a float, missing for an image that is not DICOM.
DICOM_FIELDS: dict[str, str] = {
    "rescale_slope": "float",
    "rescale_intercept": "float",
    "window_center": "float",
    "window_width": "float",
}
#: What a signed stored value is shifted by in a 16-bit store (uint16 holds int16 + 32768).
SIGNED_SHIFT = 32768


def read_dicom_fields(
    image: str | bytes, fields: Sequence[str], window: tuple[float, float] | None = None
) -> tuple[float | None, ...]:
    """The values of ``fields`` (names of :data:`DICOM_FIELDS`) for a file stored at 16 bits: its
    rescale slope (1 when absent) and intercept (0 when absent; minus ``SIGNED_SHIFT * slope`` for
    signed pixel data, whose stored values are shifted), and the window (``window``, else the file's
    first). Not DICOM, or unreadable: all None.

        slope, intercept = read_dicom_fields("CT0001.dcm", ("rescale_slope", "rescale_intercept"))
    """
    if not fields:
        return ()
    try:
        ds = header(
            image,
            tags=["RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth", "PixelRepresentation"],
        )
    except (ImageRejected, OSError, MissingExtraError):
        return (None,) * len(fields)
    slope = _first_number(ds.get("RescaleSlope"), 1.0)
    intercept = _first_number(ds.get("RescaleIntercept"), 0.0)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        intercept -= SIGNED_SHIFT * slope
    center, width = (
        window
        if window is not None
        else (_first_number(ds.get("WindowCenter"), None), _first_number(ds.get("WindowWidth"), None))
    )
    values = {
        "rescale_slope": slope,
        "rescale_intercept": intercept,
        "window_center": center,
        "window_width": width,
    }
    return tuple(values[name] for name in fields)


def _first_number(value: Any, default: float | None) -> float | None:
    if value is None or value == "":
        return default
    single = isinstance(value, str | bytes) or not hasattr(value, "__iter__")
    items = [value] if single else list(value)
    try:
        number = float(items[0]) if items else default
    except (TypeError, ValueError):
        return default
    return number if number is None or math.isfinite(number) else default
