"""Celery with the Redis broker.

Settings: producer ``task.delay(payload)`` per job (JSON, the default serializer); no
result backend (Celery's default: results are not stored). Celery has no bulk enqueue
(``group`` sends the messages one by one), so bulk is n/a. Worker: the ``celery worker``
command line with the default prefork pool and ``--concurrency 1``, i.e. one process
that runs tasks (fed by the worker's main process, which consumes from Redis);
``worker_prefetch_multiplier=64``, as Celery's "Optimizing" guide recommends for many
short tasks (the default is 4); acks before the task runs (the default,
``task_acks_late=False``); WARNING logging (the command line's default).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from celery import Celery  # type: ignore[import-not-found]

from bench.peers import _kit

PREFETCH_MULTIPLIER = 64

app = Celery("bench", broker=os.environ.get(_kit.URL_ENV, "redis://"))
app.conf.update(
    worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
    task_default_queue=os.environ.get(_kit.QUEUE_ENV, "celery"),
    broker_connection_retry_on_startup=True,
)


def _noop(payload: dict[str, Any]) -> None:
    _kit.mark()


noop = app.task(name="noop")(_noop)


class CeleryPeer(_kit.Peer):
    name = "celery"
    distribution = "celery"

    def __init__(self, variant: str = "") -> None:
        super().__init__(variant)
        self.queue = ""

    def settings(self) -> dict[str, str]:
        return {
            "producer": "task.delay per job (JSON), no result backend",
            "worker": "celery worker CLI: prefork pool, --concurrency 1, "
            f"worker_prefetch_multiplier={PREFETCH_MULTIPLIER} (docs: high for short tasks), "
            "acks early (default), WARNING logging",
            "concurrency": "1 pool process (prefork) per worker",
        }

    async def open(self, url: str, queue: str) -> None:
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
