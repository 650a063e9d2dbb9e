"""queue_core, through its public API only, run from the project's own venv.

Settings: ``Queue.add`` one job per call; bulk is ``Queue.add_bulk`` (one script call
per batch); default job options (``remove_on_complete`` keeps the newest 1,000). Worker:
one ``Worker(concurrency=10)`` per process, run with ``asyncio.run(worker.run())`` as the
README says, ``configure_logging()`` at INFO (JSON lines; nothing is logged per job).
``$BENCH_QC_CONCURRENCY`` overrides the concurrency (to explore).

Variant ``otel``: ``queue_otel`` on in the producer and in the workers: every trace
sampled (ALWAYS_ON), a ``BatchSpanProcessor`` into an exporter that drops the spans, and
metrics through a ``PeriodicExportingMetricReader`` every second into one that drops them
(the set-up of ``bench/otel_overhead.py``; the span exporter is ``bench/peers/_otel.py``'s,
which also tells the harness how many spans the workers exported); log export off.

Variant ``no_deadlines``: per-call deadlines off, ``redis_timeout=None`` in the producer's
``Queue`` and in every ``Worker``. Without a variant both keep the default deadline (5 s):
one timer bounds all of a producer's calls in flight (queue_core/deadlines.py), and one
watchdog timer a worker's command pipeline. The two rows side by side show what they cost.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from typing import Any

from bench.peers import _kit
from queue_core import Job, JobSpec, Queue, Worker, configure_logging

CONCURRENCY = int(os.environ.get("BENCH_QC_CONCURRENCY", "10"))
MODULE = "bench.peers.queue_core"
VARIANTS = ("", "otel", "no_deadlines", "no_events")


def deadline_options(variant: str) -> dict[str, Any]:
    """``Queue``/``Worker`` keyword arguments: deadlines off for ``no_deadlines``, else
    nothing (the library's default deadline)."""
    return {"redis_timeout": None} if variant == "no_deadlines" else {}


def instrument() -> Callable[[], None]:
    """Turn queue_otel on as described above; returns what turns it off."""
    from bench.otel_overhead import dropping_providers  # noqa: PLC0415
    from bench.peers._otel import DropMetrics, DropSpans  # noqa: PLC0415 - counts for the harness
    from queue_otel import QueueInstrumentor  # noqa: PLC0415 - variant only

    tracer_provider, meter_provider = dropping_providers(DropSpans(), DropMetrics())
    instrumentor = QueueInstrumentor()
    instrumentor.instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider, export_logs=False
    )

    def off() -> None:
        instrumentor.uninstrument()
        tracer_provider.shutdown()
        meter_provider.shutdown()

    return off


class QueueCore(_kit.Peer):
    name = "queue_core"
    distribution = "queue-core"
    has_bulk = True
    bulk_api = "Queue.add_bulk"
    concurrent_fill = True
    jobs_at_once = CONCURRENCY

    def __init__(self, variant: str = "") -> None:
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; known: {VARIANTS}")
        super().__init__(variant)
        self.queue: Queue | None = None
        self._off: Callable[[], None] | None = None

    def settings(self) -> dict[str, str]:
        out = {
            "producer": "Queue.add per job; bulk: Queue.add_bulk; default job options",
            "worker": f"one Worker(concurrency={CONCURRENCY}) per process "
            "(asyncio.run(worker.run())), configure_logging() at INFO",
            "concurrency": str(CONCURRENCY),
        }
        if self.variant == "otel":
            out["queue_otel"] = (
                "on in producer and workers: ALWAYS_ON sampler, BatchSpanProcessor to a "
                "dropping exporter, metrics read every 1 s, log export off"
            )
        if self.variant == "no_deadlines":
            out["redis_timeout"] = "None in Queue and Worker: per-call deadlines off (default: 5 s)"
        if self.variant == "no_events":
            out["events"] = "queue.set_events_max_length(0): no events stream (default: on)"
        return out

    def worker_model(self) -> str:
        return f"1 process x {CONCURRENCY} async jobs (Worker(concurrency={CONCURRENCY}))"

    async def open(self, url: str, queue: str) -> None:
        if self.variant == "otel" and self._off is None:
            self._off = instrument()
        self.queue = Queue(queue, redis=url, **deadline_options(self.variant))
        if self.variant == "no_events":
            await self.queue.set_events_max_length(0)

    async def close(self) -> None:
        if self.queue is not None:
            await self.queue.close()
            self.queue = None
        if self._off is not None:
            self._off()
            self._off = None

    async def enqueue(self, i: int) -> None:
        assert self.queue is not None
        await self.queue.add("noop", _kit.payload(i))

    async def enqueue_bulk(self, items: Sequence[int]) -> None:
        assert self.queue is not None
        await self.queue.add_bulk([JobSpec("noop", _kit.payload(i)) for i in items])

    def worker_command(self, url: str, queue: str) -> list[str]:
        return _kit.module_command(MODULE, "worker")


async def noop(job: Job) -> None:
    _kit.mark()


def worker_main() -> int:
    configure_logging()
    variant = _kit.env_variant()
    off = instrument() if variant == "otel" else None
    worker = Worker(
        _kit.env_queue(),
        noop,
        redis=_kit.env_url(),
        concurrency=CONCURRENCY,
        **deadline_options(variant),
    )
    try:
        asyncio.run(worker.run())
    finally:
        if off is not None:
            off()
    return 0


PEER = QueueCore
COMMANDS = {"worker": worker_main}

if __name__ == "__main__":
    raise SystemExit(_kit.main("bench.peers.queue_core"))
