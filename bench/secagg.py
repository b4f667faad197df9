"""Secure aggregation cost per round against plain aggregation (and Flower's SecAgg+ primitives).

For 100 and 1,000 clients and 1M and 11M (ResNet-18) parameters: client seconds (mean per
client, all four stages), server seconds (whole round), bytes up and down per client, side by
side with plain aggregation (float32 vectors summed by the server) measured in the same run.

A configuration is run end to end when its mask expansion fits in ``--budget-gb`` of keystream;
otherwise the round is run end to end at a reduced dimension (every cost that does not depend on
the dimension: keys, shares, routing, reconstruction) and the dimension-dependent work (quantize,
expand and add masks, sum masked inputs) is timed separately at the full dimension and added:
``time(d) = round(d_small) - work(d_small) + work(d)``. Rows say ``measured`` or ``extrapolated``.

    .venv/bin/python bench/secagg.py [--clients 100 1000] [--dimensions 1000000 11000000]
        [--prg chacha20] [--dropout 0.05] [--flower-python /path/to/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedimage.privacy.secagg import (
    DropoutPlan,
    Quantizer,
    default_degree,
    default_threshold,
    simulate_round,
)
from fedimage.privacy.secagg.masks import apply_masks

RESNET18 = 11_000_000
FLOWER_SCRIPT = Path(__file__).resolve().parent / "_flower_secagg.py"


@dataclass
class Row:
    clients: int
    dimension: int
    method: str
    client_seconds: float
    server_seconds: float
    bytes_up: float
    bytes_down: float
    how: str


def plain_round(clients: int, dimension: int) -> Row:
    """Clients send float32 updates; the server adds them up in float32 (FedAvg's sum)."""
    update = np.random.default_rng(0).uniform(-1, 1, dimension).astype(np.float32)
    tick = time.perf_counter()
    payload = update.tobytes()
    client = time.perf_counter() - tick
    total = np.zeros(dimension, dtype=np.float32)
    tick = time.perf_counter()
    for _ in range(clients):
        np.add(total, np.frombuffer(payload, dtype=np.float32), out=total)
    return Row(
        clients,
        dimension,
        "plain",
        client,
        time.perf_counter() - tick,
        len(payload),
        len(payload),
        "measured",
    )


def dimension_work(
    clients: int, dimension: int, degree: int, survivors: int, prg: str
) -> tuple[float, float]:
    """Seconds of the dimension-dependent work: a client's quantize + masks; the server's sum + self masks."""
    quantizer = Quantizer.for_cohort(1.0, clients)
    update = np.random.default_rng(0).uniform(-1, 1, dimension).astype(np.float32)
    keys = [bytes([i % 256, i // 256]) * 16 for i in range(degree + 1)]
    tick = time.perf_counter()
    words = quantizer.quantize(update)
    apply_masks(words, keys[: degree // 2 + 1], keys[degree // 2 + 1 :], prg)
    client = time.perf_counter() - tick
    total = np.zeros(dimension, dtype=quantizer.dtype)
    sample = min(survivors, 8)
    tick = time.perf_counter()
    for _ in range(sample):
        np.add(total, words, out=total)
    add = (time.perf_counter() - tick) / sample
    tick = time.perf_counter()
    apply_masks(total, subtract=keys[:sample], prg=prg)
    mask = (time.perf_counter() - tick) / sample
    return client, survivors * (add + mask)


def secagg_round(clients: int, dimension: int, prg: str, dropout: float, budget_gb: float) -> Row:
    degree = default_degree(clients)
    keystream = clients * (degree + 2) * dimension * 4
    run_dimension = (
        dimension
        if keystream <= budget_gb * 1e9
        else max(1000, int(dimension * budget_gb * 1e9 / keystream / 10))
    )
    quantizer = Quantizer.for_cohort(1.0, clients)
    update = np.random.default_rng(0).uniform(-1, 1, run_dimension).astype(np.float32)
    plan = DropoutPlan.random(range(clients), [0, 0, dropout, 0], seed=1) if dropout else None
    report = simulate_round(
        list(range(clients)), lambda _: update, quantizer, run_dimension, dropouts=plan, seed=0, prg=prg
    )
    costs = report.costs.values()
    survivors = len(report.contributors)
    client = sum(c.client_seconds for c in costs) / clients
    server = sum(c.server_seconds for c in costs)
    up = sum(c.bytes_up for c in costs)
    down = sum(c.bytes_down for c in costs)
    how = "measured"
    if run_dimension != dimension:
        small_client, small_server = dimension_work(clients, run_dimension, degree, survivors, prg)
        full_client, full_server = dimension_work(clients, dimension, degree, survivors, prg)
        client += (full_client - small_client) * survivors / clients
        server += full_server - small_server
        up += survivors * (dimension - run_dimension) * quantizer.dtype.itemsize
        how = f"extrapolated from d={run_dimension:,}"
    name = f"secagg+ {prg}" + (f", {dropout:.0%} drop" if dropout else "")
    down += clients * dimension * 4  # the float32 model every client downloads, as in the plain round
    return Row(clients, dimension, name, client, server, up / clients, down / clients, how)


def flower_round(python: str, clients: int, dimension: int) -> Row | None:
    degree = default_degree(clients)
    command = [python, str(FLOWER_SCRIPT), "--clients", str(clients), "--dimension", str(dimension)]
    command += ["--degree", str(degree), "--threshold", str(default_threshold(degree))]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        print(f"Flower run failed: {result.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    data = json.loads(result.stdout)
    client = data["client"]
    seconds = client["advertise"] + client["share_keys"] + client["masked_input"]
    up = client["key_bytes"] + client["share_bytes"] + client["masked_bytes"]
    return Row(
        clients,
        dimension,
        "flower secagg+ primitives",
        seconds,
        data["server_seconds"],
        up,
        float("nan"),
        "one client timed; server scaled",
    )


def print_rows(rows: list[Row]) -> None:
    """One line per method; ratios against plain aggregation of the same cohort and dimension."""
    columns = (
        "clients",
        "params",
        "method",
        "client s",
        "server s",
        "x plain",
        "MB up",
        "x plain",
        "KB down",
        "how",
    )
    print("{:>7} {:>11} {:<28} {:>9} {:>9} {:>8} {:>8} {:>7} {:>8}  {}".format(*columns))
    plain: dict[tuple[int, int], Row] = {}
    for row in rows:
        if row.method == "plain":
            plain[(row.clients, row.dimension)] = row
        base = plain[(row.clients, row.dimension)]
        print(
            f"{row.clients:>7} {row.dimension:>11,} {row.method:<28} {row.client_seconds:>9.3f}"
            f" {row.server_seconds:>9.2f} {row.server_seconds / base.server_seconds:>8.1f}"
            f" {row.bytes_up / 1e6:>8.2f} {row.bytes_up / base.bytes_up:>7.2f} {row.bytes_down / 1e3:>8.1f}"
            f"  {row.how}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--dimensions", type=int, nargs="+", default=[1_000_000, RESNET18])
    parser.add_argument("--prg", nargs="+", default=["chacha20", "aes-ctr"], choices=["chacha20", "aes-ctr"])
    parser.add_argument(
        "--dropout", type=float, default=0.05, help="also run with this masked-input dropout rate"
    )
    parser.add_argument("--budget-gb", type=float, default=10.0, help="largest keystream run end to end")
    parser.add_argument(
        "--flower-python", help="an interpreter with flwr installed (default: this one, if it has flwr)"
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    flower = args.flower_python
    if flower is None:
        try:
            import flwr  # noqa: F401

            flower = sys.executable
        except ImportError:
            print("Flower is not installed here; pass --flower-python to compare with it", file=sys.stderr)
    rows: list[Row] = []
    for clients in args.clients:
        for dimension in args.dimensions:
            rows.append(plain_round(clients, dimension))
            for prg in args.prg:
                rows.append(secagg_round(clients, dimension, prg, 0.0, args.budget_gb))
            if args.dropout:
                rows.append(secagg_round(clients, dimension, args.prg[0], args.dropout, args.budget_gb))
            if flower:
                row = flower_round(flower, clients, dimension)
                rows += [row] if row else []
            print(f"done: {clients} clients x {dimension:,}", file=sys.stderr, flush=True)
    print_rows(rows)
    if args.json:
        args.json.write_text(json.dumps([row.__dict__ for row in rows], indent=1))


if __name__ == "__main__":
    main()
