"""arq (asyncio, Redis), with its defaults.

Settings: producer ``ArqRedis.enqueue_job`` (one WATCH/MULTI transaction per job, pickle
serializer, the default). No bulk API. Worker: the ``arq`` command line with a
``WorkerSettings`` class holding only the function, the Redis URL and the queue name, so
everything else is arq's default: ``max_jobs=10`` jobs at once per process, ``poll_delay``
0.5 s (arq polls the queue's sorted set; it does not block in Redis), results kept for
3,600 s, INFO logging (one line per job start and end).

Variant ``otel``: ``opentelemetry-instrumentation-arq`` (``ArqInstrumentor``, a third
party's, a pre-release) on in the producer and in the worker process (at the import of
this module); the providers of ``bench/peers/_otel.py`` (every trace sampled, a
BatchSpanProcessor into a dropping exporter; the instrumentation records no metrics).
"""

from __future__ import annotations

import contextlib
from typing import Any

from arq import create_pool  # type: ignore[import-not-found]
from arq.connections import RedisSettings  # type: ignore[import-not-found]

from bench.peers import _kit

OTEL_PACKAGE = "opentelemetry-instrumentation-arq"


def instrument() -> None:
    """Turn ArqInstrumentor on in this process (once)."""
    from opentelemetry.instrumentation.arq import (  # type: ignore[import-not-found]  # noqa: PLC0415
        ArqInstrumentor,
    )

    from bench.peers import _otel  # noqa: PLC0415 - the otel variant only

    tracer_provider, _ = _otel.providers(with_metrics=False)
    instrumentor = ArqInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=tracer_provider)


async def noop(ctx: dict[str, Any], payload: dict[str, Any]) -> None:
    _kit.mark()


class WorkerSettings:
    """Read by ``arq bench.peers.arq.WorkerSettings`` in each worker process."""

    functions = (noop,)

    @staticmethod
    def _from_env() -> tuple[Any, str]:
        return RedisSettings.from_dsn(_kit.env_url()), _kit.env_queue()


with contextlib.suppress(KeyError):  # only in a worker: the environment names Redis, queue
    WorkerSettings.redis_settings, WorkerSettings.queue_name = WorkerSettings._from_env()  # type: ignore[attr-defined]
    if _kit.env_variant() == "otel":
        instrument()


class Arq(_kit.Peer):
    name = "arq"
    distribution = "arq"
    concurrent_fill = True
    jobs_at_once = 10

    def __init__(self, variant: str = "") -> None:
        super().__init__(variant)
        self.pool: Any = None
        self.queue = ""

    def settings(self) -> dict[str, str]:
        return {
            "producer": "ArqRedis.enqueue_job per job (pickle, the default)",
            "worker": "arq CLI, WorkerSettings with defaults: max_jobs=10, poll_delay=0.5 s, "
            "keep_result=3600 s, INFO logging",
            "concurrency": "10 (max_jobs, default)",
        } | self._otel_settings()

    def _otel_settings(self) -> dict[str, str]:
        if self.variant != "otel":
            return {}
        from bench.peers import _otel  # noqa: PLC0415

        how = "ArqInstrumentor; in the worker process at import"
        return {"opentelemetry": _otel.describe(OTEL_PACKAGE, how, with_metrics=False)}

    def worker_model(self) -> str:
        return "1 process x 10 async jobs (max_jobs)"

    async def open(self, url: str, queue: str) -> None:
        if self.variant == "otel":
            instrument()
        self.pool = await create_pool(RedisSettings.from_dsn(url), default_queue_name=queue)
        self.queue = queue

    async def close(self) -> None:
        await self.pool.aclose()

    async def enqueue(self, i: int) -> None:
        await self.pool.enqueue_job("noop", _kit.payload(i))

    def worker_command(self, url: str, queue: str) -> list[str]:
        return [_kit.bin_command("arq"), "bench.peers.arq.WorkerSettings"]


PEER = Arq

if __name__ == "__main__":
    raise SystemExit(_kit.main("bench.peers.arq"))
