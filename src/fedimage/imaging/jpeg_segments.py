"""Reading and rewriting JPEG marker segments without decoding the image.

Used to store JPEGs that already have the target size byte for byte (no
re-encoding loss) while dropping every metadata segment (EXIF, XMP, ICC,
comments, thumbnails).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
SOS = 0xDA
SOF_BASELINE = 0xC0
# Start-of-frame markers (C4 = DHT, C8 = JPG extension and CC = DAC are not frames).
SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Segments that define how the image decodes; everything else before SOS is metadata.
DECODING_SEGMENTS = frozenset({0xDB, 0xC4, 0xDD, SOF_BASELINE})
ADOBE_APP14 = 0xEE
APP0, APP15, COM = 0xE0, 0xEF, 0xFE
# Segments a sequential JPEG may carry between its scans (DQT, DHT, DRI, DNL); the rest is metadata.
BETWEEN_SCANS = frozenset({0xDB, 0xC4, 0xDD, 0xDC})
# In entropy-coded data 0xFF is followed by 0x00 (stuffing), RSTn or more 0xFF (fill): anything else
# is the marker that ends the scan.
_ENTROPY_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # no "\xff+": that defeats re's fast scan
_MARKER = re.compile(rb"\xff+[^\x00\xff]")
EXIF_APP1 = 0xE1
# Component ids that make libjpeg read a 3-channel JPEG as RGB instead of YCbCr.
RGB_COMPONENT_IDS = (ord("R"), ord("G"), ord("B"))

# A minimal JFIF 1.01 header: 1:1 aspect ratio, no thumbnail.
JFIF_APP0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


class JpegFormatError(ValueError):
    """The bytes are not a well-formed JPEG stream."""


@dataclass(frozen=True, slots=True)
class JpegInfo:
    """What the header of a JPEG says, read without decoding."""

    width: int
    height: int
    components: int
    precision: int
    frame_marker: int
    component_ids: tuple[int, ...]
    adobe_transform: int | None
    exif_orientation: int | None
    #: (marker, start, end) of each segment up to the first scan: :func:`strip_metadata` reuses them.
    segments: tuple[tuple[int, int, int], ...] = field(default=(), repr=False, compare=False)

    @property
    def is_baseline(self) -> bool:
        return self.frame_marker == SOF_BASELINE and self.precision == 8

    @property
    def decodes_as_ycbcr_or_gray(self) -> bool:
        """True when any decoder reads the colors the same way without APPn markers."""
        if self.components == 1:
            return True
        if self.components != 3:
            return False
        if self.adobe_transform is not None:
            return self.adobe_transform == 1
        return self.component_ids != RGB_COMPONENT_IDS


def _segments(data: bytes):
    """Yield (marker, start, end) of each segment up to and including the first SOS."""
    if not data.startswith(SOI):
        raise JpegFormatError("missing JPEG start-of-image marker")
    pos = 2
    size = len(data)
    while pos < size:
        if data[pos] != 0xFF:
            raise JpegFormatError(f"expected a marker at byte {pos}")
        while pos < size and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= size:
            break
        marker = data[pos]
        pos += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # TEM, RSTn: no length
            continue
        if pos + 2 > size:
            raise JpegFormatError("truncated marker segment")
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        end = pos + length
        if length < 2 or end > size:
            raise JpegFormatError(f"segment 0xFF{marker:02X} runs past the end of the file")
        yield marker, pos - 2, end
        if marker == SOS:
            return
        pos = end
    raise JpegFormatError("no start-of-scan marker")


def _exif_orientation(payload: bytes) -> int | None:
    """Orientation tag (0x0112) of an EXIF APP1 payload, or None."""
    if not payload.startswith(b"Exif\x00\x00") or len(payload) < 14:
        return None
    tiff = payload[6:]
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None:
        return None
    try:
        (ifd_offset,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[ifd_offset : ifd_offset + 2])
        for index in range(count):
            entry = ifd_offset + 2 + 12 * index
            tag, _type, _count = struct.unpack(order + "HHI", tiff[entry : entry + 8])
            if tag == 0x0112:
                (value,) = struct.unpack(order + "H", tiff[entry + 8 : entry + 10])
                return value
    except struct.error:
        return None
    return None


def read_jpeg_info(data: bytes) -> JpegInfo:
    """Parse the header segments of a JPEG stream."""
    frame = None
    adobe_transform = None
    orientation = None
    segments = tuple(_segments(data))
    for marker, start, end in segments:
        payload = data[start + 4 : end]
        if marker in SOF_MARKERS:
            if len(payload) < 6:
                raise JpegFormatError("truncated start-of-frame segment")
            precision, height, width, ncomp = struct.unpack(">BHHB", payload[:6])
            ids = tuple(payload[6 + 3 * i] for i in range(ncomp) if 6 + 3 * i < len(payload))
            frame = (marker, precision, width, height, ncomp, ids)
        elif marker == ADOBE_APP14 and payload.startswith(b"Adobe") and len(payload) >= 12:
            adobe_transform = payload[11]
        elif marker == EXIF_APP1 and orientation is None:
            orientation = _exif_orientation(payload)
    if frame is None:
        raise JpegFormatError("no start-of-frame segment before the scan")
    marker, precision, width, height, ncomp, ids = frame
    return JpegInfo(
        width=width,
        height=height,
        components=ncomp,
        precision=precision,
        frame_marker=marker,
        component_ids=ids,
        adobe_transform=adobe_transform,
        exif_orientation=orientation,
        segments=segments,
    )


def strip_metadata(data: bytes, info: JpegInfo | None = None) -> bytes:
    """The same compressed image with only decoding segments and a plain JFIF header.

    Drops APPn (EXIF, XMP, ICC, Adobe, thumbnails) and COM segments wherever they are, before
    the first scan or between scans, and everything after the image's end-of-image marker
    (a second image appended by cameras, MPO frames, trailers). The entropy-coded data is
    copied unchanged. Only valid for streams where :attr:`JpegInfo.decodes_as_ycbcr_or_gray` holds.
    ``info``: the stream's :func:`read_jpeg_info`, whose segments are then not parsed again.
    """
    parts = [SOI, JFIF_APP0]
    scan_start = None
    for marker, start, end in info.segments if info is not None and info.segments else _segments(data):
        if marker == SOS:
            scan_start = start
        elif marker in DECODING_SEGMENTS:
            parts.append(data[start:end])
    if scan_start is None:  # _segments raises when there is no SOS
        raise JpegFormatError("no start-of-scan marker")
    parts.extend(_scans(data, scan_start))
    return b"".join(parts)


def _scans(data: bytes, sos: int) -> list[bytes]:
    """From the first SOS to the end-of-image marker: scans and decoding segments, metadata dropped."""
    parts: list[bytes] = []
    at, marker = sos, SOS
    while marker != EOI[1]:
        if at + 4 > len(data):
            raise JpegFormatError("truncated marker segment after the first scan")
        (length,) = struct.unpack(">H", data[at + 2 : at + 4])
        end = at + 2 + length
        if length < 2 or end > len(data):
            raise JpegFormatError(f"segment 0xFF{marker:02X} runs past the end of the file")
        if marker == SOS:  # the header, then entropy-coded data up to the next marker
            found = _ENTROPY_END.search(data, end)
            if found is None:
                raise JpegFormatError("no end-of-image marker after the scan")
            parts.append(data[at : found.start()].rstrip(b"\xff"))  # fill bytes: never data
            at, marker = found.end() - 2, data[found.end() - 1]
            continue
        if marker in BETWEEN_SCANS:
            parts.append(data[at:end])
        elif not (APP0 <= marker <= APP15 or marker == COM):  # metadata is skipped, anything else is wrong
            raise JpegFormatError(f"unexpected marker 0xFF{marker:02X} after the first scan")
        found = _MARKER.match(data, end)
        if found is None:
            raise JpegFormatError(f"expected a marker at byte {end}")
        at, marker = found.end() - 2, data[found.end() - 1]
    parts.append(EOI)
    return parts
