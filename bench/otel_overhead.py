"""queue_otel's overhead: the same workload with the instrumentation off and on.

    python -m bench.otel_overhead [--jobs 5000] [--rounds 5] [--concurrency 10]
                                  [--work-ms 0,1]

A private redis-server is started for the run. Each round enqueues ``--jobs`` jobs one by
one, then processes them with one worker; rounds alternate off/on so that drift of the
machine hits both alike. Each value of ``--work-ms`` is a workload: jobs that spend that
many milliseconds of CPU (0: no-op jobs, the worst case for relative overhead).

"On" means the whole instrumentation: every trace sampled (ALWAYS_ON), spans through a
BatchSpanProcessor into an exporter that drops them, metrics through a reader collecting
every second, trace ids in logs. The figures are the medians over rounds; the result is
written to bench/results/otel_overhead.json.
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
from pathlib import Path
from typing import Any

import structlog
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from queue_core import Queue, Worker
from queue_core.testing import RedisServer
from queue_otel import QueueInstrumentor

RESULTS = Path(__file__).parent / "results" / "otel_overhead.json"


class DropSpans(SpanExporter):
    def __init__(self) -> None:
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


class DropMetrics(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.exports = 0

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exports += 1
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


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


async def one_round(url: str, jobs: int, concurrency: int, work_ms: float = 0) -> dict[str, float]:
    name = f"bench-{uuid.uuid4().hex[:8]}"
    latencies: list[float] = []
    async with Queue(name, redis=url) as queue:
        started = time.perf_counter()
        for i in range(jobs):
            t = time.perf_counter()
            await queue.add("noop", i)
            latencies.append(time.perf_counter() - t)
        enqueue_s = time.perf_counter() - started
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

        started = time.perf_counter()
        async with Worker(name, noop, redis=url, concurrency=concurrency):
            await done.wait()
        process_s = time.perf_counter() - started
        await queue.client.delete(*queue.keys.all())
    latencies.sort()
    return {
        "enqueue_per_s": jobs / enqueue_s,
        "enqueue_p50_ms": latencies[len(latencies) // 2] * 1000,
        "enqueue_p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "process_per_s": jobs / process_s,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--work-ms", default="0,1", help="comma-separated CPU ms per job")
    args = parser.parse_args(argv)
    workloads = [float(x) for x in args.work_ms.split(",")]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    spans, metrics = DropSpans(), DropMetrics()
    tracer_provider, meter_provider = dropping_providers(spans, metrics)
    instrumentor = QueueInstrumentor()
    runs: dict[str, list[dict[str, float]]] = {
        f"{mode}/{work:g}ms": [] for work in workloads for mode in ("off", "on")
    }
    with RedisServer() as redis:
        print(f"Redis: {redis.description}", file=sys.stderr)
        asyncio.run(one_round(redis.url, min(args.jobs, 500), args.concurrency))  # warm-up
        for _ in range(args.rounds):
            for work in workloads:
                # Fewer jobs when each one works, so that a round takes a similar time.
                jobs = args.jobs if not work else max(200, int(args.jobs / (1 + work * 3)))
                for mode in ("off", "on"):
                    if mode == "on":
                        instrumentor.instrument(
                            tracer_provider=tracer_provider,
                            meter_provider=meter_provider,
                            export_logs=False,
                        )
                    try:
                        result = asyncio.run(one_round(redis.url, jobs, args.concurrency, work))
                    finally:
                        if mode == "on":
                            instrumentor.uninstrument()
                    runs[f"{mode}/{work:g}ms"].append(result)
    tracer_provider.shutdown()
    meter_provider.shutdown()
    if spans.exported == 0 or metrics.exports == 0:
        print("error: the instrumentation exported nothing", file=sys.stderr)
        return 1

    medians = {
        name: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
        for name, rounds in runs.items()
    }
    loss = {
        f"{work:g}ms": {
            key: 1 - medians[f"on/{work:g}ms"][key] / medians[f"off/{work:g}ms"][key]
            for key in ("enqueue_per_s", "process_per_s")
        }
        for work in workloads
    }
    report = {
        "command": "python -m bench.otel_overhead " + " ".join(argv or sys.argv[1:]),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "settings": vars(args),
        "spans_exported": spans.exported,
        "medians": medians,
        "throughput_loss": loss,
        "rounds": runs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    for work in workloads:
        name = f"{work:g}ms"
        print(f"\njobs of {name} CPU        {'off':>10} {'on':>10} {'on/off':>8}")
        for key in medians[f"off/{name}"]:
            off, on = medians[f"off/{name}"][key], medians[f"on/{name}"][key]
            print(f"  {key:20} {off:10.2f} {on:10.2f} {on / off:8.3f}")
        print(
            f"  throughput loss: enqueue {loss[name]['enqueue_per_s']:.1%}, "
            f"processing {loss[name]['process_per_s']:.1%}"
        )
    print(f"\nwritten to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
