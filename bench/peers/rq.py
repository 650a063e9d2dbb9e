"""RQ (Redis Queue), with its defaults.

Settings: producer ``Queue.enqueue(noop, payload)`` per job (pickle, the default); bulk is
``Queue.enqueue_many`` with ``Queue.prepare_data`` (one pipeline per batch), RQ's own bulk
API. Worker: the ``rq worker`` command line with its default class ``rq.Worker``, which
forks a work horse process per job (one job at a time per worker process; no concurrency
setting), results kept 500 s, INFO logging (lines per job). It blocks in Redis (BLPOP)
while idle.

Variant ``simple``: ``--worker-class rq.SimpleWorker``, which runs jobs in the worker
process itself, without the fork (RQ documents it for speed, losing the isolation).

Variant ``otel``: ``opentelemetry-instrumentation-rq`` (``RQInstrumentor``, a third
party's) on in the producer and in the worker (``--config bench.peers.rq_otel``, imported
by the worker's main process before it forks; the instrumentation traces enqueue and
``perform_job`` in the work horse, and flushes the spans at the end of each job); the
providers of ``bench/peers/_otel.py`` (every trace sampled, a BatchSpanProcessor into a
dropping exporter; the instrumentation records no metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from rq import Queue  # type: ignore[import-not-found]

from bench.peers import _kit


def noop(payload: dict[str, Any]) -> None:
    _kit.mark()


class Rq(_kit.Peer):
    name = "rq"
    distribution = "rq"
    has_bulk = True
    bulk_api = "Queue.enqueue_many"

    def __init__(self, variant: str = "") -> None:
        super().__init__(variant)
        self.queue: Any = None
        self.client: redis.Redis | None = None

    def settings(self) -> dict[str, str]:
        worker = "rq.SimpleWorker (no fork)" if self.variant == "simple" else "rq.Worker"
        return {
            "producer": "Queue.enqueue per job (pickle); bulk: Queue.enqueue_many",
            "worker": f"rq worker CLI, --worker-class {worker}, defaults otherwise "
            "(INFO logging, result_ttl 500 s)",
            "concurrency": "1 job at a time per worker process"
            + ("" if self.variant == "simple" else " (a fork per job)"),
        } | self._otel_settings()

    def _otel_settings(self) -> dict[str, str]:
        if self.variant != "otel":
            return {}
        from bench.peers import _otel, rq_otel  # noqa: PLC0415

        how = (
            "RQInstrumentor; worker: --config bench.peers.rq_otel; its three Job-callback "
            "wrappers target methods RQ 3 moved, given inert placeholders (no job has callbacks)"
        )
        return {"opentelemetry": _otel.describe(rq_otel.OTEL_PACKAGE, how, with_metrics=False)}

    def worker_model(self) -> str:
        if self.variant == "simple":
            return "1 process x 1 job (SimpleWorker: no fork)"
        return "1 process x 1 job, a work horse forked per job"

    async def open(self, url: str, queue: str) -> None:
        if self.variant == "otel":
            from bench.peers import rq_otel  # noqa: F401, PLC0415 - turns it on, once
        self.client = redis.Redis.from_url(url)
        self.queue = Queue(queue, connection=self.client)

    async def close(self) -> None:
        if self.client is not None:
            self.client.close()

    async def enqueue(self, i: int) -> None:
        self.queue.enqueue(noop, _kit.payload(i))

    async def enqueue_bulk(self, items: Sequence[int]) -> None:
        self.queue.enqueue_many([Queue.prepare_data(noop, (_kit.payload(i),)) for i in items])

    def worker_command(self, url: str, queue: str) -> list[str]:
        worker_class = "rq.SimpleWorker" if self.variant == "simple" else "rq.Worker"
        return [
            _kit.bin_command("rq"),
            "worker",
            "--url",
            url,
            "--worker-class",
            worker_class,
            *(("--config", "bench.peers.rq_otel") if self.variant == "otel" else ()),
            queue,
        ]


PEER = Rq

if __name__ == "__main__":
    raise SystemExit(_kit.main("bench.peers.rq"))
