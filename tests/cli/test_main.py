"""The command line: demo, convert, inspect, verify, exit statuses and one-line errors."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from helpers import photo, save_image, write_jsonl

import fedimage
from fedimage.cli import main
from fedimage.sources.sample import sample_manifest


def run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_demo_converts_the_embedded_sample(tmp_path: Path, capsys):
    output = tmp_path / "sample.h5"
    status, out, _ = run(capsys, "demo", "-o", str(output), "--quiet", "--workers", "1")
    assert status == 0
    rows = sample_manifest().read_text().splitlines()
    assert f"inputs {len(rows)} = written {len(rows)} + rejected 0" in out
    assert "images/user" in out and "top coarse labels" in out
    with fedimage.open(output) as store:
        assert 10 <= sum(len(store.users(split)) for split in store.splits) <= 15
        assert store.num_images() == len(rows)
        assert store.taxonomy, "the sample ships a fine -> coarse taxonomy"
        assert set(store.taxonomy.values()) <= set(store.label_names)
        user_id, count = next(iter(store.users("train").items()))
        user = store.load_user("train", user_id)
        assert user.images.shape == (count, 256, 256, 3)
        assert user.labels.sum() >= count  # every drawing has a category


def test_convert_inspect_verify(user_folder: Path, tmp_path: Path, capsys):
    output = tmp_path / "out.h5"
    status, out, _ = run(
        capsys,
        "convert",
        str(user_folder),
        "-o",
        str(output),
        "--layout",
        "user",
        "--size",
        "64",
        "--quiet",
        "--workers",
        "1",
        "--storage",
        "raw",
    )
    assert status == 0 and "inputs 15 = written 15 + rejected 0" in out
    status, out, _ = run(capsys, "inspect", str(output))
    assert status == 0 and "raw 64x64" in out and "train" in out
    status, out, _ = run(capsys, "inspect", str(output), "--json")
    summary = json.loads(out)
    assert sum(info["images"] for info in summary["splits"].values()) == 15
    status, out, _ = run(capsys, "verify", str(output))
    assert status == 0 and out.startswith("OK")
    with h5py.File(output, "r+") as handle:
        split = next(name for name in handle if name != "metadata")
        user = next(iter(handle[split]))
        handle[f"{split}/{user}/images"][0, 0, 0, 0] ^= 0xFF
    status, out, _ = run(capsys, "verify", str(output))
    assert status == 1 and f"BAD {split}/{user}: checksum mismatch" in out


def test_exit_statuses(tmp_path: Path, capsys):
    save_image(tmp_path / "good.png", photo(30, 30))
    (tmp_path / "bad.png").write_bytes(b"junk")
    mixed = write_jsonl(
        tmp_path / "mixed.jsonl",
        [{"image": "good.png", "user_id": "a"}, {"image": "bad.png", "user_id": "b"}],
    )
    only_bad = write_jsonl(tmp_path / "bad.jsonl", [{"image": "bad.png", "user_id": "b"}])
    common = ["--quiet", "--workers", "1", "--size", "32"]
    status, out, _ = run(capsys, "convert", str(mixed), "-o", str(tmp_path / "a.h5"), *common)
    assert status == 0 and "rejected 1" in out and "not an image file" in out
    status, _, err = run(capsys, "convert", str(mixed), "-o", str(tmp_path / "b.h5"), "--strict", *common)
    assert status == 1 and "1 inputs rejected (--strict)" in err
    status, _, err = run(capsys, "convert", str(only_bad), "-o", str(tmp_path / "c.h5"), *common)
    assert status == 1 and "no image was converted" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["convert", "{tmp}/nothing", "-o", "{tmp}/o.h5"], "error: source not found: "),
        (["convert", "{tmp}/table.xlsx", "-o", "{tmp}/o.h5"], "error: cannot tell what "),
        (["convert", "{tmp}/m.jsonl", "-o", "{tmp}/o.h5", "--split", "0.9,0.2,0.1"], "ratios must sum to 1"),
        (["convert", "{tmp}/m.jsonl", "-o", "{tmp}/o.h5", "--image-column", "path"], "--image-column 'path'"),
        (
            ["convert", "{tmp}/m.jsonl", "-o", "{tmp}/o.h5", "--taxonomy", "{tmp}/no.txt"],
            "taxonomy file not found",
        ),
        (["convert", "{tmp}/m.jsonl", "-o", "{tmp}/o.h5", "--size", "2"], "--size must be between"),
        (["convert", "{tmp}/m.jsonl", "-o", "{tmp}/nodir/o.h5"], "output folder"),
        (["inspect", "{tmp}/m.jsonl"], "not a readable HDF5 file"),
    ],
)
def test_argument_errors_are_one_line(tmp_path: Path, capsys, argv, message):
    (tmp_path / "table.xlsx").write_text("x")
    save_image(tmp_path / "a.png", photo(20, 20))
    write_jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "user_id": "u"}])
    status, _, err = run(capsys, *[part.format(tmp=tmp_path) for part in argv])
    assert status == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_console_entry_point_prints_no_traceback(tmp_path: Path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fedimage",
            "convert",
            str(tmp_path / "missing"),
            "-o",
            str(tmp_path / "o.h5"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: source not found: {tmp_path / 'missing'}"


class TestSplitColumn:
    """``--split`` with a source that gives splits says so; ``--split-column none`` ignores them."""

    def test_both_given_is_said(self, flair_folder: Path, tmp_path: Path, capsys):
        argv = ["convert", str(flair_folder), "-o", str(tmp_path / "a.h5"), "--quiet", "--size", "32"]
        assert main([*argv, "--split", "0.5,0.25,0.25"]) == 0
        assert "--split applies only to users whose rows have no value" in capsys.readouterr().err
        assert main([*argv, "--overwrite"]) == 0
        assert "--split applies" not in capsys.readouterr().err  # no --split: nothing to say

    def test_none_splits_every_user_by_ratio(self, flair_folder: Path, tmp_path: Path, capsys):
        output = tmp_path / "b.h5"
        argv = [
            "convert",
            str(flair_folder),
            "-o",
            str(output),
            "--quiet",
            "--size",
            "32",
            "--split",
            "1,0,0",
        ]
        assert main([*argv, "--split-column", "none"]) == 0
        assert "--split applies" not in capsys.readouterr().err
        with fedimage.open(output) as store:
            assert store.splits == ["train"]  # FLAIR's own partition field is ignored


#: What a core install (`pip install fedimage`, `make demo`) does not have: every extra's packages.
EXTRA_PACKAGES = (
    "torch", "flwr", "flwr_datasets", "ray", "pfl", "cryptography", "matplotlib", "dp_accounting",
    "datasets", "huggingface_hub", "tfrecord", "google_crc32c", "google.protobuf", "mkdocs",
)  # fmt: skip
CORE_ONLY = f"""
import importlib.abc, sys

