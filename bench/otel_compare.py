"""queue_otel's overhead, two versions side by side in one run: before a change and now.

    git archive <commit> --prefix=before/ | tar -x -C /tmp
    python -m bench.otel_compare /tmp/before [--pairs 3] [--rounds 2] [--jobs 2000]

``bench/otel_overhead.py`` runs ``--pairs`` times for each version, alternating (before,
now, before, now...), so that the machine's drift hits both alike; each run is a child
process with this checkout's harness (a copy of ``bench/``) and the other version's
``queue_core`` and ``queue_otel`` first on its path (the files it imported are checked).
Printed: each figure's median over the pairs for both versions and now / before; written
to bench/results/otel_compare.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "otel_compare.json"
FIGURES = (
    "process_cpu_ms", "enqueue_cpu_ms", "sampled_out_span_ms",
    "process_cpu_ms_by_difference", "enqueue_cpu_ms_by_difference",
    "sampled_out_span_ms_by_difference", "enqueue_p99_ms_on",
)  # fmt: skip
THROUGHPUT = ("off/0ms", "on/0ms", "sampled/0ms")


def _run(tree: Path, harness: Path, args: argparse.Namespace, output: Path) -> dict[str, Any]:
    """One overhead run of the version in ``tree``, with this checkout's harness."""
    check = "import queue_core, queue_otel; print(queue_core.__file__, queue_otel.__file__)"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    found = subprocess.run(  # noqa: S603
        [sys.executable, "-c", check], cwd=harness, env=env,
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    if not all(Path(f).resolve().is_relative_to(tree.resolve()) for f in found):
        raise SystemExit(f"error: {tree} was not the version imported: {found}")
    argv = [sys.executable, "-m", "bench.otel_overhead", "--rounds", str(args.rounds),
            "--jobs", str(args.jobs), "--work-ms", "0", "--output", str(output)]  # fmt: skip
    done = subprocess.run(argv, cwd=harness, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise SystemExit(f"error: the run of {tree} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(output.read_text())
    return result


def _figures(run: dict[str, Any]) -> dict[str, float]:
    figures = {key: float(run["figures"][key]) for key in FIGURES}
    for mode in THROUGHPUT:
        figures[f"{mode} jobs/s"] = float(run["medians"][mode]["process_per_s"])
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("before", type=Path, help="a checkout of the version to compare with")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not (args.before / "queue_otel" / "__init__.py").is_file():
        parser.error(f"{args.before} is not a checkout of this project (no queue_otel/)")
    versions = {"before": args.before, "now": ROOT}
    runs: dict[str, list[dict[str, float]]] = {"before": [], "now": []}
    with tempfile.TemporaryDirectory() as temporary:
        harness = Path(temporary)
        ignore = shutil.ignore_patterns(".venvs", "results", "__pycache__")
        shutil.copytree(ROOT / "bench", harness / "bench", ignore=ignore)
        for pair in range(args.pairs):
            for label, tree in versions.items():
                output = harness / f"{label}_{pair}.json"
                runs[label].append(_figures(_run(tree, harness, args, output)))
                print(f"pair {pair + 1}/{args.pairs}: {label} done", file=sys.stderr)
    medians = {
        label: {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        for label, rows in runs.items()
    }
    print(f"\n{'figure (median over pairs)':38} {'before':>10} {'now':>10} {'now/before':>11}")
    for key, before in medians["before"].items():
        now = medians["now"][key]
        ratio = f"{now / before:.2f}x" if before else "-"
        print(f"{key:38} {before:10.4f} {now:10.4f} {ratio:>11}")
    command = "python -m bench.otel_compare " + " ".join(argv or sys.argv[1:])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "command": command.strip(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "before": str(args.before), "medians": medians, "runs": runs,
    }, indent=2) + "\n")  # fmt: skip
    print(f"\nwritten to {args.output}\nreproduce: {command.strip()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
