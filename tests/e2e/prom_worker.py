"""A worker process for the Prometheus end-to-end tests, wired by hand the documented way:
an SDK ``TracerProvider`` (so exemplars carry trace ids), a ``MeterProvider`` read by
``queue_otel.PrometheusReader``, ``QueueInstrumentor`` observing the queue's depth, and
``start_metrics_server`` on ``127.0.0.1:<port>``.

    python -m tests.e2e.prom_worker REDIS_URL QUEUE PORT SPAN_LOG

Every ended span is written to ``SPAN_LOG`` as a JSON line (name, trace and span id), so
a test can tell that an exemplar points at a real span.

It runs a worker (concurrency 2) until stdin closes or says ``quit``. Each stdin line
``enqueue NAME COUNT [ATTEMPTS]`` enqueues jobs from this process (so the producer
metrics come from here too). What a job does depends on its name:

- ``ok``: completes after a short sleep.
- ``flaky``: fails its first attempt with ``TransientError``, then completes.
- ``doomed``: always fails with ``PoisonError`` (it ends in the failed set).
- ``throttled``: raises ``RateLimitError(0.3)`` on its first attempt, then completes.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from typing import TextIO

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.trace import format_span_id, format_trace_id

from queue_core import Job, Queue, RateLimitError, Worker
from queue_otel import PrometheusReader, QueueInstrumentor, start_metrics_server

RATE_LIMIT_S = 0.3


class TransientError(Exception):
    """A failure that goes away on retry."""


class PoisonError(Exception):
    """A failure that never goes away."""


async def process(job: Job) -> str:
    if job.name == "ok":
        await asyncio.sleep(random.uniform(0.02, 0.06))
        return "done"
    if job.name == "flaky":
        if job.attempts_made == 0:
            raise TransientError("first attempt fails")
        return "recovered"
    if job.name == "doomed":
        raise PoisonError(f"attempt {job.attempt} fails too")
    if job.name == "throttled":
        if job.attempts_started == 1:
            raise RateLimitError(RATE_LIMIT_S, "HTTP 429 from upstream")
        return "sent"
    raise ValueError(f"unknown job name {job.name!r}")


async def commands(queue: Queue) -> None:
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        words = line.split()
        if not words or words[0] == "quit":
            return
        if words[0] == "enqueue":
            name, count = words[1], int(words[2])
            attempts = int(words[3]) if len(words) > 3 else 1
            for _ in range(count):
                await queue.add(name, attempts=attempts)
            print(f"enqueued {count} {name}", flush=True)
        else:
            print(f"unknown command {line!r}", file=sys.stderr, flush=True)


def span_line(span: ReadableSpan) -> str:
    context = span.get_span_context()
    assert context is not None
    trace_id, span_id = format_trace_id(context.trace_id), format_span_id(context.span_id)
    return json.dumps({"name": span.name, "trace_id": trace_id, "span_id": span_id}) + "\n"


async def main(redis_url: str, queue_name: str, port: int, span_log: TextIO) -> None:
    reader = PrometheusReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    tracer_provider = TracerProvider()
    exporter = ConsoleSpanExporter(out=span_log, formatter=span_line)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = QueueInstrumentor()
    instrumentor.instrument(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        observe_queues=[queue_name],
        observe_redis_url=redis_url,
    )
    server = start_metrics_server(port, "127.0.0.1", reader=reader)
    queue = Queue(queue_name, redis=redis_url)
    worker = Worker(
        queue_name,
        process,
        redis=redis_url,
        concurrency=2,
        drain_delay=1.0,
        shutdown_timeout=5.0,
    )
    try:
        async with worker:
            print("ready", flush=True)
            await commands(queue)
    finally:
        await queue.close()
        server.shutdown()
        instrumentor.uninstrument()
        meter_provider.shutdown()
        tracer_provider.shutdown()


if __name__ == "__main__":
    with open(sys.argv[4], "w", encoding="utf-8") as spans:
        asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), spans))
