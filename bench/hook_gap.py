"""What the same hook code costs after a gap: queue_otel's hooks for one attempt, every
trace sampled, in a loop with a pause between the attempt's start and its end, beside the
least the SDK itself does for such an attempt with the same pause.

    python -m bench.hook_gap [--jobs 3000] [--rounds 3] [--gaps 0,1,5] [--idle]

In a worker, the hooks run between waits on Redis and around the job's own work, and
``bench/otel_overhead.py`` finds them costing more CPU the longer the jobs run. This
replays one recorded attempt (a job enqueued under a sampled producer, on a private
redis-server) without Redis: ``around_process`` of queue_otel's tracing and metrics
hooks, the pause (``--gaps`` ms of busy Python, or of sleep with ``--idle``), the outcome
(``on_completed``) and the end of the attempt. Only the hooks are clocked (this thread's
CPU), not the pause. Beside it, the SDK's least for the same attempt: read the W3C
context, start the CONSUMER span with the attempt's attributes, make it current, the
pause, end it (no job span, no metrics). Printed per gap: the medians over rounds, in us
per attempt, and each as a multiple of its cost with no gap. When both grow alike, the
growth is the machine's (caches gone cold during the pause), not the code's.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from opentelemetry import context, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bench.peers._otel import DropSpans
from queue_core import Job, JobEvent, ProcessEvent, Queue
from queue_core.testing import RedisServer
from queue_otel import QueueInstrumentor
from queue_otel import semconv as sc

__all__ = ["hook_gap"]

_QUEUE = "hook_gap"
Pause = Callable[[float], None]


def _busy(ms: float) -> None:
    until = time.perf_counter() + ms / 1000
    while time.perf_counter() < until:
        pass


def _idle(ms: float) -> None:
    time.sleep(ms / 1000)


async def _sampled_job(url: str, provider: TracerProvider) -> Job:
    async with Queue(_QUEUE, redis=url) as queue:
        with provider.get_tracer("hook_gap").start_as_current_span("request"):
            added = await queue.add("noop", None)
        job = await queue.get_job(added.id)
        await queue.client.delete(*queue.keys.all())
    assert job is not None
    job.started_at = job.finished_at = datetime.now(UTC)
    job.attempts_started = 1
    return job


def _queue_otel_path(hooks: list[Any], job: Job, pause: Pause) -> Callable[[int, float], float]:
    def run(attempts: int, gap_ms: float) -> float:
        copies = [copy.copy(job) for _ in range(attempts)]  # hooks key their state by Job
        spent = 0
        for one in copies:
            started = time.thread_time_ns()
            event = ProcessEvent(one, _QUEUE, "w1", "127.0.0.1", 6379)
            afters = [hook.around_process(event) for hook in hooks]
            for after in afters:
                after.__enter__()
            spent += time.thread_time_ns() - started
            pause(gap_ms)
            started = time.thread_time_ns()
            event.outcome = "completed"
            done = JobEvent(_QUEUE, one, "w1")
            for hook in hooks:
                hook.on_completed(done)
            for after in reversed(afters):
                after.__exit__(None, None, None)
            spent += time.thread_time_ns() - started
        return spent / attempts / 1000

    return run


def _sdk_path(provider: TracerProvider, job: Job, pause: Pause) -> Callable[[int, float], float]:
    tracer = provider.get_tracer("hook_gap")
    propagator = TraceContextTextMapPropagator()
    headers = dict(job.headers)
    attributes: dict[str, str | int] = {
        sc.MESSAGING_SYSTEM: sc.SYSTEM, sc.DESTINATION: _QUEUE, sc.OPERATION_NAME: "process",
        sc.OPERATION_TYPE: "process", sc.MESSAGE_ID: job.id, sc.JOB_NAME: job.name,
        sc.JOB_ATTEMPT: 1, sc.JOB_MAX_ATTEMPTS: 1,
    }  # fmt: skip

    def run(attempts: int, gap_ms: float) -> float:
        spent = 0
        for _ in range(attempts):
            started = time.thread_time_ns()
            parent = propagator.extract(headers)
            span = tracer.start_span(
                f"process {_QUEUE}",
                context=parent,
                kind=trace.SpanKind.CONSUMER,
                attributes=attributes,
            )
            token = context.attach(trace.set_span_in_context(span))
            spent += time.thread_time_ns() - started
            pause(gap_ms)
            started = time.thread_time_ns()
            context.detach(token)
            span.set_attribute(sc.JOB_OUTCOME, "completed")
            span.end()
            spent += time.thread_time_ns() - started
        return spent / attempts / 1000

    return run


def hook_gap(jobs: int, rounds: int, gaps: list[float], idle: bool) -> dict[str, dict[str, float]]:
    """Per gap (its ms as the key): the medians in us per attempt, queue_otel's and the SDK's."""
    spans = DropSpans()
    provider = TracerProvider(sampler=ALWAYS_ON)
    provider.add_span_processor(BatchSpanProcessor(spans))
    instrumentor = QueueInstrumentor()
    instrumentor.instrument(
        tracer_provider=provider, meter_provider=MeterProvider(), export_logs=False
    )
    pause = _idle if idle else _busy
    try:
        with RedisServer() as server:
            job = asyncio.run(_sampled_job(server.url, provider))
        ours = _queue_otel_path(instrumentor._hooks, job, pause)
        sdk = _sdk_path(provider, job, pause)
        runs: dict[str, dict[str, list[float]]] = {f"{g:g}": {"ours": [], "sdk": []} for g in gaps}
        for _ in range(rounds):
            for gap in gaps:  # alternating, so that drift hits both alike
                attempts = max(50, int(jobs / (1 + gap * 3)))
                runs[f"{gap:g}"]["ours"].append(ours(attempts, gap))
                runs[f"{gap:g}"]["sdk"].append(sdk(attempts, gap))
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
    return {
        gap: {"queue_otel_us": statistics.median(r["ours"]), "sdk_us": statistics.median(r["sdk"])}
        for gap, r in runs.items()
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000, help="attempts per round, no gap")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--gaps", default="0,1,5", help="comma-separated ms between start and end")
    parser.add_argument("--idle", action="store_true", help="sleep in the gap (default: busy)")
    args = parser.parse_args(argv)
    gaps = [float(g) for g in args.gaps.split(",")]
    figures = hook_gap(args.jobs, args.rounds, gaps, args.idle)
    first = next(iter(figures.values()))
    print(f"one sampled attempt, {'idle' if args.idle else 'busy'} gap; us per attempt, hooks only")
    print("| gap | queue_otel's hooks | x no gap | the SDK's least | x no gap |")
    print("|---|---:|---:|---:|---:|")
    for gap, row in figures.items():
        ours, sdk = row["queue_otel_us"], row["sdk_us"]
        print(f"| {gap} ms | {ours:.1f} | {ours / first['queue_otel_us']:.2f}x "
              f"| {sdk:.1f} | {sdk / first['sdk_us']:.2f}x |")  # fmt: skip
    command = f"--jobs {args.jobs} --rounds {args.rounds} --gaps {args.gaps}"
    print(f"reproduce: python -m bench.hook_gap {command}{' --idle' if args.idle else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
