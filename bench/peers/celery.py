"""Celery with the Redis broker.

Settings: producer ``task.delay(payload)`` per job (JSON, the default serializer); no
result backend (Celery's default: results are not stored). Celery has no bulk enqueue
(``group`` sends the messages one by one), so bulk is n/a. Worker: the ``celery worker``
command line with the default prefork pool and ``--concurrency 1``, i.e. one process
that runs tasks (fed by the worker's main process, which consumes from Redis);
``worker_prefetch_multiplier=64``, as Celery's "Optimizing" guide recommends for many
short tasks (the default is 4); acks before the task runs (the default,
``task_acks_late=False``); WARNING logging (the command line's default).

Variant ``otel``: ``opentelemetry-instrumentation-celery`` (``CeleryInstrumentor``) on in
the producer and, as its documentation says, in each pool process on
``worker_process_init``; the providers of ``bench/peers/_otel.py`` (every trace sampled,
a BatchSpanProcessor into a dropping exporter, metrics read every second: the
instrumentation records a task run-time histogram).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from celery import Celery  # type: ignore[import-not-found]
from celery.signals import worker_process_init  # type: ignore[import-not-found]

from bench.peers import _kit

PREFETCH_MULTIPLIER = 64
OTEL_PACKAGE = "opentelemetry-instrumentation-celery"

app = Celery("bench", broker=os.environ.get(_kit.URL_ENV, "redis://"))
app.conf.update(
    worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
    task_default_queue=os.environ.get(_kit.QUEUE_ENV, "celery"),
    broker_connection_retry_on_startup=True,
)


def _noop(payload: dict[str, Any]) -> None:
    _kit.mark()


noop = app.task(name="noop")(_noop)


def instrument() -> None:
    """Turn CeleryInstrumentor on in this process (once)."""
    from opentelemetry.instrumentation.celery import (  # type: ignore[import-not-found]  # noqa: PLC0415
        CeleryInstrumentor,
    )

    from bench.peers import _otel  # noqa: PLC0415 - the otel variant only

    tracer_provider, meter_provider = _otel.providers(with_metrics=True)
    instrumentor = CeleryInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)


if _kit.env_variant() == "otel":  # a worker of the otel row: in each pool process

    @worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _instrument_pool_process(*args: Any, **kwargs: Any) -> None:
        instrument()


class CeleryPeer(_kit.Peer):
    name = "celery"
    distribution = "celery"

    def __init__(self, variant: str = "") -> None:
        super().__init__(variant)
        self.queue = ""

    def settings(self) -> dict[str, str]:
        out = {
            "producer": "task.delay per job (JSON), no result backend",
            "worker": "celery worker CLI: prefork pool, --concurrency 1, "
            f"worker_prefetch_multiplier={PREFETCH_MULTIPLIER} (docs: high for short tasks), "
            "acks early (default), WARNING logging",
            "concurrency": "1 pool process (prefork) per worker",
        }
        if self.variant == "otel":
            from bench.peers import _otel  # noqa: PLC0415

            out["opentelemetry"] = _otel.describe(
                OTEL_PACKAGE,
                "CeleryInstrumentor; in the pool process on worker_process_init",
                with_metrics=True,
            )
        return out

    def worker_model(self) -> str:
        return "1 main process (consumes, prefetch 64) + 1 prefork pool process x 1 task"

    async def open(self, url: str, queue: str) -> None:
        if self.variant == "otel":
            instrument()
        app.conf.broker_url = url
        self.queue = queue

    async def close(self) -> None:
        return None  # the app's connection pool stays for the next phase

    async def enqueue(self, i: int) -> None:
        noop.apply_async((_kit.payload(i),), queue=self.queue)

    def worker_command(self, url: str, queue: str) -> list[str]:
        return [
            _kit.bin_command("celery"),
            "-A",
            "bench.peers.celery",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            "1",
            "--queues",
            queue,
            "--hostname",
            f"bench-{uuid.uuid4().hex[:8]}@%h",
        ]


PEER = CeleryPeer

if __name__ == "__main__":
    raise SystemExit(_kit.main("bench.peers.celery"))
