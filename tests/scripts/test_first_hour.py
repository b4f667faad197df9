"""The documented commands stay runnable as written: every ``fedimage`` line of the README and the
docs parses with the real command line, and ``scripts/first_hour.py`` runs the first-hour page's
walkthrough step by step, timing each (issue 19, item 1; the measured run is in docs/first-hour.md).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

from fedimage.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def load_script(name: str) -> ModuleType:
    sys.path.insert(0, str(SCRIPTS))  # first_hour imports doc_commands as a sibling
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


doc_commands = load_script("doc_commands")
first_hour = load_script("first_hour")


def fedimage_argv(words: list[str]) -> list[str] | None:
    """The arguments after a ``fedimage`` (or ``.venv/bin/fedimage``) word, optional ``[...]`` kept."""
    for index, word in enumerate(words):
        if word == "fedimage" or word.endswith("/fedimage"):
            return [part for part in (w.strip("[]") for w in words[index + 1 :]) if part]
    return None


def parse_error(argv: list[str]) -> str | None:
    parser, _ = build_parser()
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parser.parse_args(argv)
    except SystemExit:
        return stderr.getvalue().strip().splitlines()[-1]
    return None


def test_every_fedimage_command_of_the_docs_parses():
    checked, problems = 0, []
    for page in DOCS:
        for command in doc_commands.commands_in(page):
            argv = fedimage_argv(command.words())
            if argv is None:
                continue
            checked += 1
            error = parse_error(argv)
            if error:
                problems.append(f"{page.name}:{command.line}: {command.text} -> {error}")
    assert checked >= 60, checked
    assert problems == []


def test_the_walkthrough_is_the_documented_fashion_mnist_path():
    steps = first_hour.walkthrough()
    texts = [step.text for step in steps]
    assert texts[0] == "make demo"
    fedimage_steps = [fedimage_argv(step.words()) for step in steps if fedimage_argv(step.words())]
    assert [argv[0] for argv in fedimage_steps] == ["example", "train", "train", "export", "convert"]
    assert all(parse_error(argv) is None for argv in fedimage_steps)
    assert "--dp-epsilon" in fedimage_steps[2] and "--dp-epsilon" not in fedimage_steps[1]


def test_comments_and_continuations_are_read_as_the_shell_reads_them(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nnot = 'a command'\n```\n<!-- first-hour:steps -->\n```bash\n"
        "echo 'a # in quotes' # the comment\nprintf '%s' one \\\n    two\n\n```\n```bash\necho later\n```\n"
    )
    steps = list(doc_commands.commands_in(page, after_marker="first-hour:steps"))
    assert [(s.line, s.text, s.comment) for s in steps] == [
        (6, "echo 'a # in quotes'", "the comment"),
        (7, "printf '%s' one two", ""),
    ]
    assert [s.text for s in doc_commands.commands_in(page)] == [*[s.text for s in steps], "echo later"]


def walkthrough_page(tmp_path: Path, *steps: str) -> Path:
    page = tmp_path / "walk.md"
    body = "\n".join(steps)
    page.write_text(
        f"# Walk\n\n<!-- first-hour:steps -->\n```bash\n{body}\n```\n\n"
        "<!-- first-hour:times -->\nold table\n<!-- /first-hour:times -->\nend\n"
    )
    return page


def test_the_runner_times_each_step_and_writes_the_table(tmp_path: Path, capsys):
    page = walkthrough_page(tmp_path, "echo wrote one.h5  # first", "sleep 0.2 && echo done")
    status = first_hour.main(
        ["--checkout", str(tmp_path), "--page", str(page), "--write-docs", "--machine", "a test"]
    )
    assert status == 0
    text = page.read_text()
    assert "old table" not in text and text.endswith("<!-- /first-hour:times -->\nend\n")
    rows = re.findall(r"^\| `(.+?)` \| (\d+) s \| (.*) \|$", text, re.MULTILINE)
    assert [(row[0], row[2]) for row in rows] == [
        ("echo wrote one.h5", "wrote one.h5"),
        ("sleep 0.2 && echo done", "done"),
    ]
    assert "| **total** |" in text and "Measured by `scripts/first_hour.py` on a test." in text


def test_a_failing_step_stops_the_walkthrough_and_leaves_the_page(tmp_path: Path, capsys):
    page = walkthrough_page(tmp_path, "echo first", "exit 3", "echo never")
    before = page.read_text()
    assert first_hour.main(["--checkout", str(tmp_path), "--page", str(page), "--write-docs"]) == 1
    out = capsys.readouterr()
    assert "failed (exit 3)" in out.out and "echo never" not in out.out and "step 2 failed" in out.err
    assert page.read_text() == before


def test_a_walkthrough_over_budget_fails(tmp_path: Path):
    page = walkthrough_page(tmp_path, "sleep 0.1")
    assert (
        first_hour.main(["--checkout", str(tmp_path), "--page", str(page), "--budget-minutes", "0.001"]) == 1
    )


@pytest.mark.parametrize("installed", [True, False])
def test_an_installed_package_step_is_skipped(tmp_path: Path, monkeypatch, installed: bool):
    calls = []

    def fake_run(command, **kwargs):
        calls.append(command)
        return type("Completed", (), {"returncode": 0 if installed else 1})()

    monkeypatch.setattr(first_hour.subprocess, "run", fake_run)
    step = doc_commands.DocCommand(tmp_path, 1, "sudo apt-get install -y some-package", "")
    result = first_hour.run_step(step, tmp_path, tmp_path, 1)
    assert calls[0] == ["dpkg", "-s", "some-package"]
    assert (result.status == "skipped") is installed
    assert len(calls) == (1 if installed else 2)
