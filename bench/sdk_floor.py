"""What the OpenTelemetry SDK alone needs to record queue_otel's spans: the floor under
the instrumentation's tracing cost.

A few jobs run with queue_otel and an in-memory exporter; every span they produced (name,
kind, attributes, links, times) is then made again, straight from the SDK's tracer with
everything given at the start, into the same kind of batch processor as the overhead run,
many times over. The CPU this takes per job, producer side (``send``) and consumer side
(``process`` and ``job``), is what any instrumentation recording the same spans would pay
to the SDK; queue_otel's figures in ``bench/otel_overhead.py`` are to be read against it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind

from bench.peers._otel import DropSpans
from queue_otel import QueueInstrumentor

__all__ = ["sdk_floor"]

SAMPLE_JOBS = 20


def _recorded_spans(url: str, one_round: Any) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = QueueInstrumentor()
    instrumentor.instrument(
        tracer_provider=provider, meter_provider=MeterProvider(), export_logs=False
    )
    try:
        asyncio.run(one_round(url, SAMPLE_JOBS, 1))
    finally:
        instrumentor.uninstrument()
    return list(exporter.get_finished_spans())


def _replay(spans: Sequence[ReadableSpan], repeat: int) -> float:
    """CPU seconds (this thread's) to make ``spans`` again ``repeat`` times."""
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(BatchSpanProcessor(DropSpans()))
    tracer = provider.get_tracer("sdk_floor")
    plans = [
        (s.name, s.kind, dict(s.attributes or {}), list(s.links), s.start_time, s.end_time)
        for s in spans
    ]
    started = time.thread_time()
    for _ in range(repeat):
        for name, kind, attributes, links, start, end in plans:
            span = tracer.start_span(
                name, kind=kind, attributes=attributes, links=links, start_time=start
            )
            span.end(end_time=end)
    spent = time.thread_time() - started
    provider.shutdown()
    return spent


def sdk_floor(url: str, one_round: Any, repeat: int = 200) -> dict[str, float]:
    """Milliseconds of CPU per job the SDK spends on queue_otel's spans, by side."""
    spans = _recorded_spans(url, one_round)
    jobs = SAMPLE_JOBS * repeat

    def floor(*kinds: SpanKind) -> float:
        return _replay([s for s in spans if s.kind in kinds], repeat) / jobs * 1000

    return {
        "enqueue_sdk_floor_ms": floor(SpanKind.PRODUCER),
        "process_sdk_floor_ms": floor(SpanKind.CONSUMER, SpanKind.INTERNAL),
        # The process span alone: the one span user code runs inside, so always live.
        "process_span_sdk_floor_ms": floor(SpanKind.CONSUMER),
        "spans_per_job": len(spans) / SAMPLE_JOBS,
    }
