#!/usr/bin/env python3
"""Build a FLAIR-style federated sample from Debian's Open Clip Art packages.

The Open Clip Art Library 0.18 is packaged by Debian as ``openclipart-svg`` and
``openclipart-png`` (installed under ``/usr/share/openclipart/{svg,png}``).  The
two trees mirror each other: ``svg/<category>/.../<stem>.svg`` is rendered as
``png/<category>/.../<stem>.png``.  This script turns them into a miniature FLAIR:

* **user** - the drawing's author, from the SVG's RDF metadata
  (``dc:creator/cc:Agent/dc:title``), stripped and whitespace-collapsed.
  Drawings without a creator are skipped.
* **coarse labels** (``labels``) - the top-level category folders (``animals``,
  ``food``, ...) the drawing appears in.
* **fine labels** (``fine_grained_labels``) - the drawing's ``dc:subject``
  keywords (``rdf:Bag/rdf:li``), lowercased, whitespace-collapsed, deduplicated
  and sorted.

The same drawing is often filed under several folders, as a symlink (in either
tree) or as a regular copy whose SVG metadata differs slightly (other keywords).
File names are not a usable identity (icon themes reuse ``folder.svg`` etc. for
different drawings by different authors) and neither are SVG bytes (copies
differ in metadata).  Copies are therefore grouped when their SVGs resolve to the
same file or their PNG renders have identical bytes; the group's keywords are
the union over its copies and its coarse labels the union of its folders.

Outputs (in ``--out DIR``): ``manifest.jsonl``, ``images/<image_id>.png``,
``label_relationship.txt`` (fine -> most co-occurring coarse label) and
``README.md``.  Everything is deterministic for a given library and ``--seed``.
Only the standard library and Pillow are used.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import random
import re
import shlex
import shutil
import struct
import subprocess
import sys
import unicodedata
import warnings
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

DC_NS = "http://purl.org/dc/elements/1.1/"
RDF_NS = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
DEFAULT_ROOT = Path("/usr/share/openclipart")
PACKAGES = ("openclipart-svg", "openclipart-png")

#: ``small``: longest image side after downscaling.
SMALL_MAX_SIDE = 160
#: ``small``: total number of images aimed for.
SMALL_TARGET_IMAGES = 300
#: ``small``: authors drawn per tier (heavy, medium, light) -> 12 authors.
SMALL_TIER_SIZES = (3, 4, 5)
#: ``small``: the heavy tier is drawn from this many most prolific authors.
SMALL_HEAVY_POOL = 10
#: ``small``: authors with at most this many drawings form the light tier.
SMALL_LIGHT_MAX = 5
#: ``full``: number of most prolific authors kept (all their drawings).
FULL_AUTHORS = 60
#: Drawings whose PNG has more pixels than Pillow's default decompression-bomb
#: threshold are skipped: Pillow-based consumers would warn on or refuse them.
MAX_PIXELS = 89_478_485

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")
_MOJIBAKE = re.compile("[\u00c2-\u00f4][\u0080-\u00bf\u0152-\u2122]")
#: Creator values that name nobody in particular; treated as "no creator".
PLACEHOLDER_AUTHORS = frozenset({"anonymous", "unknown"})
#: Artifacts of the library's Perl tooling: ``HASH(0x8a4563c)`` creators, ``hash`` keywords.
_PERL_REFERENCE = re.compile(r"^HASH\(0x[0-9a-f]+\)$")
JUNK_KEYWORDS = frozenset({"hash"})


class BuildError(Exception):
    """A fatal, user-facing error: reported as one line, exit status 2."""


@dataclass(frozen=True)
class SvgMeta:
    """The parts of an SVG's RDF metadata this script uses."""

    creator: str | None
    keywords: tuple[str, ...]
    license: str | None


@dataclass
class Copy:
    """One path at which a drawing appears (``rel`` is relative to ``svg/``)."""

    rel: str
    svg_real: Path
    png_path: Path
    png_real: Path
    png_sha256: str
    png_size: tuple[int, int]
    is_link: bool
    meta: SvgMeta | None


