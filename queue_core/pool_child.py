"""The child side of the process pool (process_pool.py): what runs in each child process,
the job a processor sees there, and how errors travel back.

A child runs one job at a time, sent over its pipe as the processor (pickled by
reference: a module-level function) and the job's fields; it answers ``("done",
value)`` or ``("failed", packed error)``. In between, ``job.update_progress`` and
``job.log`` are requests the parent carries out with the real job, and the child's
``logging`` records are sent to the parent's loggers. A child ignores SIGINT and SIGTERM
(a terminal's Ctrl-C or systemd's stop reaches the whole group; the parent decides when
its children stop) and exits by itself when the parent dies.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import threading
import traceback
from dataclasses import fields
from functools import cache
from multiprocessing.connection import Connection, wait
from typing import Any, NoReturn

from queue_core.errors import QueueError, SerializationError
from queue_core.job import Job

__all__ = ["ProcessPoolJob", "child_main", "job_fields", "pack_error", "unpack_error"]

PackedError = tuple[bytes | None, str, str, str]  # (pickled error, type name, message, traceback)

_LOGGING_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__)


def job_fields(job: Job) -> dict[str, Any]:
    """What a child needs to rebuild the job: its public fields."""
    return {f.name: getattr(job, f.name) for f in fields(Job) if not f.name.startswith("_")}


# ----- errors


class _ChildTraceback(Exception):
    """The traceback of an error raised in a child, as its ``__cause__`` (as
    ``concurrent.futures`` does): the stored stack shows the child's frames."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text}"""'


@cache
def _named_error(type_name: str) -> type[Exception]:
    """A stand-in for an error that could not travel pickled, under its own name (the
    job records ``error_type`` by class name)."""
    return type(type_name, (Exception,), {"__module__": __name__})


def pack_error(error: BaseException) -> PackedError:
    text = "".join(traceback.format_exception(error))
    try:
        data: bytes | None = pickle.dumps(error)
    except Exception:
        data = None
    return data, type(error).__name__, str(error), text


def unpack_error(packed: PackedError) -> Exception:
    """The error as the other side raised it, if it unpickles as an ``Exception`` (so
    ``UnrecoverableError``, ``DelayedError`` and backoff rules keyed on its type behave
    as in a thread), else a stand-in with its type name and message."""
    data, type_name, message, text = packed
    error: object = None
    if data is not None:
        try:
            error = pickle.loads(data)  # noqa: S301 - our own child's pipe
        except Exception:
            error = None
    if not isinstance(error, Exception):  # unpicklable, or SystemExit and kin
        error = _named_error(type_name)(message)
    error.__cause__ = _ChildTraceback(text)
    return error


# ----- the job in a child


class _Link:
    """The child's end of its pipe, shared by the processor's threads and logging."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, message: Any) -> None:
        self.send_bytes(pickle.dumps(message))

    def send_bytes(self, data: bytes) -> None:
        with self.lock:
            self.conn.send_bytes(data)

    def request(self, message: Any) -> Any:
        data = pickle.dumps(message)
        with self.lock:  # the answer to this request is the next message in
            self.conn.send_bytes(data)
            status, value = pickle.loads(self.conn.recv_bytes())  # noqa: S301 - the parent
        if status == "error":
            raise unpack_error(value)
        return value


class ProcessPoolJob(Job):
    """The job as a processor sees it in a process-pool child (``Worker(pool="process")``).

    Its fields are the job's, as in a thread. ``update_progress`` and ``log`` are plain
    calls here (no ``await``): the worker's process stores them, and they return once it
    has. The rest of the job's methods (``refresh``, ``move_to_delayed``, ``get_logs``...)
    need the worker's connection and raise ``QueueError`` in a child; raise
    ``DelayedError`` instead of ``move_to_delayed``. ``job.cancelled`` is never set: a
    cancelled job's child is killed.
    """

    __slots__ = ("_link",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._link: _Link | None = None

    def update_progress(self, progress: Any) -> None:  # type: ignore[override]
        """Store progress (a number or any JSON value)."""
        self._linked().request(("progress", progress))
        self.progress = progress

    def log(self, line: str) -> int:  # type: ignore[override]
        """Append a line to the job's log; returns the number of lines kept."""
        kept: int = self._linked().request(("log", line))
        return kept

    def _linked(self) -> _Link:
        if self._link is None:
            raise QueueError(f"job {self.id}'s attempt is over: its progress and log are closed")
        return self._link

    def _require_backend(self) -> NoReturn:
        raise QueueError(
            "in a process-pool child a job has update_progress() and log() only; its other "
            "methods need the worker's Redis connection"
        )


# ----- logging


class _PipeHandler(logging.Handler):
    """Sends the child's ``logging`` records to the parent, which hands them to its own
    loggers (its configuration decides level, format and destination)."""

    def __init__(self, link: _Link) -> None:
        super().__init__()
        self.link = link

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.link.send(("record", _portable(record)))
        except Exception:
            self.handleError(record)


def _portable(record: logging.LogRecord) -> logging.LogRecord:
    """A copy that pickles: its message rendered, the traceback as text, extra fields
    that do not pickle as their repr."""
    state = dict(record.__dict__)
    state["msg"], state["args"] = record.getMessage(), None
    if record.exc_info:
        formatted = record.exc_text or logging.Formatter().formatException(record.exc_info)
        state["exc_text"] = formatted
    state["exc_info"] = None
    for key, value in state.items():
        if key not in _LOGGING_ATTRIBUTES:
            try:
                pickle.dumps(value)
            except Exception:
                state[key] = repr(value)
    return logging.makeLogRecord(state)


# ----- the child's main loop


def _exit_with_parent() -> None:
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        wait([parent.sentinel])
        os._exit(1)  # the parent is gone: nobody would read the result

    threading.Thread(target=watch, name="queue_core-parent-watch", daemon=True).start()


def child_main(conn: Connection, log_level: int) -> None:
    """A child's life: run jobs until the parent closes the pipe (or dies)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _exit_with_parent()
    link = _Link(conn)
    root = logging.getLogger()
    root.handlers = [_PipeHandler(link)]
    root.setLevel(log_level)
    link.send(("ready", os.getpid()))  # it started: a later death is the job's doing
    while True:
        try:
            data = conn.recv_bytes()
        except EOFError:
            return
        job: ProcessPoolJob | None = None
        try:
            fn, job_kwargs = pickle.loads(data)  # noqa: S301 - the parent's; imports fn
            job = ProcessPoolJob(**job_kwargs)
            job._link = link
            answer: Any = ("done", fn(job))
        except BaseException as exc:
            answer = ("failed", pack_error(exc))
        finally:
            if job is not None:
                job._link = None
        try:
            reply = pickle.dumps(answer)
        except Exception as exc:  # a return value that does not pickle
            error = SerializationError(
                f"the processor's return value could not be sent to the worker: {exc}"
            )
            reply = pickle.dumps(("failed", pack_error(error)))
        link.send_bytes(reply)
