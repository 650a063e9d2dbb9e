"""Running a process's Workers: all in one event loop, stopped by signals.

SIGTERM or SIGINT asks every worker to stop gracefully (no new job; running jobs get
their ``shutdown_timeout``); a second signal stops them at once. Beside the workers, one
task beats for the health probe and, in a supervised child, stops the workers when the
supervisor is gone; with ``burst``, another stops them once their queues are empty.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any, Final

from queue_core.cli.health import BEAT_INTERVAL_S, Probe
from queue_core.log import get_logger
from queue_core.worker import Worker

__all__ = ["ProcessRunner"]

BURST_POLL_S: Final = 0.2
BURST_IDLE_ROUNDS: Final = 2  # consecutive idle looks: a fetch's reply in flight lands between
_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)

_log = get_logger("queue_core.cli.worker")


class ProcessRunner:
    def __init__(
        self,
        workers: list[Worker],
        *,
        burst: bool = False,
        probe: Probe | None = None,
        supervisor_pid: int | None = None,
    ) -> None:
        self.workers = workers
        self.burst = burst
        self.probe = probe
        self.supervisor_pid = supervisor_pid
        self.signals = 0

    def stop(self, *, force: bool = False) -> None:
        for worker in self.workers:
            worker.request_close(force=force)

    async def run(self) -> None:
        """Run every worker until all have stopped; raise the first one's error (the
        others are stopped gracefully when one fails)."""
        loop = asyncio.get_running_loop()
        for sig in _SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)
        helpers = [asyncio.create_task(self._beat())]
        if self.burst:
            helpers.append(asyncio.create_task(self._burst()))
        runs = {asyncio.create_task(w.run(handle_signals=False)) for w in self.workers}
        first_error: BaseException | None = None
        try:
            pending = runs
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    error = task.exception()
                    if error is not None and first_error is None:
                        first_error = error
                        self.stop()
        finally:
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            for sig in _SIGNALS:
                loop.remove_signal_handler(sig)
        if first_error is not None:
            raise first_error

    def _on_signal(self, sig: signal.Signals) -> None:
        self.signals += 1
        force = self.signals > 1  # a second signal means "now"
        _log.info("worker_process_signal", signal=sig.name, force=force, pid=os.getpid())
        self.stop(force=force)

    async def _beat(self) -> None:
        while True:
            if self.probe is not None:
                states = tuple(_state(w) for w in self.workers)
                self.probe.beat(all(s["healthy"] for s in states), states)
            if self.supervisor_pid is not None and os.getppid() != self.supervisor_pid:
                # The supervisor died (SIGKILL): nobody forwards signals any more.
                _log.warning("worker_process_orphaned", supervisor_pid=self.supervisor_pid)
                self.supervisor_pid = None
                self.stop()
            await asyncio.sleep(BEAT_INTERVAL_S)

    async def _burst(self) -> None:
        idle = 0
        while True:
            await asyncio.sleep(BURST_POLL_S)
            if not all(w.running for w in self.workers) or self._busy():
                idle = 0
                continue
            empty = all([await _nothing_to_fetch(w) for w in self.workers])
            idle = idle + 1 if empty and not self._busy() else 0
            if idle >= BURST_IDLE_ROUNDS:
                _log.info("worker_burst_done", queues=[w.name for w in self.workers])
                self.stop()
                return

    def _busy(self) -> bool:
        return any(w.active_jobs for w in self.workers)


def _state(worker: Worker) -> dict[str, Any]:
    return {
        "queue": worker.name,
        "id": worker.id,
        "running": worker.running,
        "healthy": worker.healthy(),
        "active_jobs": worker.active_jobs,
    }


async def _nothing_to_fetch(worker: Worker) -> bool:
    """No waiting job (or the queue is paused) and no delayed job due. Any doubt (Redis
    away) counts as work left."""
    keys = worker.keys
    try:
        async with asyncio.timeout(worker.redis_timeout or 5.0):
            pipe = worker.client.pipeline(transaction=False)
            pipe.zcard(keys["wait"])
            pipe.zrange(keys["delayed"], 0, 0, withscores=True)
            pipe.hget(keys["meta"], "paused")
            waiting, first_delayed, paused = await pipe.execute()
    except Exception:  # the next look tries again
        return False
    if paused:
        return True  # nothing this worker may take until the queue is resumed
    due = bool(first_delayed) and first_delayed[0][1] <= time.time() * 1000
    return waiting == 0 and not due