@dataclass(frozen=True)
class Drawing:
    """A deduplicated drawing with its FLAIR-style annotations."""

    image_id: str
    user_id: str
    labels: tuple[str, ...]
    fine_labels: tuple[str, ...]
    png_path: Path
    png_size: tuple[int, int]
    paths: tuple[str, ...]


@dataclass
class Skips:
    """Counts of things skipped with a warning (never fatal)."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, reason: str, n: int = 1) -> None:
        """Record ``n`` skipped items for ``reason``."""
        self.counts[reason] += n

    def summary(self) -> str:
        """Return e.g. ``"2 unparsable SVG, 1 missing PNG"`` (empty if none)."""
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))


# --------------------------------------------------------------------------- text


def fix_mojibake(text: str) -> str:
    """Repair UTF-8 text that was decoded as Latin-1/cp1252 (``SÃ¡nchez``).

    Only text with the tell-tale lead-byte/continuation-byte character pairs is
    touched, and only when it round-trips to valid UTF-8; repeated at most twice
    for doubly mangled strings.
    """
    for _ in range(2):
        if not _MOJIBAKE.search(text):
            break
        for codec in ("latin-1", "cp1252"):
            try:
                text = text.encode(codec).decode("utf-8")
                break
            except UnicodeError:
                continue
        else:
            break
    return text


def normalize_text(text: str | None) -> str:
    """Unescape stray HTML entities, fix mojibake, NFC-normalize, collapse whitespace.

    Some library entries are double-escaped (``&amp;eacute;toile``), which XML
    parsing turns into the literal text ``&eacute;toile``; others are UTF-8
    decoded as Latin-1 (``Miguel SÃ¡nchez``).
    """
    if not text:
        return ""
    text = unicodedata.normalize("NFC", fix_mojibake(html.unescape(text)))
    return " ".join(text.split())


def author_key(name: str) -> str:
    """Identity of an author name: casefolded letters and digits only.

    Merges spelling variants such as ``Mo``/``mo``, ``AJ Ashton``/``A.J. Ashton``
    or ``Jean-VIctor Balin``/``Jean-Victor Balin``.
    """
    return re.sub(r"[\W_]+", "", name.casefold()) or name


def normalize_keywords(raw: Iterable[str | None]) -> tuple[str, ...]:
    """Lowercase, collapse whitespace, drop empties, dedupe and sort keywords.

    Keywords containing control characters (unrepairable mojibake) and the
    tooling's junk keywords (``hash``) are dropped.
    """
    keywords = (normalize_text(r).lower() for r in raw)
    return tuple(sorted({kw for kw in keywords if kw and kw not in JUNK_KEYWORDS and not _has_control(kw)}))


def _has_control(text: str) -> bool:
    """True if ``text`` contains a control character (Unicode category Cc)."""
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def safe_id(stem: str) -> str:
    """Turn a file stem into an id usable as a file name (``[A-Za-z0-9._-]``)."""
    cleaned = _SAFE_ID.sub("_", stem).lstrip(".-")
    return cleaned or "drawing"


# --------------------------------------------------------------------------- parsing


def _local(tag: str) -> str:
    """Return an element tag without its ``{namespace}``."""
    return tag.rsplit("}", 1)[-1]


def _creator_name(creator: ET.Element) -> str:
    """Return the name in a ``dc:creator`` (``cc:Agent/dc:title`` or plain text)."""
    for title in creator.iter(f"{{{DC_NS}}}title"):
        name = normalize_text(title.text)
        if name:
            return name
    return normalize_text(creator.text)


def parse_svg_metadata(path: Path) -> SvgMeta:
    """Read creator, subject keywords and license from an SVG's RDF metadata.

    Raises ``ET.ParseError`` or ``OSError`` for unreadable files.
    """
    root = ET.parse(path).getroot()
    creator: str | None = None
    for element in root.iter(f"{{{DC_NS}}}creator"):
        name = _creator_name(element)
        if name:
            creator = name
            break
    raw_keywords: list[str | None] = []
    for subject in root.iter(f"{{{DC_NS}}}subject"):
        items = [li.text for li in subject.iter(f"{{{RDF_NS}}}li")]
        raw_keywords.extend(items if items else [subject.text])
    license_uri: str | None = None
    for element in root.iter():
        if _local(element.tag) == "license" and element.tag != f"{{{DC_NS}}}license":
            license_uri = element.get(f"{{{RDF_NS}}}resource") or license_uri
    return SvgMeta(creator, normalize_keywords(raw_keywords), license_uri)


def is_public_domain(license_uri: str | None) -> bool:
    """True unless the metadata names a license that is not a public-domain one.

    Besides the usual URIs, some files say just ``rdf:resource="Public Domain"``.
    """
    return not license_uri or "publicdomain" in re.sub(r"[^a-z]", "", license_uri.lower())


def png_dimensions(path: Path) -> tuple[int, int]:
    """Read width and height from a PNG's IHDR chunk without decoding it."""
    with path.open("rb") as fh:
        head = fh.read(24)
    if len(head) < 24 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise ValueError(f"not a PNG file: {path}")
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- scanning


