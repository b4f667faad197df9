"""scripts/train_evidence.py: the table built from run summaries (no training here)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # Ray, Flower, pfl, training or a docs build: `make test-fast` skips it

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_evidence.py"


@pytest.fixture(scope="module")
def evidence():
    spec = importlib.util.spec_from_file_location("train_evidence", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_evidence"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("train_evidence", None)


def summary(macro: float, baseline: float, privacy: dict | None = None, cohort: int | None = 12) -> dict:
    return {
        "config": {"dp": {"clip": 0.1} if privacy else None},
        "test": {"macro AP": macro, "micro AP": macro + 0.1},
        "test_prevalence_baseline": {"macro AP": baseline, "micro AP": baseline + 0.05},
        "best_val_macro_ap": macro + 0.01,
        "rounds_run": 60,
        "best_round": 50,
        "cohort_size": cohort,
        "train_users": 48,
        "privacy": privacy,
        "wall_time_s": 123.4,
    }


def write(work: Path, dataset: str, run: str, content: dict) -> None:
    folder = work / "runs" / dataset / run
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(content))


def test_rows_follow_run_order_and_skip_missing_runs(evidence, tmp_path):
    runs = evidence.RUNS
    write(tmp_path, runs[1].dataset, runs[1].name, summary(0.30, 0.10))
    write(tmp_path, runs[0].dataset, runs[0].name, summary(0.40, 0.10, cohort=None))
    rows = evidence.collect(tmp_path, runs)
    assert [(row["dataset"], row["run"]) for row in rows] == [
        (runs[0].dataset, runs[0].name),
        (runs[1].dataset, runs[1].name),
    ]
    assert rows[0]["lift"] == pytest.approx(0.30)
    assert rows[1]["noise multiplier"] is None


def test_table_marks_runs_above_the_baseline_and_shows_privacy(evidence, tmp_path):
    privacy = {
        "noise_multiplier": 1.418,
        "applied_noise_multiplier": 1.418,
        "epsilon_spent": 1.997,
        "delta": 0.014,
    }
    run = evidence.Run("openclipart", "fl-dp2", ())
    rows = [
        evidence.row_of(evidence.Run("openclipart", "fl", ()), summary(0.08, 0.05)),
        evidence.row_of(run, summary(0.055, 0.05, privacy)),
    ]
    lines = evidence.markdown_table(rows).splitlines()
    assert len(lines) == 4
    fl, dp = lines[2].split("|"), lines[3].split("|")
    assert fl[3].strip() == "**0.080**" and fl[5].strip() == "+0.030 (1.60x)"
    assert dp[3].strip() == "0.055" and dp[5].strip() == "+0.005 (1.10x)"  # above, but not clearly: not bold
    assert dp[9].strip() == "1.42" and dp[10].strip() == "2.00"
    assert fl[9].strip() == "-" and fl[10].strip() == "-"
    assert dp[8].strip() == "12 / 48"


def test_render_lists_every_command_and_notes(evidence, tmp_path):
    noted = next(run for run in evidence.RUNS if run.note)
    write(tmp_path, noted.dataset, noted.name, summary(0.06, 0.05, {"noise_multiplier": 1.0}))
    text = evidence.render(tmp_path)
    assert noted.note in text
    for run in evidence.RUNS:
        assert " ".join(evidence.command(run, tmp_path)) in text
    assert all(part.startswith("fedimage train") for part in text.split("```bash\n")[1].split("\n")[:1])


def test_commands_point_at_the_work_folder(evidence, tmp_path):
    run = evidence.RUNS[0]
    command = evidence.command(run, tmp_path)
    assert command[:3] == [
        "fedimage",
        "train",
        str(tmp_path / "stores" / evidence.DATASETS[run.dataset].store),
    ]
    assert command[command.index("-o") + 1] == str(tmp_path / "runs" / run.dataset / run.name)


def test_unknown_stage_is_refused(evidence, capsys):
    with pytest.raises(SystemExit):
        evidence.main(["--stage", "bild"])
    assert "unknown stage" in capsys.readouterr().err


def test_curves_are_copied_only_when_small(evidence, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    names = list(evidence.DATASETS)
    for name, size in zip(names, (1_000, 300_000), strict=False):
        folder = tmp_path / "runs" / name / "fl"
        folder.mkdir(parents=True)
        (folder / "curves.png").write_bytes(b"\0" * size)
    copied = evidence.copy_curves(tmp_path, docs)
    assert copied == [docs / f"curves-{names[0]}.png"]
    assert copied[0].stat().st_size == 1_000
