"""A real federation on this machine against Flower's simulation of the same rounds.

For N = 3, 6, 12 train sites, with and without secure aggregation, on one synthetic store
(``--images`` images of ``--size`` px per site, the small CNN): ``fedimage kits``, then
``fedimage serve`` and N ``fedimage client`` processes on 127.0.0.1 over TLS with node
authentication, ``--rounds`` rounds of the whole cohort; then ``fedimage train --engine flower``
(Flower's Ray simulation, the same ServerApp/ClientApp) on the same store and settings, in the
same run. Prints, per configuration:

- start-up: ``fedimage serve`` start to the ServerApp's first round (SuperLink, key registration,
  app submission, sites connecting);
- seconds per round (rounds after the first: the first includes each node installing the app),
  deployment and simulation, and their ratio;
- bytes on the wire per client and round (payload of the messages, both ways);
- what a round is made of: its exchanges (1 without, 5 with secure aggregation: the train exchange
  and four SecAgg+ stages, each timed by the ServerApp) and the cost of starting one ClientApp
  process (Flower 1.42 starts a new ``flwr-clientapp`` per message), measured here.

    .venv/bin/python bench/deploy.py [--clients 3 6 12] [--rounds 3] [--images 8] [--size 32]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fedimage import ImageOptions, convert, open_source
from fedimage.conversion.options import ConvertOptions
from fedimage.federation import make_kits
from fedimage.federation.processes import free_port

LABELS = ["cat", "dog", "tree", "car"]


def make_store(folder: Path, sites: int, images: int, size: int) -> Path:
    """``sites`` train users of ``images`` smooth random images each, 1-2 labels an image."""
    rng = np.random.default_rng(0)
    rows = []
    for site in range(sites):
        for index in range(images):
            y, x = np.mgrid[0:size, 0:size]
            pixels = np.stack(
                [(np.sin((x + c * y) / (3 + c + site) + index) * 127 + 128) for c in range(3)], axis=-1
            ).astype(np.uint8)
            path = folder / "images" / f"site{site:02d}-{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
            labels = sorted(rng.choice(LABELS, size=int(rng.integers(1, 3)), replace=False).tolist())
            rows.append(
                {"image": str(path), "user_id": f"site{site:02d}", "labels": labels, "partition": "train"}
            )
    manifest = folder / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    store = folder / "store.h5"
    convert(
        open_source(manifest), store, ConvertOptions(image=ImageOptions(size=size), quiet=True, workers=1)
    )
    return store


def training_flags(sites: int, rounds: int, size: int, secure: bool) -> list[str]:
    flags = [
        "--model", "cnn", "--image-size", str(size - size // 8), "--rounds", str(rounds),
        "--eval-every", str(rounds + 1), "--cohort-size", str(sites), "--strategy", "fedavg",
        "--batch-size", "8", "--local-epochs", "1", "--no-validation",
    ]  # fmt: skip
    if secure:
        flags += ["--secure-aggregation", "--secagg-range", "1.0"]
    return flags


def start(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fedimage", *args],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def end(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def deployment(store: Path, folder: Path, sites: int, rounds: int, size: int, secure: bool) -> dict:
    port = free_port()
    kits = folder / "kits"
    make_kits(store, kits, f"127.0.0.1:{port}", quiet=True)
    run = folder / "run"
    flags = [flag for flag in training_flags(sites, rounds, size, secure) if flag != "--no-validation"]
    started = time.perf_counter()
    server = start(
        ["serve", str(kits / "server"), "-o", str(run), "--address", f"127.0.0.1:{port}",
         "--min-clients", str(sites), "--round-timeout", "300", "--connect-timeout", "300", *flags],
        folder / "serve.log",
    )  # fmt: skip
    clients = [
        start(["client", str(kit)], folder / f"{kit.name}.log")
        for kit in sorted((kits / "clients" / "train").iterdir())
    ]
    try:
        code = server.wait(timeout=3600)
        seconds = time.perf_counter() - started
    finally:
        for process in [server, *clients]:
            end(process)
    if code != 0:
        raise SystemExit(f"fedimage serve failed:\n{(folder / 'serve.log').read_text()[-2000:]}")
    summary = json.loads((run / "summary.json").read_text())
    return {"summary": summary, "total_s": seconds, "startup_s": seconds - summary["wall_time_s"]}


def simulation(store: Path, folder: Path, sites: int, rounds: int, size: int, secure: bool) -> dict:
    out = folder / "sim"
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "fedimage", "train", str(store), "-o", str(out), "--engine", "flower",
         "--quiet", *training_flags(sites, rounds, size, secure)],
        capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(
            f"fedimage train --engine flower failed:\n{done.stdout[-1500:]}{done.stderr[-1500:]}"
        )
    return {
        "summary": json.loads((out / "summary.json").read_text()),
        "total_s": time.perf_counter() - started,
    }


def clientapp_start_seconds(repeats: int = 3) -> tuple[float, float]:
    """Seconds to start Python with fedimage's ClientApp: without torch (SecAgg+ stages) and with it."""
    light = "import fedimage.federation.client_app"
    heavy = light + "; import fedimage.federation.local, fedimage.training.models"
    times = []
    for code in (light, heavy):
        samples = []
        for _ in range(repeats):
            tick = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            samples.append(time.perf_counter() - tick)
        times.append(statistics.median(samples))
    return times[0], times[1]


