"""``ProcessPool``: runs plain ``def`` processors in child processes, for CPU-bound work
(``Worker(pool="process")``).

Each child runs one job at a time (pool_child.py), so a child that dies (a segfault,
``os._exit``, the OOM killer) takes only its own job with it: that attempt fails with
``ProcessCrashedError`` and is retried or not by the usual rules, and the next job gets
a fresh child. ``concurrent.futures.ProcessPoolExecutor`` would instead break the whole
pool and every job in it. Children start on demand, up to ``size``, and are kept while
the worker runs. They are started with "spawn": a forked child would inherit the event
loop and the Redis connections.

Cancelling the task that awaits ``run`` (the job's timeout, ``queue.cancel``, a forced
shutdown) kills the job's child. The parent reads each child's pipe with
``loop.add_reader``: the child's requests (progress, log lines) are carried out with
the real job, its ``logging`` records go to the parent's loggers with the job's fields.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import multiprocessing
import multiprocessing.util  # its atexit hook (joining children) must run after ours
import pickle
import signal
import weakref
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Final

from queue_core.errors import (
    JobTimeoutError,
    ProcessCrashedError,
    QueueError,
    SerializationError,
)
from queue_core.job import Job
from queue_core.log import get_logger
from queue_core.pool_child import child_main, job_fields, pack_error, unpack_error

__all__ = ["ProcessPool"]

_SPAWN: Final = multiprocessing.get_context("spawn")
_EXIT_WAIT_S: Final = 2.0  # how long close() lets idle children exit before killing them
_STATUS_WAIT_S: Final = 1.0  # a dead child's exit status follows its pipe's end within this
_START_WAIT_S: Final = 120.0  # a child that has not started by then is stuck

_log = get_logger("queue_core.worker")
_pools: weakref.WeakSet[ProcessPool] = weakref.WeakSet()


def _child_log_level() -> int:
    """The lowest level any of this process's loggers lets through: a child sends the
    records at or above it, and the parent's loggers filter them again."""
    levels = [logging.getLogger().getEffectiveLevel()]
    levels += [
        logger.level
        for logger in list(logging.Logger.manager.loggerDict.values())
        if isinstance(logger, logging.Logger) and logger.level
    ]
    return min(levels)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "closed its pipe"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class _Child:
    """One child process and the parent's end of its pipe."""

    def __init__(self, pool: ProcessPool, loop: asyncio.AbstractEventLoop, number: int) -> None:
        self.pool = pool
        self.loop = loop
        conn, child_conn = _SPAWN.Pipe()
        self.process: BaseProcess = _SPAWN.Process(
            target=child_main,
            args=(child_conn, _child_log_level()),
            name=f"{pool.name}-{number}",
        )
        self.process.start()
        child_conn.close()  # else the parent would never see the pipe's end when it dies
        self.pid: int = self.process.pid or 0
        self.conn: Connection = conn
        self.inbox: asyncio.Queue[tuple[str, Any] | None] = asyncio.Queue()  # None: gone
        self.job: Job | None = None
        self.alive = True
        self.ready = False  # its main loop runs: it got past importing the main module
        self.start_settled = asyncio.Event()  # ready, or gone
        loop.add_reader(conn.fileno(), self._readable)

    # ----- the pipe

    def _readable(self) -> None:
        try:
            while self.alive and self.conn.poll():
                data = self.conn.recv_bytes()
                try:
                    message = pickle.loads(data)  # noqa: S301 - our own child's pipe
                except Exception as exc:  # a value the parent cannot import, say
                    self.inbox.put_nowait(("broken", f"{type(exc).__name__}: {exc}"))
                    continue
                if message[0] == "record":
                    self._log(message[1])
                elif message[0] == "ready":
                    self.ready = True
                    self.start_settled.set()
                else:
                    self.inbox.put_nowait(message)
        except (EOFError, OSError):  # the child is gone
            self._detach()
            self.inbox.put_nowait(None)
            self.start_settled.set()
            self.pool._lost(self)

    def _log(self, record: logging.LogRecord) -> None:
        logger = logging.getLogger(record.name)
        if not logger.isEnabledFor(record.levelno):
            return
        job = self.job
        if job is not None:  # the fields the worker binds to its own lines in a job
            fields = {
                "job_id": job.id,
                "queue": job.queue_name,
                "job_name": job.name,
                "attempt": job.attempts_started,
            }
            for key, value in fields.items():
                record.__dict__.setdefault(key, value)
        logger.handle(record)

    def _send(self, message: Any) -> None:
        """Send, ignoring a child that is gone: its pipe's end tells the reader."""
        data = pickle.dumps(message)
        with contextlib.suppress(OSError):
            self.conn.send_bytes(data)

    def _detach(self) -> None:
        if self.alive:
            self.alive = False
            self.loop.remove_reader(self.conn.fileno())
            self.conn.close()

    def stop(self) -> None:
        """Let an idle child exit: it sees its pipe end."""
        self._detach()
        self.pool._reap(self.process)

    def kill(self) -> None:
        self._detach()
        if self.process.exitcode is None:
            self.process.kill()
        self.pool._reap(self.process)

    # ----- one job

    async def started(self, job: Job) -> None:
        """Wait until the child runs its main loop: a new one imports queue_core, the
        main module and its own, which can take seconds that no job's timeout counts."""
        try:
            await asyncio.wait_for(self.start_settled.wait(), _START_WAIT_S)
        except TimeoutError:
            self.kill()
            raise ProcessCrashedError(
                f"the child process for job {job.id} (pid {self.pid}) did not start within "
                f"{_START_WAIT_S:g} s"
            ) from None
        if not self.ready:
            raise await self._crashed(job)

    async def run(self, fn: Callable[[Job], Any], job: Job) -> Any:
        try:
            message = pickle.dumps((fn, job_fields(job)))
        except Exception as exc:
            raise SerializationError(
                f"job {job.id} could not be sent to a child process: {exc}"
            ) from exc
        self.job = job
        try:
            with contextlib.suppress(OSError):  # a child that died: the reader tells
                self.conn.send_bytes(message)
            while True:
                reply = await self.inbox.get()
                if reply is None:
                    raise await self._crashed(job)
                kind, value = reply
                if kind == "done":
                    return value
                if kind == "failed":
                    raise unpack_error(value)
                if kind == "broken":
                    self.kill()  # it waits for an answer that will not come
                    raise SerializationError(
                        f"a message from the child process running job {job.id} could not "
                        f"be read: {value}"
                    )
                await self._answer(job, kind, value)
        except asyncio.CancelledError:  # a timeout, a cancel or a forced shutdown
            if self.alive:
                _log.info("process_pool_child_killed", job_id=job.id, pid=self.pid)
            self.kill()
            raise
        finally:
            self.job = None

    async def _answer(self, job: Job, kind: str, value: Any) -> None:
        try:
            if kind == "progress":
                await job.update_progress(value)
                reply: tuple[str, Any] = ("ok", None)
            elif kind == "log":
                reply = ("ok", await job.log(value))
            else:
                raise QueueError(f"unknown request from a child process: {kind!r}")
        except Exception as exc:
            reply = ("error", pack_error(exc))
        self._send(reply)

    async def _crashed(self, job: Job) -> ProcessCrashedError:
        deadline = self.loop.time() + _STATUS_WAIT_S
        while self.process.exitcode is None and self.loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)  # waitpid has no event to await
        how = _describe_exit(self.process.exitcode)
        if not self.ready:
            how += (
                " while starting (its error is on stderr; a script that starts workers "
                "needs `if __name__ == '__main__':`, as spawned children import it again)"
            )
        self.kill()
        _log.warning("process_pool_child_died", job_id=job.id, pid=self.pid, how=how)
        return ProcessCrashedError(
            f"the child process running job {job.id} (pid {self.pid}) {how} before the job finished"
        )


