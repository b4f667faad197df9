"""Peak memory of a conversion against the number of images: it should stay flat.

Usage::

    .venv/bin/python bench/rss.py                          # 5k, 20k, 80k FLAIR-shaped 256 px images
    .venv/bin/python bench/rss.py --repeat 3               # median of 3 runs (peaks vary by ~20 MB)
    .venv/bin/python bench/rss.py --sizes 2000,8000 --source parquet --workers 2

Each size converts a FLAIR-shaped set (``_flair_shaped.py``, raw folder or Parquet) in a
fresh interpreter; the peak RSS is ``ru_maxrss`` of that child as ``os.wait4`` reports it
(the child and the workers it waited for; Linux reports the largest of them, in KiB). The
child also reports its own ``VmHWM``. The driver imports nothing heavy, so the child's
figure is not inflated by a large parent at fork.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _flair_shaped  # bench/ helper module

CHILD = """
import json, sys, time
from fedimage import ConvertOptions, ImageOptions, convert, open_source
source, output, workers, storage = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
started = time.perf_counter()
options = ConvertOptions(image=ImageOptions(storage=storage), workers=workers, overwrite=True, quiet=True)
report = convert(open_source(source), output, options)
seconds = time.perf_counter() - started
hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({"written": report.written, "seconds": seconds, "vmhwm_mb": hwm / 1024}))
"""


def measure(source: Path, output: Path, workers: int, storage: str = "jpeg") -> dict[str, float]:
    """Convert ``source`` in a fresh interpreter; its result plus ``ru_maxrss`` from ``wait4``."""
    command = [sys.executable, "-c", CHILD, str(source), str(output), str(workers), storage]
    with tempfile.TemporaryFile(mode="w+") as errors:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True)
        out = child.stdout.read() if child.stdout else ""  # EOF when the child exits
        _, status, usage = os.wait4(child.pid, 0)  # reap it here to get its own rusage
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.stdout:
            child.stdout.close()
        if child.returncode != 0:
            errors.seek(0)
            raise RuntimeError(f"conversion of {source} failed ({child.returncode}):\n{errors.read()}")
    result = json.loads(out.strip().splitlines()[-1])
    result["ru_maxrss_mb"] = usage.ru_maxrss / 1024
    output.unlink()
    Path(str(output)[: -len(".h5")] + ".rejects.jsonl").unlink(missing_ok=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="5000,20000,80000", help="comma-separated image counts")
    parser.add_argument("--source", choices=("folder", "parquet"), default="folder")
    parser.add_argument("--content", choices=("flair256", "photos"), default="flair256")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--storage", choices=("jpeg", "raw"), default="jpeg")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each size; the median run is shown")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes generating inputs")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/fedimage-bench"))
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    args.workdir.mkdir(parents=True, exist_ok=True)
    print(f"{args.content} from the {args.source}, {args.workers} worker(s), {args.storage} store")
    print(f"{'images':>8}{'users':>8}{'max user':>10}{'seconds':>9}{'ru_maxrss MB':>14}{'VmHWM MB':>10}")
    for size in sizes:
        flair_set = _flair_shaped.ensure_flair_set(args.workdir, args.content, size, args.seed, args.jobs)
        rows = json.loads(flair_set.metadata.read_text())
        per_user: dict[str, int] = {}
        for row in rows:
            per_user[row["user_id"]] = per_user.get(row["user_id"], 0) + 1
        del rows
        source = flair_set.root if args.source == "folder" else flair_set.parquet
        output = args.workdir / f"out-rss-{size}.h5"
        runs = [measure(source, output, args.workers, args.storage) for _ in range(args.repeat)]
        peaks = sorted(run["ru_maxrss_mb"] for run in runs)
        result = sorted(runs, key=lambda run: run["ru_maxrss_mb"])[len(runs) // 2]  # the median run
        print(
            f"{size:>8}{flair_set.users:>8}{max(per_user.values()):>10}{result['seconds']:>9.1f}"
            f"{result['ru_maxrss_mb']:>14.0f}{result['vmhwm_mb']:>10.0f}"
            f"{'  (' + ', '.join(f'{peak:.0f}' for peak in peaks) + ')' if len(runs) > 1 else ''}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
