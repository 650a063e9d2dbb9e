"""bench/otel_overhead.py end to end on a tiny workload, and its CPU attribution."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bench.cpu_attribution import ExportThreads, HookClock, empty_like
from queue_core import EnqueueEvent, Hook, JobEvent, Queue, register_hook, unregister_hook

ROOT = Path(__file__).resolve().parents[1]


def _burn(seconds: float) -> None:
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


class Busy(Hook):
    """Spends a known CPU time on each enqueue, before and after it."""

    @contextmanager
    def around_enqueue(self, event: EnqueueEvent) -> Iterator[None]:
        _burn(0.002)
        yield
        _burn(0.002)

    def on_completed(self, event: JobEvent) -> None:  # never called here
        _burn(1)


async def add_five(redis_url: str, name: str) -> None:
    """Five enqueue calls, each through the registered hooks' around_enqueue."""
    async with Queue(name, redis=redis_url) as queue:
        for i in range(5):
            await queue.add("x", i)


async def test_hook_clock_counts_the_cpu_spent_in_hooks(redis_url: str) -> None:
    hook = Busy()
    clock = HookClock([hook])
    register_hook(hook)
    try:
        await add_five(redis_url, "clocked")
    finally:
        unregister_hook(hook)
    spent = clock.take()
    assert 5 * 0.004e9 <= spent["Busy"] < 5 * 0.004e9 * 3
    assert clock.take() == {}  # taken: counting starts again


async def test_a_hook_clocked_again_is_counted_once(redis_url: str) -> None:
    # queue_otel keeps its metrics hook across instrument() calls, so the overhead bench
    # clocks the same hook object round after round: each round must count it once.
    hook = Busy()
    register_hook(hook)
    try:
        rounds = []
        for _ in range(3):
            with HookClock([hook]) as clock:
                with pytest.raises(RuntimeError, match="clocked already"):
                    HookClock([hook])
                await add_five(redis_url, "clocked-again")
                rounds.append(clock.take()["Busy"])
            assert "around_enqueue" not in vars(hook)  # the class's own method again
    finally:
        unregister_hook(hook)
    for spent in rounds:
        assert 5 * 0.004e9 <= spent < 5 * 0.004e9 * 1.5, rounds


async def test_empty_hooks_are_called_and_clocked_as_the_ones_they_copy(redis_url: str) -> None:
    (empty,) = empty_like([Busy])
    assert type(empty).__name__ == "Busy"  # counted under the same name
    assert {"around_enqueue", "on_completed"} <= set(vars(type(empty)))
    clock = HookClock([empty])
    register_hook(empty)
    try:
        await add_five(redis_url, "clocked-empty")
    finally:
        clock.close()
        unregister_hook(empty)
    spent = clock.take()["Busy"]
    assert 0 < spent < 5 * 0.004e9 / 10  # the clock's own cost, not Busy's work


def test_export_threads_are_read_by_name() -> None:
    import threading  # noqa: PLC0415

    threads = ExportThreads()
    threads.take()
    worker = threading.Thread(target=_burn, args=(0.05,), name="OtelTestThread")
    worker.start()
    worker.join(timeout=0.01)  # still running: its clock is read while it lives
    spent = threads.take()
    worker.join()
    assert spent > 0


def test_a_tiny_run_reports_every_target(tmp_path: Path) -> None:
    output = tmp_path / "overhead.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.otel_overhead", "--rounds", "1", "--jobs", "60",
         "--work-ms", "0", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(output.read_text())
    figures = report["figures"]
    for key in ("process_cpu_ms", "enqueue_cpu_ms", "sampled_out_span_ms"):
        assert figures[f"{key}_as_clocked"] > 0, key
        assert f"{key}_by_difference" in figures
    # The clock's own cost, measured on empty hooks in the same run, is taken off.
    floors = {
        "process_cpu_ms": "clock_process_hooks_ms",
        "enqueue_cpu_ms": "clock_enqueue_hooks_ms",
        "sampled_out_span_ms": "clock_process_tracing_ms",
    }
    for key, floor in floors.items():
        assert 0 < figures[floor] < figures[f"{key}_as_clocked"], key
        assert figures[key] == pytest.approx(figures[f"{key}_as_clocked"] - figures[floor])
    assert figures["process_sdk_floor_ms"] > 0 and figures["enqueue_sdk_floor_ms"] > 0
    assert figures["spans_per_job"] == 3  # send, process, job
    assert report["spans_exported"] > 0
    for key in ("process_cpu_ms", "enqueue_cpu_ms", "sampled_out_span_ms", "traced enqueue p99"):
        assert key in result.stdout
    assert "reproduce: python -m bench.otel_overhead --rounds 1" in result.stdout


def test_two_versions_are_compared_side_by_side(tmp_path: Path) -> None:
    output = tmp_path / "compare.json"
    result = subprocess.run(
        [sys.executable, "-m", "bench.otel_compare", str(ROOT), "--pairs", "1", "--rounds",
         "1", "--jobs", "40", "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(output.read_text())
    assert set(report["medians"]) == {"before", "now"}
    assert report["medians"]["now"]["process_cpu_ms"] > 0
    assert "now/before" in result.stdout and "on/0ms jobs/s" in result.stdout


def test_comparing_with_something_else_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.otel_compare", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "is not a checkout of this project" in result.stderr


def test_sampled_out_bench_prints_both_paths() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.sampled_out", "--jobs", "200", "--rounds", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = {line.strip().split("  ")[0]: line for line in done.stdout.splitlines()}
    for label in ("queue_otel's tracing hook", "the SDK's least, same span"):
        figure = float(lines[label].split()[-4])
        assert 0 < figure < 1000, lines[label]  # microseconds per attempt
    assert "reproduce: python -m bench.sampled_out --jobs 200 --rounds 2" in done.stdout


def test_hook_gap_bench_prints_both_paths_per_gap(capsys: pytest.CaptureFixture[str]) -> None:
    from bench import hook_gap  # noqa: PLC0415 - instruments this process while it runs

    assert hook_gap.main(["--jobs", "60", "--rounds", "1", "--gaps", "0,1"]) == 0
    out = capsys.readouterr().out
    rows = [line.split("|") for line in out.splitlines() if " ms | " in line]
    assert [row[1].strip() for row in rows] == ["0 ms", "1 ms"]
    for row in rows:
        ours, sdk = float(row[2]), float(row[4])
        assert 0 < ours < 10_000 and 0 < sdk < 10_000, row  # microseconds per attempt
    assert rows[0][3].strip() == "1.00x" and rows[0][5].strip() == "1.00x"
    assert "reproduce: python -m bench.hook_gap --jobs 60 --rounds 1 --gaps 0,1" in out
    from queue_core.hooks import GLOBAL_HOOKS  # noqa: PLC0415

    assert GLOBAL_HOOKS.all() == []  # uninstrumented again
