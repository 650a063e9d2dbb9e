"""Dramatiq with the Redis broker.

Settings: producer ``actor.send(payload)`` per job (JSON, one Lua script call per
message); Dramatiq has no bulk enqueue (``group`` sends one by one), so bulk is n/a.
Worker: the ``dramatiq`` command line with ``--processes 1`` (its default is one per CPU)
and the default ``--threads 8``; default middleware (retries, time and age limits...);
INFO logging. The Redis broker polls with a growing back-off while the queue is empty.

Variant ``otel``: ``opentelemetry-instrumentor-dramatiq`` (``DramatiqInstrumentor``, a
third party's: dramatiq ships no OpenTelemetry middleware) on in the producer and in the
worker process (at the import of this module, before the broker is made); the providers of
``bench/peers/_otel.py`` (every trace sampled, a BatchSpanProcessor into a dropping
exporter; the instrumentation records no metrics).
"""

from __future__ import annotations

import os
from typing import Any

import dramatiq  # type: ignore[import-not-found]
from dramatiq.brokers.redis import RedisBroker  # type: ignore[import-not-found]

from bench.peers import _kit

OTEL_PACKAGE = "opentelemetry-instrumentor-dramatiq"


def _noop(payload: dict[str, Any]) -> None:
    _kit.mark()


def instrument() -> None:
    """Turn DramatiqInstrumentor on in this process (once)."""
    from opentelemetry_instrumentor_dramatiq import (  # type: ignore[import-not-found]  # noqa: PLC0415
        DramatiqInstrumentor,
    )

    from bench.peers import _otel  # noqa: PLC0415 - the otel variant only

    tracer_provider, _ = _otel.providers(with_metrics=False)
    instrumentor = DramatiqInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=tracer_provider)


if _kit.URL_ENV in os.environ:  # a worker: the broker and the actor, at import
    if _kit.env_variant() == "otel":
        instrument()
    dramatiq.set_broker(RedisBroker(url=_kit.env_url()))
    noop = dramatiq.actor(_noop, actor_name="noop", queue_name=_kit.env_queue())


class Dramatiq(_kit.Peer):
    name = "dramatiq"
    distribution = "dramatiq"
    jobs_at_once = 8

    def __init__(self, variant: str = "") -> None:
        super().__init__(variant)
        self.broker: Any = None
        self.actor: Any = None

    def settings(self) -> dict[str, str]:
        return {
            "producer": "actor.send per job (JSON)",
            "worker": "dramatiq CLI: --processes 1 --threads 8 (default threads), "
            "default middleware, INFO logging",
            "concurrency": "8 threads (default)",
        } | self._otel_settings()

    def _otel_settings(self) -> dict[str, str]:
        if self.variant != "otel":
            return {}
        from bench.peers import _otel  # noqa: PLC0415

        how = "DramatiqInstrumentor; in the worker process at import"
        return {"opentelemetry": _otel.describe(OTEL_PACKAGE, how, with_metrics=False)}

    def worker_model(self) -> str:
        return "1 main process + 1 worker process (--processes 1) x 8 threads"

    async def open(self, url: str, queue: str) -> None:
        if self.variant == "otel":
            instrument()
        self.broker = RedisBroker(url=url)
        self.actor = dramatiq.actor(_noop, actor_name="noop", queue_name=queue, broker=self.broker)

    async def close(self) -> None:
        self.broker.close()

    async def enqueue(self, i: int) -> None:
        self.actor.send(_kit.payload(i))

    def worker_command(self, url: str, queue: str) -> list[str]:
        return [
            _kit.bin_command("dramatiq"),
            "bench.peers.dramatiq",
            "--processes",
            "1",
            "--threads",
            "8",
            "--queues",
            queue,
        ]


PEER = Dramatiq

if __name__ == "__main__":
    raise SystemExit(_kit.main("bench.peers.dramatiq"))
