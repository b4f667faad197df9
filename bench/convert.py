"""Benchmark ``fedimage.conversion`` against an ml-flair ``prepare_dataset.py``-style baseline.

Usage::

    .venv/bin/python bench/convert.py                 # 3000 images per input set
    .venv/bin/python bench/convert.py --quick         # 200 images: a smoke run
    .venv/bin/python bench/convert.py --json out.json --profile --runs jpeg-1w

Two generated input sets (see ``bench/_photos.py``; cached under ``--workdir``):
``photos`` (camera-like JPEGs, 500x375 to 2048x1536) and ``flair256`` (256x256
JPEGs like FLAIR's small images). Each run converts one set in a fresh
subprocess, which times only the conversion (imports and start-up excluded) and
reports its peak RSS (``VmHWM`` of itself plus that of each child process it started;
``ru_maxrss`` of itself and ``RUSAGE_CHILDREN`` are kept in the JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _photos  # bench/ helper module, not part of the package

DEFAULT_IMAGES = 3000
QUICK_IMAGES = 200
IMAGE_SIZE = 256
RUNS: dict[str, dict[str, Any]] = {
    "baseline": {"tool": "baseline"},
    "jpeg-1w": {"tool": "fedimage", "storage": "jpeg", "workers": 1},
    "jpeg-2w": {"tool": "fedimage", "storage": "jpeg", "workers": 2},
    "raw-1w": {"tool": "fedimage", "storage": "raw", "workers": 1},
}
LABEL_DELIMITER = "|"
TARGET_SPEEDUP = 1.5
TARGET_SCALING = 1.8
TARGET_JPEG_FRACTION = 0.15
PROFILE_LINES = 25


# --- inside the subprocess ----------------------------------------------------------------


def _status_kib(pid: int | str, field: str) -> int:
    """A ``VmHWM``/``VmRSS`` value (KiB) from /proc/PID/status; 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class ChildRssSampler:
    """Samples the peak RSS (``VmHWM``) of this process's child processes in a thread.

    ``RUSAGE_CHILDREN``'s ``ru_maxrss`` is only the largest child, and Linux folds the
    parent's RSS at fork time into it (so even the ``uname -p`` that importing h5py
    runs shows up as a 35 MB child); ``VmHWM`` of a child counts only its own memory
    after ``exec``. A worker's last sample is at most ``interval`` before it exits.
    """

    def __init__(self, interval: float = 0.05):
        import threading

        self.interval = interval
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _children(self) -> list[int]:
        pids: list[int] = []
        try:
            for task in os.listdir("/proc/self/task"):
                with open(f"/proc/self/task/{task}/children", encoding="ascii") as handle:
                    pids.extend(int(pid) for pid in handle.read().split())
        except OSError:
            pass
        return pids

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for pid in self._children():
                self.peaks[pid] = max(self.peaks.get(pid, 0), _status_kib(pid, "VmHWM"))

    def __enter__(self) -> ChildRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def total_mb(self) -> float:
        """The sum of every child's peak RSS: an upper bound on their simultaneous total."""
        return sum(self.peaks.values()) / 1024


