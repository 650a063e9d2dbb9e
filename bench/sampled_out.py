"""What an attempt whose trace is not sampled costs queue_otel's tracing, beside the least
the SDK itself needs for the same attempt, both in a tight loop: the floor under the
``sampled_out_span_ms`` figure of ``bench/otel_overhead.py``, which a real worker
measures with cold caches (every wait on Redis evicts them) and a clock read around
each hook.

    python -m bench.sampled_out [--jobs 20000] [--rounds 5]

One job is enqueued under a producer whose trace is not sampled (a private
redis-server; the tracer's sampler is ``ParentBased``), then its attempt is replayed
``--jobs`` times through queue_otel's tracing hook: ``around_process``, the outcome
(``on_completed``), the end of the attempt. Beside it, the least any instrumentation
does through the SDK for such an attempt: read the W3C context from the headers, start
a CONSUMER span (which the sampler drops), make it current for the job's code, end it
(no job span, no events made: queue_otel's figure includes making its two events).
Printed: the medians over rounds of this thread's CPU per attempt, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from opentelemetry import context, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from queue_core import Job, JobEvent, ProcessEvent, Queue
from queue_core.testing import RedisServer
from queue_otel import QueueInstrumentor
from queue_otel import semconv as sc

__all__ = ["sampled_out"]


async def _unsampled_job(url: str) -> Job:
    async with Queue("sampled_out", redis=url) as queue:
        added = await queue.add("noop", None)
        job = await queue.get_job(added.id)
        await queue.client.delete(*queue.keys.all())
    assert job is not None
    job.started_at, job.attempts_started = datetime.now(UTC), 1
    return job


def _queue_otel_path(instrumentor: QueueInstrumentor, job: Job, jobs: int) -> Callable[[], None]:
    tracing = instrumentor._hooks[0]  # the TracingHook, registered first
    copies = [copy.copy(job) for _ in range(jobs)]  # the hook keys its state by Job object

    def run() -> None:
        for one in copies:
            event = ProcessEvent(one, "sampled_out", "w1", "127.0.0.1", 6379)
            after = tracing.around_process(event)
            assert after is not None
            after.__enter__()
            event.outcome = "completed"
            tracing.on_completed(JobEvent("sampled_out", one, "w1"))
            after.__exit__(None, None, None)

    return run


def _sdk_path(provider: TracerProvider, job: Job, jobs: int) -> Callable[[], None]:
    tracer = provider.get_tracer("sampled_out")
    propagator = TraceContextTextMapPropagator()
    headers = dict(job.headers)
    attributes = {sc.MESSAGING_SYSTEM: sc.SYSTEM, sc.DESTINATION: "sampled_out",
                  sc.OPERATION_NAME: "process", sc.OPERATION_TYPE: "process"}  # fmt: skip

    def run() -> None:
        for _ in range(jobs):
            parent = propagator.extract(headers)
            span = tracer.start_span(
                "process sampled_out",
                context=parent,
                kind=trace.SpanKind.CONSUMER,
                attributes=attributes,
            )
            token = context.attach(trace.set_span_in_context(span))
            context.detach(token)
            span.end()

    return run


def _per_attempt_us(run: Callable[[], None], jobs: int) -> float:
    started = time.thread_time()
    run()
    return (time.thread_time() - started) / jobs * 1e6


def sampled_out(jobs: int, rounds: int) -> dict[str, float]:
    """The medians, in microseconds per attempt: queue_otel's path and the SDK's."""
    provider = TracerProvider(sampler=ParentBased(ALWAYS_OFF))  # nothing is sampled
    instrumentor = QueueInstrumentor()
    instrumentor.instrument(
        tracer_provider=provider, meter_provider=MeterProvider(), export_logs=False
    )
    try:
        with RedisServer() as server:
            job = asyncio.run(_unsampled_job(server.url))
        ours, sdk = [], []
        for _ in range(rounds):  # alternating, so that drift hits both alike
            ours.append(_per_attempt_us(_queue_otel_path(instrumentor, job, jobs), jobs))
            sdk.append(_per_attempt_us(_sdk_path(provider, job, jobs), jobs))
    finally:
        instrumentor.uninstrument()
    return {"queue_otel_us": statistics.median(ours), "sdk_us": statistics.median(sdk)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    figures = sampled_out(args.jobs, args.rounds)
    print(f"an attempt whose trace is not sampled, {args.jobs:,} attempts x {args.rounds} rounds")
    print(f"  queue_otel's tracing hook   {figures['queue_otel_us']:7.2f} us per attempt")
    print(f"  the SDK's least, same span  {figures['sdk_us']:7.2f} us per attempt")
    print(f"  ratio                       {figures['queue_otel_us'] / figures['sdk_us']:7.2f}x")
    print(f"reproduce: python -m bench.sampled_out --jobs {args.jobs} --rounds {args.rounds}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
