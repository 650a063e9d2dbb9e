"""SAQ (simple async queue, Redis), with its defaults.

Settings: producer ``Queue.enqueue("noop", payload=...)`` (JSON, one Lua script call per
job). No bulk enqueue API (``Queue.map`` enqueues many but also waits for their results).
Worker: the ``saq`` command line (``--workers 1``, the default) with a settings dict
holding only the queue and the function: ``concurrency=10`` (default), ``dequeue_timeout``
0 (blocks in Redis until a job arrives), job ``timeout`` 10 s and ``ttl`` 600 s (job
defaults), WARNING logging (the command line's default).
"""

from __future__ import annotations

from typing import Any

from saq import Queue  # type: ignore[import-not-found]

from bench.peers import _kit


async def noop(ctx: dict[str, Any], *, payload: dict[str, Any]) -> None:
    _kit.mark()


def settings() -> dict[str, Any]:
    """Read by ``saq bench.peers.saq.settings`` in each worker process."""
    return {
        "queue": Queue.from_url(_kit.env_url(), name=_kit.env_queue()),
        "functions": [noop],
    }


class Saq(_kit.Peer):
    name = "saq"
    distribution = "saq"
    concurrent_fill = True
    jobs_at_once = 10

    def __init__(self, variant: str = "") -> None:
        super().__init__(variant)
        self.queue: Any = None

    def settings(self) -> dict[str, str]:
        return {
            "producer": "Queue.enqueue per job (JSON)",
            "worker": "saq CLI (--workers 1), settings: queue + function only; defaults: "
            "concurrency=10, dequeue_timeout=0 (blocking dequeue), WARNING logging",
            "concurrency": "10 (default)",
        }

    def worker_model(self) -> str:
        return "1 process (--workers 1) x 10 async jobs (concurrency)"

    async def open(self, url: str, queue: str) -> None:
        self.queue = Queue.from_url(url, name=queue)
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.disconnect()

    async def enqueue(self, i: int) -> None:
        await self.queue.enqueue("noop", payload=_kit.payload(i))

    def worker_command(self, url: str, queue: str) -> list[str]:
        return [_kit.bin_command("saq"), "bench.peers.saq.settings"]


PEER = Saq

if __name__ == "__main__":
    raise SystemExit(_kit.main("bench.peers.saq"))