def steady_rounds(summary: dict) -> list[dict]:
    """The rounds after the first (the first includes each node installing the app)."""
    rounds = summary["rounds"]
    return rounds[1:] if len(rounds) > 1 else rounds


def steady_round_seconds(summary: dict) -> float:
    return statistics.mean(record["seconds"] for record in steady_rounds(summary))


def exchange_seconds(summary: dict) -> tuple[float, float | None]:
    """Mean seconds of a round's train exchange, and of one SecAgg+ stage exchange (None without)."""
    train, stages = [], []
    for record in steady_rounds(summary):
        for exchange in record.get("exchanges", []):
            (train if exchange["kind"] == "train" else stages).append(exchange["seconds"])
    return statistics.mean(train), (statistics.mean(stages) if stages else None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[3, 6, 12])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    light, heavy = clientapp_start_seconds()
    print(f"machine: {os.cpu_count()} CPUs; a ClientApp process starts in {light:.2f} s (SecAgg+ stage) "
          f"and {heavy:.2f} s with torch (train, evaluate)")  # fmt: skip
    header = (
        f"{'sites':>5} {'secagg':>6} | {'start-up s':>10} | {'deploy s/round':>14} {'simulate s/round':>16} "
        f"{'ratio':>6} | {'KB/client/round':>15} | train exchange s | SecAgg+ stage s"
    )
    print(header)
    print("-" * len(header))
    results = []
    for sites in args.clients:
        with tempfile.TemporaryDirectory(prefix="fedimage-deploy-") as scratch:
            root = Path(scratch)
            store = make_store(root / "data", sites, args.images, args.size)
            for secure in (False, True):
                if secure and sites < 3:
                    continue
                folder = root / f"{'secure' if secure else 'plain'}"
                folder.mkdir()
                deployed = deployment(store, folder, sites, args.rounds, args.size, secure)
                simulated = simulation(store, folder, sites, args.rounds, args.size, secure)
                records = deployed["summary"]["rounds"]
                wire = statistics.mean((r["bytes_down"] + r["bytes_up"]) / len(r["cohort"]) for r in records)
                deploy_round = steady_round_seconds(deployed["summary"])
                train_s, stage_s = exchange_seconds(deployed["summary"])
                simulate_round = steady_round_seconds(simulated["summary"])
                row = {
                    "sites": sites,
                    "secure_aggregation": secure,
                    "startup_s": round(deployed["startup_s"], 2),
                    "deploy_round_s": round(deploy_round, 2),
                    "simulate_round_s": round(simulate_round, 2),
                    "ratio": round(deploy_round / simulate_round, 2),
                    "bytes_per_client_round": round(wire),
                    "exchanges_per_round": 5 if secure else 1,
                    "train_exchange_s": round(train_s, 2),
                    "secagg_stage_s": None if stage_s is None else round(stage_s, 2),
                }
                results.append(row)
                print(
                    f"{sites:>5} {'yes' if secure else 'no':>6} | {row['startup_s']:>10.1f} | "
                    f"{deploy_round:>14.1f} {simulate_round:>16.1f} {row['ratio']:>5.2f}x | "
                    f"{wire / 1024:>15.0f} | {train_s:>16.1f} | "
                    + ("-" if stage_s is None else f"{stage_s:.1f}"),
                    flush=True,
                )
    print(json.dumps({"clientapp_start_s": [round(light, 2), round(heavy, 2)], "rows": results}))


if __name__ == "__main__":
    main()