class ExtrasAbsent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == blocked or name.startswith(blocked + ".") for blocked in {EXTRA_PACKAGES!r}):
            raise ModuleNotFoundError(f"No module named {{name!r}} (a core install)")
        return None

sys.meta_path.insert(0, ExtrasAbsent())
from fedimage.cli import main
"""


def test_a_core_install_runs_the_demo_and_every_commands_help(tmp_path: Path):
    """`make demo` installs no extra: the parser of every command (serve and client included) must build
    without Flower, PyTorch or cryptography (a fresh machine's `make demo` once failed on flwr)."""
    script = CORE_ONLY + (
        "import contextlib, io\n"
        "for command in ('convert', 'inspect', 'verify', 'export', 'report', 'train', 'kits', 'serve',"
        " 'client', 'keygen', 'demo', 'example'):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main([command, '--help'])\n"
        f"sys.exit(main(['demo', '-o', {str(tmp_path / 'sample.h5')!r}, '--quiet', '--workers', '1']))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "written" in result.stdout and (tmp_path / "sample.h5").is_file()


def test_a_core_install_names_the_extra_a_command_needs(tmp_path: Path):
    script = (
        CORE_ONLY
        + f"sys.exit(main(['train', {str(tmp_path / 'none.h5')!r}, '-o', {str(tmp_path / 'run')!r}]))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_every_option_with_a_default_shows_it_in_help(monkeypatch):
    """`train --rounds` defaults to 5,000: every command's --help says so for every such option."""
    monkeypatch.setenv("COLUMNS", "400")  # no wrapping inside "(default: ...)"
    from fedimage.cli import build_parser

    _, parsers = build_parser()
    missing = []
    for name, parser in parsers.items():
        text = " ".join(parser.format_help().split())
        for action in parser._actions:  # argparse offers no public list of a parser's options
            quiet = action.default in (None, False, argparse.SUPPRESS) or not action.option_strings
            if not quiet and f"(default: {action.default})" not in text:
                missing.append(f"{name} {max(action.option_strings, key=len)}")
    assert missing == []
    assert "--rounds ROUNDS rounds (epochs with --central) (default: 5000)" in " ".join(
        parsers["train"].format_help().split()
    )
