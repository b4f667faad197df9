"""Run the first-hour walkthrough (docs/first-hour.md) exactly as written, and time every step.

Each command of the page's walkthrough block runs with ``bash`` in ``--checkout`` (by default this
repository; for a fresh machine's figures, a fresh clone), in order; a step that fails stops the
run. A ``sudo apt-get install PKG`` step is skipped when the package is installed already (and
runs without ``sudo`` as root).
Prints a Markdown table of wall times and results, and with ``--write-docs`` puts it into the
page between its ``first-hour:times`` markers. Exit status 1 when a step fails or the total
exceeds ``--budget-minutes``.

    git clone . /tmp/fh/fedimage
    .venv/bin/python scripts/first_hour.py --checkout /tmp/fh/fedimage --write-docs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from doc_commands import DocCommand, commands_in

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "first-hour.md"
STEPS_MARKER = "first-hour:steps"
TIMES_START, TIMES_END = "<!-- first-hour:times -->", "<!-- /first-hour:times -->"


@dataclass
class StepResult:
    command: DocCommand
    seconds: float
    status: str  # "ok", "skipped" or "failed (exit N)"
    result: str


def walkthrough(page: Path = PAGE) -> list[DocCommand]:
    """The commands of the page's walkthrough block, in order."""
    return list(commands_in(page, after_marker=STEPS_MARKER))


def run_step(command: DocCommand, checkout: Path, logs: Path, index: int) -> StepResult:
    words = command.words()
    if words[:3] == ["sudo", "apt-get", "install"]:
        packages = [word for word in words[3:] if not word.startswith("-")]
        installed = subprocess.run(["dpkg", "-s", *packages], capture_output=True).returncode == 0
        if installed:
            return StepResult(command, 0.0, "skipped", "already installed")
    text = command.text
    if words[0] == "sudo" and os.geteuid() == 0:  # root already (a container often has no sudo)
        text = text.removeprefix("sudo").strip()
    log = logs / f"step-{index:02d}.log"
    started = time.perf_counter()
    with log.open("w") as handle:
        completed = subprocess.run(
            ["bash", "-c", text],
            cwd=checkout,
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
    seconds = time.perf_counter() - started
    status = "ok" if completed.returncode == 0 else f"failed (exit {completed.returncode})"
    return StepResult(command, seconds, status, result_of(words, checkout, log))


def result_of(words: list[str], checkout: Path, log: Path) -> str:
    """What a step produced, in a few words: a training summary's test figures, else its last line."""
    if "train" in words and "-o" in words:
        summary_path = checkout / words[words.index("-o") + 1] / "summary.json"
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            test, baseline = summary["test"], summary["test_prevalence_baseline"]
            text = f"test macro AP {test['macro AP']:.3f} (baseline {baseline['macro AP']:.3f})"
            if summary.get("privacy"):
                text += f", epsilon {summary['privacy']['epsilon_spent']:.2f}"
            return text
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    wrote = [line for line in lines if line.startswith("wrote ") or line.startswith("OK")]
    return (wrote or lines or [""])[-1][:140]


def short_form(command: DocCommand, width: int = 80) -> str:
    """The command as a table shows it: whole when short, else up to its output (``-o X``) and ``...``."""
    words = command.text.split()
    if len(command.text) <= width or "-o" not in words:
        return command.text
    return " ".join(words[: words.index("-o") + 2]) + " ..."


def table(results: list[StepResult]) -> str:
    rows = ["| step | wall time | result |", "|---|---|---|"]
    for result in results:
        shown = f"{result.seconds:.0f} s" if result.status == "ok" else result.status
        rows.append(f"| `{short_form(result.command)}` | {shown} | {result.result.replace('|', '/')} |")
    total = sum(result.seconds for result in results)
    rows.append(f"| **total** | **{total / 60:.1f} min** | |")
    return "\n".join(rows)


def write_docs(page: Path, text: str) -> None:
    content = page.read_text(encoding="utf-8")
    start, end = content.index(TIMES_START) + len(TIMES_START), content.index(TIMES_END)
    page.write_text(content[:start] + "\n" + text + "\n" + content[end:], encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, default=ROOT, help="where the commands run")
    parser.add_argument("--page", type=Path, default=PAGE, help="the page holding the walkthrough")
    parser.add_argument(
        "--logs", type=Path, help="folder for each step's output (default: CHECKOUT/out/first-hour)"
    )
    parser.add_argument("--budget-minutes", type=float, default=15.0)
    parser.add_argument("--write-docs", action="store_true", help="put the table into the page")
    parser.add_argument("--machine", default="", help="a few words on the machine, written under the table")
    args = parser.parse_args(argv)
    logs = args.logs or args.checkout / "out" / "first-hour"
    logs.mkdir(parents=True, exist_ok=True)
    results: list[StepResult] = []
    for index, command in enumerate(walkthrough(args.page), start=1):
        print(f"[{index}] {command.text}", flush=True)
        result = run_step(command, args.checkout, logs, index)
        print(f"    {result.status}, {result.seconds:.1f} s: {result.result}", flush=True)
        results.append(result)
        if result.status.startswith("failed"):
            print(f"step {index} failed; its output: {logs / f'step-{index:02d}.log'}", file=sys.stderr)
            break
    text = table(results)
    if args.machine:
        text += f"\n\nMeasured by `scripts/first_hour.py` on {args.machine}."
    print(text)
    total = sum(result.seconds for result in results)
    failed = any(result.status.startswith("failed") for result in results)
    if args.write_docs and not failed:
        write_docs(args.page, text)
    if total > args.budget_minutes * 60:
        print(f"over budget: {total / 60:.1f} min > {args.budget_minutes:g} min", file=sys.stderr)
    return 1 if failed or total > args.budget_minutes * 60 else 0


if __name__ == "__main__":
    sys.exit(main())
