"""Source metadata (GPS EXIF, XMP, ICC profiles, comments, text chunks) never reaches a store or an export."""

from __future__ import annotations

import io
import json
from pathlib import Path

import h5py
import pytest
import simplejpeg
from helpers import GPS_EXIF_TAG, fast_options, photo, save_image
from PIL import Image, PngImagePlugin

import fedimage
from fedimage import ImageOptions, convert, open_source
from fedimage.exports import ExportOptions, export
from fedimage.imaging.jpeg_segments import DECODING_SEGMENTS, SOS, _segments, read_jpeg_info, strip_metadata

SIZE = 64
# Every planted value carries "Canary", so one byte search finds any of them in any file.
CANARY = b"Canary"
GPS_DATUM = "CanaryGPSDatum"  # GPSMapDatum, an ASCII tag of the GPS IFD
XMP = (
    b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
    b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="CanaryXmpCreator"/>'
    b"</rdf:RDF></x:xmpmeta>"
)
ICC = b"CanaryIccProfile" * 8
COMMENT = b"CanaryJpegComment"
METADATA_SIGNATURES = (
    b"Exif\x00\x00",
    b"http://ns.adobe.com/xap/1.0/",
    b"ICC_PROFILE",
    b"adobe:ns:meta",
    CANARY,
)


def exif() -> Image.Exif:
    data = Image.Exif()
    data[0x013B] = "CanaryArtist"
    data[0xA431] = "CanaryBodySerialNumber"
    data[GPS_EXIF_TAG] = {1: "N", 2: (48.0, 51.0, 24.0), 3: "E", 4: (2.0, 21.0, 3.0), 18: GPS_DATUM}
    return data


def jpeg_with_metadata(image: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90, exif=exif(), xmp=XMP, icc_profile=ICC, comment=COMMENT, **options)
    return buffer.getvalue()


def with_trailers(data: bytes) -> bytes:
    """A COM segment between the scan and EOI, and a second JPEG with EXIF appended (as MPO files do)."""
    comment = b"CanaryPostScanComment"
    segment = b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment
    trailer = io.BytesIO()
    thumbnail = Image.Exif()
    thumbnail[0xA431] = "CanaryTrailerSerial"
    photo(16, 16).save(trailer, "JPEG", exif=thumbnail)
    return data[:-2] + segment + data[-2:] + trailer.getvalue()


def plant(parent: Path) -> Path:
    """root/<user>/<image>: JPEGs to copy and to re-encode, PNG and WebP, each full of metadata."""
    root = parent / "planted"
    copied = with_trailers(jpeg_with_metadata(photo(SIZE, SIZE, seed=1)))
    (root / "anna").mkdir(parents=True)
    (root / "anna" / "copied.jpg").write_bytes(copied)
    (root / "anna" / "resized.jpg").write_bytes(with_trailers(jpeg_with_metadata(photo(120, 90, seed=2))))
    (root / "anna" / "progressive.jpg").write_bytes(
        jpeg_with_metadata(photo(SIZE, SIZE, seed=3), progressive=True)
    )
    text = PngImagePlugin.PngInfo()
    text.add_text("Author", "CanaryPngText")
    text.add_text("Comment", "CanaryPngCompressed" * 20, zip=True)
    text.add_itxt("XML:com.adobe.xmp", XMP.decode("ascii"), lang="en", tkey="CanaryTranslatedKey")
    save_image(root / "ben" / "text.png", photo(80, 70, seed=4), pnginfo=text, exif=exif(), icc_profile=ICC)
    save_image(root / "ben" / "chunks.webp", photo(SIZE, SIZE, seed=5), exif=exif(), xmp=XMP, icc_profile=ICC)
    for path in root.rglob("*.*"):  # the inputs really carry what the store must not
        assert CANARY in path.read_bytes(), path
    return root


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    return plant(tmp_path)