def _svg_entries(svg_dir: Path) -> list[str]:
    """List every ``*.svg`` file or symlink below ``svg_dir``, relative, sorted."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(svg_dir):
        dirnames.sort()
        for name in filenames:
            if name.lower().endswith(".svg"):
                entries.append((Path(dirpath) / name).relative_to(svg_dir).as_posix())
    return sorted(entries)


def collect_copies(root: Path, skips: Skips) -> list[Copy]:
    """Pair every SVG below ``root/svg`` with its PNG and read its metadata."""
    svg_dir, png_dir = root / "svg", root / "png"
    if not root.is_dir():
        raise BuildError(
            f"Open Clip Art root not found: {root} "
            f"(install the Debian packages {' and '.join(PACKAGES)}, or pass --root)"
        )
    for sub in (svg_dir, png_dir):
        if not sub.is_dir():
            raise BuildError(f"{sub} is missing: --root must contain svg/ and png/ folders")
    meta_cache: dict[Path, SvgMeta | None] = {}
    png_cache: dict[Path, tuple[str, tuple[int, int]] | None] = {}
    copies: list[Copy] = []
    for rel in _svg_entries(svg_dir):
        if "/" not in rel:
            skips.add("SVG outside any category folder")
            continue
        svg_path = svg_dir / rel
        png_path = (png_dir / rel).with_suffix(".png")
        if not png_path.is_file():
            skips.add("missing PNG")
            continue
        png_real = png_path.resolve()
        if png_real not in png_cache:
            try:
                png_cache[png_real] = (sha256_file(png_real), png_dimensions(png_real))
            except (OSError, ValueError):
                png_cache[png_real] = None
                skips.add("unreadable PNG")
        png_info = png_cache[png_real]
        if png_info is None:
            continue
        try:
            svg_real = svg_path.resolve()
        except (OSError, RuntimeError):  # symlink loop
            skips.add("unparsable SVG")
            continue
        if svg_real not in meta_cache:
            try:
                meta_cache[svg_real] = parse_svg_metadata(svg_real)
            except (ET.ParseError, OSError, UnicodeDecodeError, ValueError):
                meta_cache[svg_real] = None
                skips.add("unparsable SVG")
        copies.append(
            Copy(
                rel=rel,
                svg_real=svg_real,
                png_path=png_path,
                png_real=png_real,
                png_sha256=png_info[0],
                png_size=png_info[1],
                is_link=svg_path.is_symlink() or png_path.is_symlink(),
                meta=meta_cache[svg_real],
            )
        )
    return copies


def group_copies(copies: Sequence[Copy]) -> list[list[Copy]]:
    """Group copies of one drawing: same resolved SVG or identical PNG bytes."""
    parent = list(range(len(copies)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_by_key: dict[tuple[str, str], int] = {}
    for i, copy in enumerate(copies):
        for key in (("svg", str(copy.svg_real)), ("png", copy.png_sha256)):
            j = first_by_key.setdefault(key, i)
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[Copy]] = defaultdict(list)
    for i, copy in enumerate(copies):
        groups[find(i)].append(copy)
    return [sorted(g, key=lambda c: c.rel) for _, g in sorted(groups.items())]


def _vote(names: Iterable[str]) -> str | None:
    """Most common name, ties broken alphabetically; ``None`` if there are none."""
    counts = Counter(names)
    if not counts:
        return None
    return min(counts, key=lambda name: (-counts[name], name))


def build_drawings(groups: Sequence[Sequence[Copy]], skips: Skips) -> list[Drawing]:
    """Turn groups of copies into annotated drawings with unique image ids."""
    pending: list[tuple[str, str, list[Copy], Copy]] = []
    for group in groups:
        metas = {c.svg_real: c.meta for c in group if c.meta is not None}
        if not metas:  # already counted as "unparsable SVG"
            continue
        if not all(is_public_domain(m.license) for m in metas.values()):
            skips.add("drawing not marked public domain")
            continue
        creator = _vote(
            m.creator
            for m in metas.values()
            if m.creator
            and author_key(m.creator) not in PLACEHOLDER_AUTHORS
            and not _PERL_REFERENCE.match(m.creator)
        )
        if creator is None:
            skips.add("drawing without creator")
            continue
        canonical = min(group, key=lambda c: (c.is_link, c.rel))
        width, height = canonical.png_size
        if width * height > MAX_PIXELS:
            skips.add("oversized PNG")
            continue
        pending.append((creator, safe_id(Path(canonical.rel).stem), list(group), canonical))
    stem_uses = Counter(stem.casefold() for _, stem, _, _ in pending)
    spellings: dict[str, Counter[str]] = defaultdict(Counter)
    for creator, _, _, _ in pending:
        spellings[author_key(creator)][creator] += 1
    user_ids = {key: _vote(counts.elements()) for key, counts in spellings.items()}
    drawings = []
    for creator, stem, group, canonical in pending:
        image_id = stem
        if stem_uses[stem.casefold()] > 1:
            image_id = f"{stem}-{canonical.png_sha256[:8]}"
        keywords = normalize_keywords(
            kw for m in {c.svg_real: c.meta for c in group}.values() if m for kw in m.keywords
        )
        drawings.append(
            Drawing(
                image_id=image_id,
                user_id=user_ids[author_key(creator)] or creator,
                labels=tuple(sorted({c.rel.split("/", 1)[0] for c in group})),
                fine_labels=keywords,
                png_path=canonical.png_real,
                png_size=canonical.png_size,
                paths=tuple(c.rel for c in group),
            )
        )
    return sorted(drawings, key=lambda d: (d.user_id, d.image_id))


def scan_library(root: Path, skips: Skips) -> list[Drawing]:
    """Scan an Open Clip Art tree and return its deduplicated, annotated drawings."""
    drawings = build_drawings(group_copies(collect_copies(root, skips)), skips)
    if not drawings:
        raise BuildError(f"no usable drawings (SVG with a creator and a PNG) under {root}")
    return drawings


# --------------------------------------------------------------------------- selection


def by_author(drawings: Iterable[Drawing]) -> dict[str, list[Drawing]]:
    """Group drawings by user, each list sorted by image id."""
    groups: dict[str, list[Drawing]] = defaultdict(list)
    for drawing in drawings:
        groups[drawing.user_id].append(drawing)
    return {user: sorted(ds, key=lambda d: d.image_id) for user, ds in sorted(groups.items())}


def rank_authors(groups: dict[str, list[Drawing]]) -> list[str]:
    """Authors by number of drawings, most prolific first (ties alphabetical)."""
    return sorted(groups, key=lambda user: (-len(groups[user]), user))


def select_full(drawings: Sequence[Drawing], n_authors: int = FULL_AUTHORS) -> list[Drawing]:
    """All drawings of the ``n_authors`` most prolific authors."""
    groups = by_author(drawings)
    keep = set(rank_authors(groups)[:n_authors])
    return [d for d in drawings if d.user_id in keep]


def _pick_authors(ranked: Sequence[str], counts: dict[str, int], rng: random.Random) -> list[str]:
    """Draw heavy, medium and light authors (``SMALL_TIER_SIZES``) with ``rng``."""
    light = [u for u in ranked if counts[u] <= SMALL_LIGHT_MAX]
    others = [u for u in ranked if counts[u] > SMALL_LIGHT_MAX]
    pools = (others[:SMALL_HEAVY_POOL], others[SMALL_HEAVY_POOL:], light)
    picked: list[str] = []
    for pool, size in zip(pools, SMALL_TIER_SIZES, strict=True):
        picked.extend(rng.sample(pool, min(size, len(pool))))
    shortfall = sum(SMALL_TIER_SIZES) - len(picked)
    taken = set(picked)
    rest = [u for u in ranked if u not in taken]
    picked.extend(rng.sample(rest, min(shortfall, len(rest))))
    return picked


def author_quotas(available: Sequence[int], target: int) -> list[int]:
    """Heavy-tailed per-author image counts (authors sorted by ``available`` desc).

    Author ``k`` gets a Zipf share ``target / (k + 1) / H`` (rounded down), capped by
    what it has; the remainder is dealt out round-robin to authors with drawings left.
    """
    harmonic = sum(1 / (k + 1) for k in range(len(available)))
    quotas = [min(avail, max(1, int(target / (k + 1) / harmonic))) for k, avail in enumerate(available)]
    while sum(quotas) < target:
        open_slots = [k for k, avail in enumerate(available) if quotas[k] < avail]
        if not open_slots:
            break
        for k in open_slots[: target - sum(quotas)]:
            quotas[k] += 1
    return quotas


def select_small(drawings: Sequence[Drawing], seed: int, target: int = SMALL_TARGET_IMAGES) -> list[Drawing]:
    """Seeded, heavy-tailed sample of about 12 authors and ``target`` images."""
    rng = random.Random(seed)
    groups = by_author(drawings)
    counts = {user: len(ds) for user, ds in groups.items()}
    picked = _pick_authors(rank_authors(groups), counts, rng)
    picked.sort(key=lambda user: (-counts[user], user))
    quotas = author_quotas([counts[u] for u in picked], target)
    chosen: list[Drawing] = []
    for user, quota in zip(picked, quotas, strict=True):
        chosen.extend(rng.sample(groups[user], quota))
    return sorted(chosen, key=lambda d: (d.user_id, d.image_id))


# --------------------------------------------------------------------------- writing


def prepare_out_dir(out: Path) -> Path:
    """Create ``out`` (or clear a previous build in it) and return ``out/images``."""
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out exists and is not a directory: {out}")
    images = out / "images"
    if images.exists():
        if not (out / "manifest.jsonl").is_file():
            raise BuildError(f"refusing to overwrite {images}: {out} is not a previous build")
        shutil.rmtree(images)
    images.mkdir(parents=True)
    return images


def write_small_png(src: Path, dst: Path, max_side: int = SMALL_MAX_SIDE) -> None:
    """Write ``src`` as RGBA, longer side <= ``max_side`` (LANCZOS), no metadata."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Image.open(src) as im:
            rgba = im.convert("RGBA")
    width, height = rgba.size
    scale = min(1.0, max_side / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size != rgba.size:
        rgba = rgba.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    # A fresh image carries no info dict (dpi, text chunks, ICC) into the file.
    clean = Image.frombytes("RGBA", rgba.size, rgba.tobytes())
    clean.save(dst, format="PNG", optimize=True)


def write_images(chosen: Sequence[Drawing], images_dir: Path, variant: str, skips: Skips) -> list[Drawing]:
    """Write each chosen drawing's image; return the drawings written."""
    written = []
    for drawing in chosen:
        dst = images_dir / f"{drawing.image_id}.png"
        try:
            if variant == "small":
                write_small_png(drawing.png_path, dst)
            else:
                shutil.copyfile(drawing.png_path, dst)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            dst.unlink(missing_ok=True)
            skips.add("PNG that failed to decode")
            continue
        written.append(drawing)
    return written


def manifest_row(drawing: Drawing) -> dict[str, object]:
    """The manifest object for one drawing (key order is part of the format)."""
    return {
        "image": f"images/{drawing.image_id}.png",
        "image_id": drawing.image_id,
        "user_id": drawing.user_id,
        "labels": list(drawing.labels),
        "fine_grained_labels": list(drawing.fine_labels),
    }


def label_relationship(drawings: Iterable[Drawing]) -> dict[str, str]:
    """Map each fine label to the coarse label it co-occurs with most (ties: a-z).

    Then every coarse label of the sample gets at least one fine label (as in
    FLAIR, where each coarse label is the parent of some fine labels): an
    uncovered coarse label takes over its most co-occurring fine label among
    those whose current coarse label keeps at least one other.
    """
    cooc: dict[str, Counter[str]] = defaultdict(Counter)
    for drawing in drawings:
        for fine in drawing.fine_labels:
            cooc[fine].update(drawing.labels)
    mapping = {
        fine: min(counts, key=lambda coarse: (-counts[coarse], coarse))
        for fine, counts in sorted(cooc.items())
        if counts
    }
    all_coarse = sorted({coarse for counts in cooc.values() for coarse in counts})
    for coarse in all_coarse:
        children = Counter(mapping.values())
        if children[coarse]:
            continue
        movable = [fine for fine, counts in cooc.items() if counts[coarse] and children[mapping[fine]] > 1]
        if movable:
            mapping[min(movable, key=lambda fine: (-cooc[fine][coarse], fine))] = coarse
    return mapping


def package_versions() -> dict[str, str]:
    """Installed versions of the Debian packages (``"unknown"`` if unavailable)."""
    versions = dict.fromkeys(PACKAGES, "unknown")
    try:
        proc = subprocess.run(
            ["dpkg-query", "-W", "-f=${Package}\t${Version}\n", *PACKAGES],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return versions
    for line in proc.stdout.splitlines():
        name, _, version = line.partition("\t")
        if name in versions and version.strip():
            versions[name] = version.strip()
    return versions


def _display_path(path: Path) -> str:
    """``path`` relative to the working directory when inside it, else as given."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.as_posix()


def rebuild_command(variant: str, out: Path, root: Path, seed: int) -> str:
    """The command line that rebuilds this output."""
    args = ["python", "scripts/build_openclipart_sample.py", "--variant", variant]
    args += ["--out", _display_path(out), "--root", root.as_posix(), "--seed", str(seed)]
    return shlex.join(args)


def counts_of(drawings: Sequence[Drawing]) -> dict[str, int]:
    """Authors, images, coarse and fine label counts of a selection."""
    return {
        "authors": len({d.user_id for d in drawings}),
        "images": len(drawings),
        "coarse labels": len({c for d in drawings for c in d.labels}),
        "fine labels": len({f for d in drawings for f in d.fine_labels}),
    }


def render_readme(variant: str, drawings: Sequence[Drawing], command: str, versions: dict[str, str]) -> str:
    """The README describing provenance, license, rebuild command and counts."""
    counts = counts_of(drawings)
    per_author = Counter(d.user_id for d in drawings)
    images_note = (
        f"downscaled so the longer side is at most {SMALL_MAX_SIDE} px "
        "(LANCZOS, RGBA kept, metadata stripped)"
        if variant == "small"
        else "copied unchanged from the PNG package"
    )
    lines = [
        f"# Open Clip Art sample (`{variant}` variant)",
        "",
        "A FLAIR-style federated image dataset in miniature, built from the Open Clip Art",
        "Library as packaged by Debian. Users are drawing authors (`dc:creator`), coarse",
        "labels (`labels`) are the library's top-level category folders a drawing is filed",
        "under, and fine labels (`fine_grained_labels`) are its `dc:subject` keywords",
        "(lowercased, whitespace-collapsed, deduplicated, sorted).",
        "",
        "## Provenance",
        "",
        *(f"- Debian package `{name}` version `{versions[name]}`" for name in PACKAGES),
        "- Metadata from the SVG files (RDF / Dublin Core); images from the PNG renders,",
        f"  {images_note}.",
        "- Copies of one drawing filed in several folders are merged (same SVG file",
        "  or identical PNG bytes); drawings without a creator are left out.",
        "",
        "## License",
        "",
        "Public domain: the Open Clip Art Library's drawings are dedicated to the public",
        "domain by their authors (Creative Commons Public Domain Dedication; see",
        "`/usr/share/doc/openclipart-svg/copyright`). Drawings whose metadata names",
        "another license are left out.",
        "",
        "## Rebuild",
        "",
        "```",
        command,
        "```",
        "",
        "## Files",
        "",
        "- `manifest.jsonl`: one JSON object per image with keys `image`, `image_id`,",
        "  `user_id`, `labels`, `fine_grained_labels`; sorted by (`user_id`, `image_id`).",
        "- `images/<image_id>.png`: RGBA PNG images (flatten alpha on white).",
        "- `label_relationship.txt`: `fine<TAB>coarse`, each fine label mapped to the coarse",
        "  label it co-occurs with most often in this sample (ties alphabetical).",
        "",
        "## Counts",
        "",
        *(f"- {name}: {value}" for name, value in counts.items()),
        "",
        "Images per author:",
        "",
        *(f"- {user}: {n}" for user, n in sorted(per_author.items(), key=lambda item: (-item[1], item[0]))),
        "",
    ]
    return "\n".join(lines)


def _write_text(path: Path, text: str) -> None:
    """Write UTF-8 text with ``\\n`` line endings."""
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)


def write_outputs(out: Path, variant: str, drawings: Sequence[Drawing], command: str) -> dict[str, str]:
    """Write manifest, taxonomy and README for already-written images."""
    rows = sorted(drawings, key=lambda d: (d.user_id, d.image_id))
    _write_text(
        out / "manifest.jsonl",
        "".join(json.dumps(manifest_row(d), ensure_ascii=False) + "\n" for d in rows),
    )
    taxonomy = label_relationship(rows)
    _write_text(
        out / "label_relationship.txt",
        "".join(f"{fine}\t{coarse}\n" for fine, coarse in taxonomy.items()),
    )
    _write_text(out / "README.md", render_readme(variant, rows, command, package_versions()))
    return taxonomy


def dir_size(path: Path) -> int:
    """Total size in bytes of the regular files below ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(variant: str, out: Path, root: Path = DEFAULT_ROOT, seed: int = 0) -> tuple[str, Skips]:
    """Build the ``variant`` sample of the library at ``root`` into ``out``.

    Returns the one-line summary and the skip counts.  Raises ``BuildError`` for
    fatal problems.
    """
    if variant not in ("small", "full"):
        raise BuildError(f"unknown variant {variant!r} (use small or full)")
    skips = Skips()
    drawings = scan_library(root, skips)
    chosen = select_small(drawings, seed) if variant == "small" else select_full(drawings)
    images_dir = prepare_out_dir(out)
    written = write_images(chosen, images_dir, variant, skips)
    if not written:
        raise BuildError("no image could be written")
    write_outputs(out, variant, written, rebuild_command(variant, out, root, seed))
    counts = counts_of(written)
    summary = (
        f"openclipart {variant}: {counts['authors']} authors, {counts['images']} images, "
        f"{counts['coarse labels']} coarse labels, {counts['fine labels']} fine labels, "
        f"{dir_size(out) / 1e6:.2f} MB -> {out}"
    )
    return summary, skips


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--variant", choices=("small", "full"), required=True)
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    parser.add_argument(
        "--root",
        type=Path,
        default=DEFAULT_ROOT,
        help=f"Open Clip Art root holding svg/ and png/ (default: {DEFAULT_ROOT})",
    )
    parser.add_argument("--seed", type=int, default=0, help="selection seed for --variant small (default: 0)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = parse_args(argv)
    try:
        summary, skips = build(args.variant, args.out, args.root, args.seed)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if skips.counts:
        print(f"warning: skipped {skips.summary()}", file=sys.stderr)
    print(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
