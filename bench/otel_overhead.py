"""queue_otel's overhead: the same workload with the instrumentation off and on.

    python -m bench.otel_overhead [--jobs 5000] [--rounds 5] [--concurrency 10]
                                  [--work-ms 0,1,5]

A private redis-server is started for the run. Each round enqueues ``--jobs`` jobs one by
one, then processes them with one worker; the modes alternate within each round so that
drift of the machine hits them alike. Each value of ``--work-ms`` is a workload: jobs
that spend that many milliseconds of CPU (0: no-op jobs, the worst case for relative
overhead).

"On" means the whole instrumentation: every trace sampled (ALWAYS_ON), spans through a
BatchSpanProcessor into an exporter that drops them, metrics through a reader collecting
every second, trace ids in logs. For no-op jobs three more modes run: "sampled" (the
same with a parent-based 1% ratio sampler) and "metrics" (the tracing hook unregistered),
whose difference is what tracing costs a job whose trace is not sampled, and "clock":
hooks that do nothing, called and clocked as queue_otel's are, whose figure (what
clocking costs by itself) is taken off the hooks' figures. CPU is the whole
process's (``time.process_time``: every thread, the exporters' included) per job or per
enqueue call, less the jobs' own work. The figures are the medians over rounds, with their
spread ((max - min) / median); the issue's targets are printed against them, and
everything is written to bench/results/otel_overhead.json. Beside them: the CPU measured
where the instrumentation spends it (its hooks and the SDK's export threads, see
bench/cpu_attribution.py, steadier than the difference on a shared machine), and the
floor: what the SDK alone needs to record the same spans (bench/sdk_floor.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased

from bench.cpu_attribution import ExportThreads, HookClock, empty_like
from bench.peers._otel import DropMetrics, DropSpans
from bench.sdk_floor import sdk_floor
from queue_core import Queue, Worker, register_hook, unregister_hook
from queue_core.testing import RedisServer
from queue_otel import QueueInstrumentor
from queue_otel.metrics import MetricsHook
from queue_otel.tracing import TracingHook

RESULTS = Path(__file__).parent / "results" / "otel_overhead.json"


def dropping_providers(
    spans: SpanExporter, metrics: MetricExporter
) -> tuple[TracerProvider, MeterProvider]:
    """The "on" set-up of every overhead figure: every trace sampled, spans through a
    BatchSpanProcessor into ``spans``, metrics read every second into ``metrics``."""
    tracer_provider = TracerProvider(sampler=ALWAYS_ON)
    tracer_provider.add_span_processor(BatchSpanProcessor(spans))
    meter_provider = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(metrics, export_interval_millis=1000)]
    )
    return tracer_provider, meter_provider


async def one_round(
    url: str,
    jobs: int,
    concurrency: int,
    work_ms: float = 0,
    clocks: tuple[HookClock, ExportThreads] | None = None,
) -> dict[str, float]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    latencies: list[float] = []
    attributed: dict[str, float] = {}

    def attribute(phase: str) -> None:
        """The instrumentation's own CPU in this phase, per job (see bench/cpu_attribution)."""
        if clocks is None:
            return
        spent = clocks[0].take()
        attributed[f"{phase}_hooks_ms"] = sum(spent.values()) / jobs / 1e6
        attributed[f"{phase}_tracing_ms"] = spent.get("TracingHook", 0) / jobs / 1e6
        attributed[f"{phase}_export_ms"] = clocks[1].take() / jobs / 1e6

    async with Queue(name, redis=url) as queue:
        if clocks is not None:
            clocks[0].take(), clocks[1].take()
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(jobs):
            t = time.perf_counter()
            await queue.add("noop", i)
            latencies.append(time.perf_counter() - t)
        enqueue_s = time.perf_counter() - started
        enqueue_cpu = time.process_time() - cpu
        attribute("enqueue")
        done = asyncio.Event()
        count = 0

        async def noop(job: Any) -> None:
            nonlocal count
            if work_ms:
                until = time.perf_counter() + work_ms / 1000
                while time.perf_counter() < until:
                    pass
            count += 1
            if count == jobs:
                done.set()

        started, cpu = time.perf_counter(), time.process_time()
        async with Worker(name, noop, redis=url, concurrency=concurrency):
            await done.wait()
        process_s = time.perf_counter() - started
        # The whole process's CPU (every thread: the span processor's and the metric
        # reader's included), less the jobs' own busy loop.
        process_cpu = time.process_time() - cpu - jobs * work_ms / 1000
        attribute("process")
        await queue.client.delete(*queue.keys.all())
    latencies.sort()
    return {
        "enqueue_per_s": jobs / enqueue_s,
        "enqueue_p50_ms": latencies[len(latencies) // 2] * 1000,
        "enqueue_p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "process_per_s": jobs / process_s,
        "enqueue_cpu_ms": enqueue_cpu / jobs * 1000,
        "process_cpu_ms": process_cpu / jobs * 1000,
        **attributed,
    }


# The targets (added worker CPU per job and per enqueue, in ms; throughput loss).
TARGETS = {
    "process_cpu_ms": 0.10,
    "enqueue_cpu_ms": 0.06,
    "loss_1ms": 0.10,
    "loss_5ms": 0.03,
    "sampled_out_span_ms": 0.01,
}
MODES = {
    "off": "queue_otel off",
    "clock": "queue_otel off, hooks that do nothing, called and clocked as queue_otel's are",
    "on": "everything on, every trace sampled",
    "sampled": "everything on, parent-based 1% ratio sampler",
    "metrics": "metrics only (the tracing hook unregistered)",
}


def _instrument(mode: str, providers: dict[str, Any]) -> QueueInstrumentor | None:
    if mode in ("off", "clock"):
        return None
    instrumentor = QueueInstrumentor()
    instrumentor.instrument(
        tracer_provider=providers["sampled" if mode == "sampled" else "on"],
        meter_provider=providers["meter"],
        export_logs=False,
    )
    if mode == "metrics":
        unregister_hook(instrumentor._hooks[0])  # the TracingHook, registered first
    return instrumentor


def run_mode(
    url: str, mode: str, providers: dict[str, Any], *, jobs: int, concurrency: int, work: float
) -> dict[str, float]:
    """One round of one mode, its hooks clocked."""
    instrumentor = _instrument(mode, providers)
    clocks, empty = None, []
    if instrumentor is not None:
        clocks = (HookClock(instrumentor._hooks), ExportThreads())
    elif mode == "clock":
        empty = empty_like([TracingHook, MetricsHook])
        for hook in empty:
            register_hook(hook)
        clocks = (HookClock(empty), ExportThreads())
    try:
        return asyncio.run(one_round(url, jobs, concurrency, work, clocks))
    finally:
        if clocks is not None:
            clocks[0].close()  # the metrics hook is the same object next round
        if instrumentor is not None:
            instrumentor.uninstrument()
        for hook in empty:
            unregister_hook(hook)


Table = dict[str, dict[str, float]]


def summarize(
    runs: dict[str, list[dict[str, float]]], workloads: list[float]
) -> tuple[
    dict[str, dict[str, float]], dict[str, dict[str, float]], dict[str, Any], dict[str, float]
]:
    """Medians, spreads, throughput losses, and the figures that the targets are read on."""
    medians = {
        name: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        for name, rounds in runs.items()
    }
    spread = {
        name: {
            key: (max(r[key] for r in rounds) - min(r[key] for r in rounds)) / medians[name][key]
            for key in rounds[0]
            if medians[name][key]
        }
        for name, rounds in runs.items()
    }
    loss = {
        f"{work:g}ms": {
            key: 1 - medians[f"on/{work:g}ms"][key] / medians[f"off/{work:g}ms"][key]
            for key in ("enqueue_per_s", "process_per_s")
        }
        for work in workloads
    }
    off0, on0 = medians.get("off/0ms"), medians.get("on/0ms")
    # What clocking hooks costs by itself (hooks that do nothing, clocked alike), per
    # phase and for the tracing hook alone: taken off the hooks' figures below.
    clock = medians.get("clock/0ms", {})
    floor = {key: clock.get(key, 0.0) for key in (
        "process_hooks_ms", "enqueue_hooks_ms", "process_tracing_ms")}  # fmt: skip
    figures: dict[str, float] = {f"clock_{key}": value for key, value in floor.items()}
    if off0 and on0:
        # Judged on the CPU measured where the instrumentation spends it (its hooks, on
        # the job's path, plus the SDK's export threads): see bench/cpu_attribution.py.
        for phase in ("process", "enqueue"):
            clocked = on0[f"{phase}_hooks_ms"] + on0[f"{phase}_export_ms"]
            figures[f"{phase}_cpu_ms_as_clocked"] = clocked
            figures[f"{phase}_cpu_ms"] = clocked - floor[f"{phase}_hooks_ms"]
        figures["enqueue_p99_ms_on"] = on0["enqueue_p99_ms"]
        # The same by difference of whole-process CPU, off against on (noisier: the
        # machine's drift between runs is in it, and so is queue_core's cost of carrying
        # the trace headers).
        figures["process_cpu_ms_by_difference"] = on0["process_cpu_ms"] - off0["process_cpu_ms"]
        figures["enqueue_cpu_ms_by_difference"] = on0["enqueue_cpu_ms"] - off0["enqueue_cpu_ms"]
    if "sampled/0ms" in medians and "metrics/0ms" in medians:
        sampled, metrics_only = medians["sampled/0ms"], medians["metrics/0ms"]
        # The span part when 99% of traces are not sampled: the tracing hook's own CPU
        # per processed job; by difference, the sampled mode less the metrics-only mode.
        figures["sampled_out_span_ms_as_clocked"] = sampled["process_tracing_ms"]
        figures["sampled_out_span_ms"] = sampled["process_tracing_ms"] - floor["process_tracing_ms"]
        figures["sampled_out_span_ms_by_difference"] = (
            sampled["process_cpu_ms"] - metrics_only["process_cpu_ms"]
        )
    for work in (1.0, 5.0):
        if work in workloads:
            figures[f"loss_{work:g}ms"] = loss[f"{work:g}ms"]["process_per_s"]
    return medians, spread, loss, figures


def print_report(medians: Table, spread: Table, figures: dict[str, float]) -> None:
    for name, values in medians.items():
        print(f"\n{name:24} {'median':>10} {'spread':>8}")
        for key, value in values.items():
            print(f"  {key:22} {value:10.3f} {spread[name].get(key, 0):8.1%}")
    print("\ntargets (added by queue_otel, measured in its hooks and export threads, less")
    print("what clocking empty hooks alike costs; medians over rounds; by difference: on")
    print("less off, whole process):")
    for key, target in TARGETS.items():
        if key in figures:
            value = figures[key]
            verdict = "met" if value <= target else "NOT met"
            shown = f"{value:.1%}" if key.startswith("loss") else f"{value:.4f} ms"
            limit = f"{target:.0%}" if key.startswith("loss") else f"{target} ms"
            print(f"  {key:22} {shown:>12}  (target <= {limit}: {verdict})")
            if f"{key}_as_clocked" in figures:
                clocked = figures[f"{key}_as_clocked"]
                print(f"  {'  as clocked':22} {clocked:9.4f} ms, less the clock's own cost")
            if f"{key}_by_difference" in figures:
                print(f"  {'  by difference':22} {figures[f'{key}_by_difference']:9.4f} ms")
            floor_key = key.replace("_cpu_ms", "_sdk_floor_ms")
            if key.endswith("_cpu_ms") and floor_key in figures:
                print(f"  {'  SDK floor, same spans':22} {figures[floor_key]:9.4f} ms")
            if key == "process_cpu_ms" and "process_span_sdk_floor_ms" in figures:
                floor = figures["process_span_sdk_floor_ms"]
                print(f"  {'  of it the process span':22} {floor:9.4f} ms")
    if "enqueue_p99_ms_on" in figures:
        print(f"  traced enqueue p99      {figures['enqueue_p99_ms_on']:.3f} ms (target < 1 ms)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--work-ms", default="0,1,5", help="comma-separated CPU ms per job")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where the JSON goes")
    args = parser.parse_args(argv)
    workloads = [float(x) for x in args.work_ms.split(",")]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    spans, metrics = DropSpans(), DropMetrics()
    tracer_provider, meter_provider = dropping_providers(spans, metrics)
    sampled_provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.01)))
    sampled_provider.add_span_processor(BatchSpanProcessor(spans))
    providers = {"on": tracer_provider, "sampled": sampled_provider, "meter": meter_provider}
    # Every mode for no-op jobs (where the overhead shows most); off and on for the others.
    plan = [(work, mode) for work in workloads for mode in (MODES if not work else ("off", "on"))]
    runs: dict[str, list[dict[str, float]]] = {f"{mode}/{work:g}ms": [] for work, mode in plan}
    with RedisServer() as redis:
        print(f"Redis: {redis.description}", file=sys.stderr)
        asyncio.run(one_round(redis.url, min(args.jobs, 500), args.concurrency))  # warm-up
        for _ in range(args.rounds):
            for work, mode in plan:
                # Fewer jobs when each one works, so that a round takes a similar time.
                jobs = args.jobs if not work else max(200, int(args.jobs / (1 + work * 3)))
                result = run_mode(
                    redis.url, mode, providers, jobs=jobs, concurrency=args.concurrency, work=work
                )
                runs[f"{mode}/{work:g}ms"].append(result)
        floor = sdk_floor(redis.url, one_round)
    tracer_provider.shutdown()
    sampled_provider.shutdown()
    meter_provider.shutdown()
    if spans.exported == 0 or metrics.exports == 0:
        print("error: the instrumentation exported nothing", file=sys.stderr)
        return 1

    medians, spread, loss, figures = summarize(runs, workloads)
    figures.update(floor)
    command = "python -m bench.otel_overhead " + " ".join(argv or sys.argv[1:])
    report = {
        "command": command.strip(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "settings": {**vars(args), "output": str(args.output)},
        "modes": MODES,
        "spans_exported": spans.exported,
        "targets": TARGETS,
        "figures": figures,
        "medians": medians,
        "spread": spread,
        "throughput_loss": loss,
        "rounds": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print_report(medians, spread, figures)
    print(f"\nwritten to {args.output}\nreproduce: {report['command']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