class ProcessPool:
    """Up to ``size`` child processes, one job each at a time."""

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._slots = asyncio.Semaphore(size)
        self._children: set[_Child] = set()  # alive
        self._idle: list[_Child] = []
        self._exiting: set[BaseProcess] = set()  # stopped or killed, not yet reaped
        self._reaper: asyncio.Task[None] | None = None
        self._started = 0
        self._closing = False
        _pools.add(self)

    async def run(
        self,
        fn: Callable[[Job], Any],
        job: Job,
        timeout: float | None,  # noqa: ASYNC109 - the job's own, from the child's start
    ) -> Any:
        """``fn(job)`` in a child; its return value, or its error raised here. ``timeout``
        counts from when the child has the job: waiting for a free child, or for a new
        one to start, is not the job's running time."""
        async with self._slots:  # so a child is idle, or one more may start
            child = self._idle.pop() if self._idle else self._start()
            try:
                await child.started(job)
                try:
                    async with asyncio.timeout(timeout) as scope:
                        return await child.run(fn, job)
                except TimeoutError as exc:
                    if scope.expired():  # child.run killed the child
                        raise JobTimeoutError(
                            f"attempt {job.attempts_started} ran longer than its {timeout} s "
                            "timeout: its child process was killed"
                        ) from exc
                    raise
            finally:
                if child.alive:
                    self._idle.append(child)
                    if self._closing:  # not expected: close() comes after the last job
                        child.stop()

    def _start(self) -> _Child:
        if self._closing:
            raise QueueError("the worker's process pool is closed")
        self._started += 1
        child = _Child(self, asyncio.get_running_loop(), self._started)
        self._children.add(child)
        _log.info("process_pool_child_started", pool=self.name, pid=child.pid)
        return child

    def _lost(self, child: _Child) -> None:
        """The reader saw ``child``'s pipe end: it died (or is dying)."""
        self._children.discard(child)
        if child in self._idle:
            self._idle.remove(child)
            how = _describe_exit(child.process.exitcode)
            _log.warning("process_pool_child_died", pool=self.name, pid=child.pid, how=how)
        self._reap(child.process)

    def _reap(self, process: BaseProcess) -> None:
        for child in [c for c in self._children if c.process is process]:
            self._children.discard(child)
            if child in self._idle:
                self._idle.remove(child)
        self._exiting.add(process)
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.get_running_loop().create_task(self._reap_exited())

    def _collect(self) -> None:
        for process in list(self._exiting):
            if process.exitcode is not None:  # waitpid: no zombie left
                self._exiting.discard(process)
                process.close()

    async def _reap_exited(self) -> None:
        while self._exiting:
            self._collect()
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        """Stop the children: idle ones exit by themselves (within 2 s), busy ones (a
        shutdown that gave up on their jobs) are killed, as is any that lingers."""
        self._closing = True
        for child in list(self._children):
            if child.job is None:
                child.stop()
            else:
                child.kill()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _EXIT_WAIT_S
        while self._exiting and loop.time() < deadline:
            self._collect()
            await asyncio.sleep(0.02)
        for process in self._exiting:
            if process.exitcode is None:
                process.kill()
        deadline = loop.time() + _STATUS_WAIT_S
        while self._exiting and loop.time() < deadline:
            self._collect()
            await asyncio.sleep(0.02)
        if self._reaper is not None:
            self._reaper.cancel()
        if self._exiting:
            _log.warning("process_pool_children_left", pids=[p.pid for p in self._exiting])

    def kill_all(self) -> None:
        """Kill every child still running (also at interpreter exit, for a worker never
        closed: the event loop may be gone, so only the processes are touched)."""
        for process in [*(child.process for child in self._children), *self._exiting]:
            with contextlib.suppress(ValueError):  # closed already
                if process.exitcode is None:
                    process.kill()


@atexit.register
def _kill_children() -> None:
    # Registered after multiprocessing's own hook, so it runs first: that hook joins
    # every child, which would wait forever for an idle child of a worker never closed.
    for pool in list(_pools):
        pool.kill_all()
