"""Probing a source's images from their headers: sizes, colour, and the native side."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from helpers import jpeg_bytes, photo, save_image
from hypothesis import given
from hypothesis import strategies as st

from fedimage.errors import OptionError
from fedimage.imaging.probe import ImageProbe, native_size, probe_images


def test_probe_reads_sizes_and_colour_from_bytes_and_paths(tmp_path: Path):
    gray_path = save_image(tmp_path / "g.png", photo(28, 28).convert("L"))
    missing = str(tmp_path / "missing.png")
    payloads = [jpeg_bytes(photo(40, 30)), str(gray_path), None, b"not an image", missing]
    probe = probe_images(payloads)
    assert probe.sizes == Counter({(40, 30): 1, (28, 28): 1})
    assert probe.gray == 1 and probe.unreadable == 2 and probe.readable == 2
    assert not probe.all_gray


def test_sixteen_bit_gray_counts_as_gray(tmp_path: Path):
    path = save_image(tmp_path / "deep.png", photo(16, 16).convert("L").convert("I;16"))
    assert probe_images([str(path)]).all_gray


@pytest.mark.parametrize(("resize", "side"), [("crop", 30), ("stretch", 30), ("pad", 40)])
def test_native_side_keeps_the_most_common_size_unscaled(resize: str, side: int):
    probe = ImageProbe(sizes=Counter({(40, 30): 3, (100, 100): 1}))
    chosen, why = native_size(probe, resize)
    assert chosen == side
    assert why == f"40x30: 3 of 4 sampled images; 1 other sizes are resized to {side} px"


def test_native_side_is_refused_without_a_readable_image_or_outside_the_limits():
    with pytest.raises(OptionError, match="no sampled image could be read"):
        native_size(ImageProbe(unreadable=3), "crop")
    with pytest.raises(OptionError, match="a side of 5 px is outside 8-4096"):
        native_size(ImageProbe(sizes=Counter({(5, 9): 2})), "crop")
    with pytest.raises(OptionError, match="`size` native"):
        native_size(ImageProbe(sizes=Counter({(5000, 5000): 1})), "pad")


@given(st.dictionaries(st.tuples(st.integers(8, 600), st.integers(8, 600)), st.integers(1, 9), min_size=1))
def test_native_side_is_a_side_of_a_most_common_size(sizes: dict[tuple[int, int], int]):
    side, _ = native_size(ImageProbe(sizes=Counter(sizes)), "crop")
    top = max(sizes.values())
    assert side in {min(size) for size, count in sizes.items() if count == top}
