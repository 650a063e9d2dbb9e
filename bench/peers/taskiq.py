"""taskiq with taskiq-redis's ``RedisStreamBroker``.

Settings: the broker taskiq-redis's README puts first and recommends when durability
matters (a Redis stream with a consumer group: messages are acknowledged), defaults
otherwise (``xread_count=100``, ``xread_block=2000`` ms); no result backend (taskiq's
default). Producer ``task.kiq(payload)`` per job; taskiq has no bulk enqueue, so bulk is
n/a. Worker: the ``taskiq worker`` command line with ``--workers 1`` (its default is 2
processes) and defaults otherwise: ``--max-async-tasks 100``, ack when the result is
saved, INFO logging.

Variant ``otel``: taskiq's own OpenTelemetry instrumentation (the ``opentelemetry`` extra:
``TaskiqInstrumentor().instrument_broker(broker, tracer_provider, meter_provider)``, which
puts its ``OpenTelemetryMiddleware`` first on the broker) in the producer and in the worker
process (on the broker this module makes); the providers of ``bench/peers/_otel.py`` (every
trace sampled, a BatchSpanProcessor into a dropping exporter, metrics read every second:
the middleware counts tasks, times them and observes the worker's CPU and memory).
"""

from __future__ import annotations

import os
from typing import Any

from taskiq_redis import RedisStreamBroker  # type: ignore[import-not-found]

from bench.peers import _kit


async def _noop(payload: dict[str, Any]) -> None:
    _kit.mark()


def _broker(url: str, queue: str, variant: str) -> Any:
    broker = RedisStreamBroker(url=url, queue_name=queue)
    broker.task(task_name="noop")(_noop)
    if variant == "otel":
        from taskiq.instrumentation import (  # type: ignore[import-not-found]  # noqa: PLC0415
            TaskiqInstrumentor,
        )

        from bench.peers import _otel  # noqa: PLC0415 - the otel variant only

        tracer_provider, meter_provider = _otel.providers(with_metrics=True)
        TaskiqInstrumentor().instrument_broker(
            broker, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
    return broker


# Read by ``taskiq worker bench.peers.taskiq:broker`` in each worker process.
broker = (
    _broker(_kit.env_url(), _kit.env_queue(), _kit.env_variant())
    if _kit.URL_ENV in os.environ
    else None
)


class Taskiq(_kit.Peer):
    name = "taskiq"
    distribution = "taskiq"
    concurrent_fill = True
    jobs_at_once = 100

    def __init__(self, variant: str = "") -> None:
        super().__init__(variant)
        self.broker: Any = None
        self.task: Any = None

    def settings(self) -> dict[str, str]:
        return {
            "producer": "task.kiq per job, RedisStreamBroker (acknowledged), no result backend",
            "worker": "taskiq worker CLI: --workers 1, defaults otherwise "
            "(--max-async-tasks 100, ack when saved, INFO logging)",
            "concurrency": "100 async tasks (default --max-async-tasks)",
        } | self._otel_settings()

    def _otel_settings(self) -> dict[str, str]:
        if self.variant != "otel":
            return {}
        from bench.peers import _otel  # noqa: PLC0415

        how = "taskiq.instrumentation.TaskiqInstrumentor.instrument_broker"
        return {"opentelemetry": _otel.describe("taskiq", how, with_metrics=True)}

    def worker_model(self) -> str:
        return "1 main process + 1 worker process (--workers 1) x 100 async tasks"

    def version(self) -> str:
        import importlib.metadata  # noqa: PLC0415

        return f"{super().version()} (taskiq-redis {importlib.metadata.version('taskiq-redis')})"

    async def open(self, url: str, queue: str) -> None:
        self.broker = _broker(url, queue, self.variant)
        await self.broker.startup()
        self.task = self.broker.find_task("noop")

    async def close(self) -> None:
        await self.broker.shutdown()

    async def enqueue(self, i: int) -> None:
        await self.task.kiq(_kit.payload(i))

    def worker_command(self, url: str, queue: str) -> list[str]:
        return [_kit.bin_command("taskiq"), "worker", "bench.peers.taskiq:broker", "--workers", "1"]


PEER = Taskiq

if __name__ == "__main__":
    raise SystemExit(_kit.main("bench.peers.taskiq"))
