"""Worker processes for the dashboard tests: the example application's five queues in one
process, instrumented the documented way, and a victim process that dies holding jobs.

    python -m tests.stack.stack_worker serve REDIS_URL SUFFIX PORT
    python -m tests.stack.stack_worker victim REDIS_URL QUEUE

``serve``: an SDK ``TracerProvider`` (so histogram buckets carry exemplars), a
``MeterProvider`` read by ``queue_otel.PrometheusReader`` served on ``127.0.0.1:PORT`` by
``start_metrics_server``, and ``QueueInstrumentor`` observing the depth of every queue
(``observe_queues``, which runs a ``QueueStatsObserver``). The queues are those of the
example application with ``-SUFFIX`` appended (the tests share one Redis):

- ``emails`` (``welcome_email``), concurrency 4;
- ``images`` (``resize_image``), concurrency 1, ``RateLimit(max=3, duration=1)``;
- ``webhooks`` (``deliver_webhook``, ``ping_endpoint``), concurrency 3;
- ``reminders`` (``signup_reminder``), concurrency 1;
- ``reports`` (``build_report``), concurrency 1.

The ``webhooks`` worker starts on the ``start webhooks`` command, so that a victim process
can take jobs of that queue first; it checks for stalled jobs every 0.25 s.

Commands on stdin, one a line (the process runs until stdin closes or says ``quit``):

- ``enqueue QUEUE JOB_NAME MODE COUNT [ATTEMPTS [DELAY]]``: enqueue from this process,
  so the producer metrics come from here too; ``QUEUE`` without the suffix;
- ``start QUEUE``: start that queue's worker;
- ``release``: let the ``hold`` jobs finish.

What a job does depends on its ``mode`` (its data):

- ``ok``: completes after 10-80 ms; ``slow``: after 150-400 ms;
- ``flaky``: its first attempt fails with ``UpstreamTimeout``, the next completes;
- ``reject``: every attempt fails with ``UpstreamRejected``;
- ``invalid``: fails with ``InvalidPayload`` (give it one attempt);
- ``throttle``: its first attempt answers ``RateLimitError(0.3)`` (the queue holds);
- ``hold``: runs until ``release`` (or shutdown), so it stays active.

``victim``: two plain workers of ``QUEUE`` (no telemetry), concurrency 1 each, with lock
durations of 1 s and 5 s, whose jobs never end. The test kills the process with SIGKILL
once both jobs are active; their locks then expire at different times, so the serving
process recovers them in two stalled checks, with a scrape in between.
"""

from __future__ import annotations

import asyncio
import random
import sys
from contextlib import AsyncExitStack
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from queue_core import Backoff, Job, Queue, RateLimit, RateLimitError, Worker
from queue_otel import PrometheusReader, QueueInstrumentor, start_metrics_server

QUEUES = ("emails", "images", "reports", "webhooks", "reminders")
RATE_LIMIT_S = 0.3
VICTIM_LOCKS = (1.0, 5.0)


class UpstreamTimeout(Exception):
    """A failure that goes away on retry."""


class UpstreamRejected(Exception):
    """A failure that never goes away."""


class InvalidPayload(Exception):
    """A job that cannot succeed."""


class Processor:
    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def __call__(self, job: Job) -> str:
        mode = (job.data or {}).get("mode", "ok")
        if mode == "ok":
            await asyncio.sleep(random.uniform(0.01, 0.08))
        elif mode == "slow":
            await asyncio.sleep(random.uniform(0.15, 0.4))
        elif mode == "flaky":
            if job.attempts_made == 0:
                raise UpstreamTimeout("the endpoint timed out")
        elif mode == "reject":
            raise UpstreamRejected(f"HTTP 410 at attempt {job.attempt}")
        elif mode == "invalid":
            raise InvalidPayload("no such user")
        elif mode == "throttle":
            if job.attempts_started == 1:
                raise RateLimitError(RATE_LIMIT_S, "HTTP 429 from upstream")
        elif mode == "hold":
            await self.release.wait()
        else:
            raise ValueError(f"unknown mode {mode!r}")
        return str(mode)


def worker_options(base: str) -> dict[str, Any]:
    options: dict[str, Any] = {"concurrency": 1, "drain_delay": 1.0, "shutdown_timeout": 5.0}
    if base == "emails":
        options["concurrency"] = 4
    elif base == "images":
        options["limiter"] = RateLimit(max=3, duration=1.0)
    elif base == "webhooks":
        options["concurrency"] = 3
        options["stalled_interval"] = 0.25
    return options


async def serve(redis_url: str, suffix: str, port: int) -> None:
    names = {base: f"{base}-{suffix}" for base in QUEUES}
    reader = PrometheusReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    tracer_provider = TracerProvider()
    instrumentor = QueueInstrumentor()
    instrumentor.instrument(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        observe_queues=list(names.values()),
        observe_redis_url=redis_url,
    )
    server = start_metrics_server(port, "127.0.0.1", reader=reader)
    process = Processor()
    queues = {base: Queue(name, redis=redis_url) for base, name in names.items()}
    workers: dict[str, Worker] = {}
    running = AsyncExitStack()

    async def start(base: str) -> None:
        if base not in workers:
            worker = Worker(names[base], process, redis=redis_url, **worker_options(base))
            workers[base] = await running.enter_async_context(worker)

    try:
        for base in ("emails", "images", "reports", "reminders"):
            await start(base)
        print("ready", flush=True)
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            words = line.split()
            if not line or words[:1] == ["quit"]:
                break  # stdin closed, or asked to
            if not words:
                continue
            if words[0] == "enqueue":
                base, job_name, mode, count = words[1], words[2], words[3], int(words[4])
                attempts = int(words[5]) if len(words) > 5 else 1
                delay = float(words[6]) if len(words) > 6 else 0.0
                for _ in range(count):
                    await queues[base].add(
                        job_name,
                        {"mode": mode},
                        attempts=attempts,
                        backoff=Backoff.fixed(0.2),
                        delay=delay,
                    )
            elif words[0] == "start":
                await start(words[1])
            elif words[0] == "release":
                process.release.set()
            else:
                print(f"unknown command {line!r}", file=sys.stderr, flush=True)
                continue
            print(f"done {line.strip()}", flush=True)
    finally:
        process.release.set()
        await running.aclose()
        for queue in queues.values():
            await queue.close()
        server.shutdown()
        instrumentor.uninstrument()
        meter_provider.shutdown()
        tracer_provider.shutdown()


async def hang(job: Job) -> None:
    print(f"started {job.id}", flush=True)
    await asyncio.Event().wait()


async def victim(redis_url: str, queue_name: str) -> None:
    workers = [
        Worker(queue_name, hang, redis=redis_url, lock_duration=lock, drain_delay=1.0)
        for lock in VICTIM_LOCKS
    ]
    async with AsyncExitStack() as running:
        for worker in workers:
            await running.enter_async_context(worker)
        print("ready", flush=True)
        await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        asyncio.run(serve(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    elif sys.argv[1] == "victim":
        asyncio.run(victim(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(f"unknown mode {sys.argv[1]!r}")