def manifest_users(manifest: Path) -> dict[str, list[dict[str, Any]]]:
    """The rows of a ``manifest.jsonl`` grouped by user, in first-seen order."""
    users: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with open(manifest, encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            users[row["user_id"]].append(row)
    return users


def flair_users(root: Path) -> dict[str, list[dict[str, Any]]]:
    """The rows of a raw FLAIR folder grouped by user, each with its ``image`` path (as ml-flair reads it)."""
    users: dict[str, list[dict[str, Any]]] = defaultdict(list)
    with open(root / "labels_and_metadata.json", encoding="utf-8") as handle:
        for row in json.load(handle):
            row["image"] = f"small_images/{row['image_id']}.jpg"
            users[row["user_id"]].append(row)
    return users


def run_baseline(manifest: Path, output: Path, resize: bool, size: int = IMAGE_SIZE) -> int:
    """Convert a ``manifest.jsonl`` like ml-flair's ``prepare_dataset.py``; see :func:`baseline_convert`."""
    return baseline_convert(manifest_users(manifest), manifest.parent, output, resize, size)


def baseline_convert(
    users: dict[str, list[dict[str, Any]]], root: Path, output: Path, resize: bool, size: int = IMAGE_SIZE
) -> int:
    """Convert like ml-flair's ``prepare_dataset.py``; returns the number of images written.

    One process; for each user: Pillow open, RGB, (for large inputs) a plain resize
    of the center square to ``size`` (no JPEG draft), ``np.asarray``, stack, and one
    uncompressed uint8 ``[N, size, size, 3]`` dataset per user group plus labels, in
    ``/{partition}/{user}`` (``train`` when rows have no partition).
    """
    from collections import Counter

    import h5py
    import numpy as np
    from PIL import Image

    label_counter: Counter[str] = Counter()
    fine_counter: Counter[str] = Counter()
    written = 0
    with h5py.File(output, "w") as h5file:
        for user_id, rows in users.items():
            images, image_ids, labels, fine = [], [], [], []
            for row in rows:
                image = Image.open(root / row["image"])
                if resize:
                    image = image.convert("RGB")
                    width, height = image.size
                    side = min(width, height)
                    left, top = (width - side) // 2, (height - side) // 2
                    image = image.crop((left, top, left + side, top + side)).resize((size, size))
                elif image.mode != "RGB":  # ml-flair's small images are all RGB already
                    image = image.convert("RGB")
                images.append(np.asarray(image))
                image_ids.append(str(row.get("image_id", row["image"])))
                labels.append(LABEL_DELIMITER.join(row["labels"]))
                fine.append(LABEL_DELIMITER.join(row.get("fine_grained_labels", ())))
                label_counter.update(row["labels"])
                fine_counter.update(row.get("fine_grained_labels", ()))
            group = f"/{rows[0].get('partition', 'train')}/{user_id}"
            h5file[f"{group}/labels"] = np.asarray(labels, dtype="S")
            h5file[f"{group}/fine_grained_labels"] = np.asarray(fine, dtype="S")
            h5file[f"{group}/image_ids"] = np.asarray(image_ids, dtype="S")
            h5file.create_dataset(f"{group}/images", data=np.stack(images))
            written += len(images)
        h5file["/metadata/label_counter"] = json.dumps(label_counter)
        h5file["/metadata/fine_grained_label_counter"] = json.dumps(fine_counter)
    return written


def run_fedimage(manifest: Path, output: Path, storage: str, workers: int) -> tuple[int, int]:
    """Convert with the public API; returns (written, rejected)."""
    from fedimage import ConvertOptions, ImageOptions, convert, open_source

    source = open_source(manifest)
    options = ConvertOptions(
        image=ImageOptions(storage=storage, size=IMAGE_SIZE), workers=workers, overwrite=True, quiet=True
    )
    report = convert(source, output, options)
    return report.written, report.rejected


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one conversion described by ``spec`` in this process and measure it."""
    import cProfile

    import h5py  # noqa: F401  (imported before timing: start-up is not conversion work)
    import numpy  # noqa: F401
    import PIL.Image  # noqa: F401

    import fedimage  # noqa: F401

    manifest, output = Path(spec["manifest"]), Path(spec["output"])
    work: Callable[[], tuple[int, int]]
    if spec["tool"] == "baseline":

        def work() -> tuple[int, int]:
            return run_baseline(manifest, output, resize=spec["resize"]), 0

    elif spec["tool"] == "baseline-flair":  # ``manifest`` is a raw FLAIR folder

        def work() -> tuple[int, int]:
            return baseline_convert(flair_users(manifest), manifest, output, resize=spec["resize"]), 0

    else:

        def work() -> tuple[int, int]:
            return run_fedimage(manifest, output, spec["storage"], spec["workers"])

    profiler = cProfile.Profile() if spec.get("profile") else None
    own_before = resource.getrusage(resource.RUSAGE_SELF)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with ChildRssSampler() as sampler:
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        written, rejected = work()
        if profiler is not None:
            profiler.disable()
        seconds = time.perf_counter() - started
    if profiler is not None:
        profiler.dump_stats(spec["profile"])
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime) - (
        own_before.ru_utime + own_before.ru_stime + children_before.ru_utime + children_before.ru_stime
    )
    hwm_main = _status_kib("self", "VmHWM")
    user = own.ru_utime + children.ru_utime - own_before.ru_utime - children_before.ru_utime
    system = own.ru_stime + children.ru_stime - own_before.ru_stime - children_before.ru_stime
    return {
        "cpu_user": user,
        "cpu_system": system,
        "seconds": seconds,
        "written": written,
        "rejected": rejected,
        # VmHWM when /proc has it (ru_maxrss also holds the launching parent's RSS at exec).
        "rss_main_mb": (hwm_main or own.ru_maxrss) / 1024,
        "rss_workers_mb": sampler.total_mb,
        "ru_maxrss_self_mb": own.ru_maxrss / 1024,  # Linux reports KiB
        "ru_maxrss_children_mb": children.ru_maxrss / 1024,  # largest reaped child
        "workers_seen": len(sampler.peaks),
        "cpu_seconds": cpu,
    }


# --- the driver ---------------------------------------------------------------------------


def spawn_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``spec`` in a fresh interpreter and return its measurements."""
    command = [sys.executable, str(Path(__file__).resolve()), "--run-one", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"run {spec['name']} failed ({done.returncode}):\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def warm_page_cache(input_set: _photos.InputSet) -> None:
    """Read every input once so no run pays for cold disk reads."""
    for path in sorted((input_set.root / "images").iterdir()):
        path.read_bytes()


def measure_set(
    input_set: _photos.InputSet, runs: list[str], workdir: Path, args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Run each conversion of ``runs`` on ``input_set``; results keyed by run name."""
    warm_page_cache(input_set)
    results: dict[str, dict[str, Any]] = {}
    for name in runs:
        output = workdir / f"out-{input_set.kind}-{name}.h5"
        spec = {
            **RUNS[name],
            "name": name,
            "manifest": str(input_set.manifest),
            "output": str(output),
            "resize": input_set.kind != "flair256",
        }
        if args.profile:
            spec["profile"] = str(workdir / f"profile-{input_set.kind}-{name}.prof")
        if not args.quiet:
            print(f"  {input_set.kind}: {name} ...", end="", flush=True, file=sys.stderr)
        attempts = sorted((spawn_run(spec) for _ in range(args.repeat)), key=lambda run: run["seconds"])
        result = attempts[len(attempts) // 2]  # the median by time (the slower middle one of an even count)
        result["all_seconds"] = [run["seconds"] for run in attempts]
        result["store_mb"] = output.stat().st_size / 1e6
        result["images_per_second"] = result["written"] / result["seconds"]
        result["peak_rss_mb"] = result["rss_main_mb"] + result["rss_workers_mb"]
        if not args.quiet:
            print(f" {result['seconds']:.1f} s", file=sys.stderr)
        if result["written"] != input_set.images or result["rejected"]:
            print(
                f"  warning: {name} wrote {result['written']} of {input_set.images} images "
                f"({result['rejected']} rejected)",
                file=sys.stderr,
            )
        if not args.keep_stores:
            output.unlink()
            Path(str(output)[: -len(".h5")] + ".rejects.jsonl").unlink(missing_ok=True)
        if args.profile:
            result["profile"] = spec["profile"]
        results[name] = result
    return results


def summarize(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """The ratios the targets are stated in (None when a run needed for one is missing)."""

    def rate(name: str) -> float | None:
        return results[name]["images_per_second"] if name in results else None

    def ratio(top: float | None, bottom: float | None) -> float | None:
        return None if top is None or bottom is None else top / bottom

    jpeg = results.get("jpeg-1w") or results.get("jpeg-2w")
    raw = results.get("raw-1w")
    return {
        "jpeg_1w_vs_baseline": ratio(rate("jpeg-1w"), rate("baseline")),
        "jpeg_2w_vs_baseline": ratio(rate("jpeg-2w"), rate("baseline")),
        "raw_1w_vs_baseline": ratio(rate("raw-1w"), rate("baseline")),
        "scaling_2w_vs_1w": ratio(rate("jpeg-2w"), rate("jpeg-1w")),
        "jpeg_store_fraction_of_raw": ratio(jpeg and jpeg["store_mb"], raw and raw["store_mb"]),
    }


def print_table(input_set: _photos.InputSet, results: dict[str, dict[str, Any]], profiled: bool) -> None:
    """The per-set results table, then each target with its measured value."""
    seconds = input_set.generated_seconds
    cached = "cached" if seconds == 0 else f"generated in {seconds:.0f} s"
    print(
        f"\n{input_set.kind}: {input_set.images} images, {input_set.users} users, "
        f"{input_set.total_bytes / 1e6:.1f} MB of JPEG input ({cached})"
        + ("  [PROFILED: timings include cProfile overhead]" if profiled else "")
    )
    baseline = results.get("baseline")
    header = (
        f"{'run':<10} {'images/s':>9} {'vs base':>8} {'seconds':>8} {'CPU s':>7} "
        f"{'peak RSS MB':>12} {'(main+wkr)':>12} {'store MB':>9}"
    )
    print(header)
    print("-" * len(header))
    for name, result in results.items():
        speedup = f"{result['images_per_second'] / baseline['images_per_second']:.2f}x" if baseline else "-"
        split_rss = f"({result['rss_main_mb']:.0f}+{result['rss_workers_mb']:.0f})"
        print(
            f"{name:<10} {result['images_per_second']:>9.1f} {speedup:>8} {result['seconds']:>8.2f} "
            f"{result['cpu_seconds']:>7.1f} {result['peak_rss_mb']:>12.0f} {split_rss:>12} "
            f"{result['store_mb']:>9.1f}"
        )
    summary = summarize(results)
    print("targets:")
    checks = (
        ("fedimage jpeg 1 worker / baseline", "jpeg_1w_vs_baseline", "x", TARGET_SPEEDUP, ">="),
        ("fedimage jpeg 2 workers / baseline", "jpeg_2w_vs_baseline", "x", None, ""),
        ("fedimage raw 1 worker / baseline", "raw_1w_vs_baseline", "x", None, ""),
        ("scaling jpeg 2 workers / 1 worker", "scaling_2w_vs_1w", "x", TARGET_SCALING, ">="),
        ("jpeg store / raw store", "jpeg_store_fraction_of_raw", "%", TARGET_JPEG_FRACTION, "<="),
    )
    for label, key, unit, target, relation in checks:
        value = summary[key]
        if value is None:
            continue
        shown = f"{value * 100:.1f}%" if unit == "%" else f"{value:.2f}x"
        if target is None:
            print(f"  {label:<36} {shown:>8}")
            continue
        wanted = f"{target * 100:.0f}%" if unit == "%" else f"{target:.1f}x"
        ok = value >= target if relation == ">=" else value <= target
        print(f"  {label:<36} {shown:>8}   target {relation} {wanted:<5} {'PASS' if ok else 'MISS'}")


def print_profile(path: str, lines: int = PROFILE_LINES) -> None:
    """The top functions of a cProfile dump by own time."""
    import pstats

    print(f"\nprofile {path} (top {lines} by tottime):")
    pstats.Stats(path, stream=sys.stdout).sort_stats("tottime").print_stats(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, help=f"images per input set (default {DEFAULT_IMAGES})")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_IMAGES} images per set")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fedimage-bench"), help="cache and outputs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated inputs")
    parser.add_argument(
        "--sets", default=",".join(_photos.SET_KINDS), help="comma-separated input sets (photos,flair256)"
    )
    parser.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated runs ({','.join(RUNS)})")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each conversion; the median is shown")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes generating inputs")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--keep-stores", action="store_true", help="keep the output stores in --workdir")
    parser.add_argument(
        "--profile", action="store_true", help="run every conversion under cProfile; print top functions"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--run-one", help=argparse.SUPPRESS)  # internal: one measured run (JSON spec)
    args = parser.parse_args(argv)
    if args.images is None:
        args.images = QUICK_IMAGES if args.quick else DEFAULT_IMAGES
    if args.images < 1:
        parser.error("--images must be at least 1")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.sets = [kind.strip() for kind in args.sets.split(",") if kind.strip()]
    args.runs = [name.strip() for name in args.runs.split(",") if name.strip()]
    for kind in args.sets:
        if kind not in _photos.SET_KINDS:
            parser.error(f"unknown input set {kind!r}; expected one of {', '.join(_photos.SET_KINDS)}")
    for name in args.runs:
        if name not in RUNS:
            parser.error(f"unknown run {name!r}; expected one of {', '.join(RUNS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_one:
        print(json.dumps(run_one(json.loads(args.run_one))))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "images": args.images,
        "seed": args.seed,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "profiled": args.profile,
        "targets": {
            "jpeg_1w_vs_baseline_min": TARGET_SPEEDUP,
            "scaling_2w_vs_1w_min": TARGET_SCALING,
            "jpeg_store_fraction_of_raw_max": TARGET_JPEG_FRACTION,
        },
        "sets": {},
    }
    for kind in args.sets:
        if not args.quiet:
            print(f"preparing {kind} ({args.images} images) ...", file=sys.stderr)
        input_set = _photos.ensure_set(args.workdir, kind, args.images, args.seed, args.jobs)
        results = measure_set(input_set, args.runs, args.workdir, args)
        print_table(input_set, results, args.profile)
        if args.profile:
            for result in results.values():
                print_profile(result["profile"])
        report["sets"][kind] = {
            "input": {
                "root": str(input_set.root),
                "images": input_set.images,
                "users": input_set.users,
                "input_mb": input_set.total_bytes / 1e6,
                "generated_seconds": input_set.generated_seconds,
            },
            "runs": results,
            "summary": summarize(results),
        }
        sys.stdout.flush()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
