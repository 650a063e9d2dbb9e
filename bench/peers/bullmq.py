"""BullMQ's Python port (PyPI ``bullmq``), the same Lua scripts as BullMQ for Node.

Settings: producer ``Queue.add("noop", payload)`` per job; bulk is ``Queue.addBulk``
(BullMQ's bulk API: the adds of a batch in one pipeline). Default job options (completed
jobs are kept). Worker: BullMQ has no worker command line, so each worker process runs
this module's ``worker`` command: one ``Worker(queue, processor, {"connection": url})``
with the defaults: ``concurrency`` 1, ``drainDelay`` 5 s (blocks in Redis while idle),
lock 30 s; stopped with ``await worker.close()`` on SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Sequence
from typing import Any

from bullmq import Queue, Worker  # type: ignore[import-not-found]

from bench.peers import _kit

MODULE = "bench.peers.bullmq"


async def noop(job: Any, token: str) -> None:
    _kit.mark()


class BullMQ(_kit.Peer):
    name = "bullmq"
    distribution = "bullmq"
    has_bulk = True
    bulk_api = "Queue.addBulk"
    concurrent_fill = True

    def __init__(self, variant: str = "") -> None:
        super().__init__(variant)
        self.queue: Any = None

    def settings(self) -> dict[str, str]:
        return {
            "producer": "Queue.add per job; bulk: Queue.addBulk; default job options",
            "worker": "a script running Worker(queue, processor, {connection}) with defaults: "
            "concurrency 1, drainDelay 5 s, lockDuration 30 s",
            "concurrency": "1 (default)",
        }

    def worker_model(self) -> str:
        return "1 process x 1 job (concurrency 1, the default)"

    async def open(self, url: str, queue: str) -> None:
        self.queue = Queue(queue, {"connection": url})

    async def close(self) -> None:
        await self.queue.close()

    async def enqueue(self, i: int) -> None:
        await self.queue.add("noop", _kit.payload(i))

    async def enqueue_bulk(self, items: Sequence[int]) -> None:
        await self.queue.addBulk([{"name": "noop", "data": _kit.payload(i)} for i in items])

    def worker_command(self, url: str, queue: str) -> list[str]:
        return _kit.module_command(MODULE, "worker")


async def _run_worker() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(_kit.env_queue(), noop, {"connection": _kit.env_url()})
    await stop.wait()
    await worker.close()


def worker_main() -> int:
    asyncio.run(_run_worker())
    return 0


PEER = BullMQ
COMMANDS = {"worker": worker_main}

if __name__ == "__main__":
    raise SystemExit(_kit.main("bench.peers.bullmq"))