def stored_jpegs(path: Path) -> list[bytes]:
    with fedimage.open(path) as store:
        return [
            image
            for split in store.splits
            for user in store.users(split)
            for image in store.encoded_images(split, user)
        ]


def metadata_markers(jpeg: bytes) -> list[int]:
    """Markers of a JPEG's header segments that are neither decoding segments nor the JFIF APP0."""
    found = []
    for marker, start, end in _segments(jpeg):
        jfif = marker == 0xE0 and jpeg[start + 4 : start + 9] == b"JFIF\x00" and end - start == 18
        if marker not in DECODING_SEGMENTS and marker != SOS and not jfif:
            found.append(marker)
    return found


def all_bytes(path: Path) -> bytes:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return b"".join(p.read_bytes() for p in files)


def assert_clean(data: bytes, where: str) -> None:
    for signature in METADATA_SIGNATURES:
        assert signature not in data, f"{signature!r} found in {where}"


def convert_planted(root: Path, output: Path, storage: str = "jpeg") -> Path:
    options = ImageOptions(size=SIZE, storage=storage)
    report = convert(open_source(root, layout="user"), output, fast_options(image=options))
    assert report.rejected == 0 and report.written == 5
    return output


class TestStore:
    def test_jpeg_store_holds_no_source_metadata(self, planted: Path, tmp_path: Path):
        output = convert_planted(planted, tmp_path / "store.h5")
        assert_clean(output.read_bytes(), "the store file")
        images = stored_jpegs(output)
        assert len(images) == 5
        for image in images:
            assert metadata_markers(image) == []
            assert image.endswith(b"\xff\xd9") and image.count(b"\xff\xd8") == 1
            with Image.open(io.BytesIO(image)) as decoded:
                assert (
                    not decoded.getexif()
                    and not {"icc_profile", "xmp", "comment", "exif"} & decoded.info.keys()
                )

    def test_copied_jpeg_keeps_its_compressed_data(self, planted: Path, tmp_path: Path):
        source = (planted / "anna" / "copied.jpg").read_bytes()
        output = convert_planted(planted, tmp_path / "store.h5")
        stripped = strip_metadata(source)
        assert strip_metadata(source, read_jpeg_info(source)) == stripped  # the header's segments reused
        assert stripped in stored_jpegs(output)  # copied byte for byte (no re-encoding), metadata gone
        assert (simplejpeg.decode_jpeg(stripped) == simplejpeg.decode_jpeg(source)).all()

    def test_raw_store_holds_no_source_metadata(self, planted: Path, tmp_path: Path):
        output = convert_planted(planted, tmp_path / "raw.h5", storage="raw")
        assert_clean(output.read_bytes(), "the raw store file")

    def test_manifest_names_no_absolute_path(self, planted: Path, tmp_path: Path):
        output = convert_planted(planted, tmp_path / "store.h5")
        with h5py.File(output, "r") as file:
            manifest = json.loads(file["metadata/manifest"][()])
        assert manifest["source"] == {"format": "folder", "name": "planted"}
        assert str(tmp_path).encode() not in output.read_bytes()


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("hygiene")
    root = plant(base)
    return {storage: convert_planted(root, base / f"{storage}.h5", storage) for storage in ("jpeg", "raw")}


class TestExports:
    @pytest.mark.parametrize("storage", ["jpeg", "raw"])
    @pytest.mark.parametrize("to", ["dirs", "parquet", "flair-central", "tfrecords"])
    def test_export_holds_no_source_metadata(
        self, stores: dict[str, Path], tmp_path: Path, to: str, storage: str
    ):
        if to == "tfrecords":
            pytest.importorskip("google.protobuf")
            pytest.importorskip("google_crc32c")
        destination = tmp_path / f"export-{to}"
        export(stores[storage], to, destination, ExportOptions(quiet=True))
        data = all_bytes(destination)
        assert data, "the export wrote nothing"
        assert_clean(data, f"the {to} export of the {storage} store")
        assert str(tmp_path).encode() not in data
