"""``Job``: a snapshot of one job, and the operations a processor may call on it."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from queue_core.errors import QueueError
from queue_core.options import JobOptions

if TYPE_CHECKING:
    from queue_core.errors import CorruptJobError, UnsupportedFormatError
    from queue_core.flows import Dependency

__all__ = ["AttemptError", "Job", "JobRef", "JobState"]


class JobState(StrEnum):
    """Where a job is: the set that holds it in Redis (``unknown``: none does)."""

    WAITING = "waiting"
    ACTIVE = "active"
    DELAYED = "delayed"
    COMPLETED = "completed"
    FAILED = "failed"
    WAITING_CHILDREN = "waiting_children"  # a flow's parent, until its children finish
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class JobRef:
    """A job anywhere: its queue and id. ``str(ref)`` is ``"queue:id"``."""

    queue: str
    id: str

    def __str__(self) -> str:
        return f"{self.queue}:{self.id}"

    def wire(self) -> str:
        """The ref as the scripts store it: JSON ``[queue, id]`` (names may hold ``:``)."""
        return orjson.dumps([self.queue, self.id]).decode()

    @classmethod
    def from_wire(cls, raw: str | bytes) -> JobRef:
        value = orjson.loads(raw)
        if not (
            isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)
        ):
            raise ValueError(f"not a job ref: {raw!r}")
        return cls(value[0], value[1])


@dataclass(frozen=True, slots=True)
class AttemptError:
    """The error of one failure of a job, as ``Job.errors`` lists them.

    ``attempt`` is the attempt the failure ended, numbered as ``attempts_made`` counts
    them (from 1, again after each ``retry_job``); None when it ended no attempt: the job
    was cancelled while not running, stalled too often, was quarantined or failed by a
    child, or the error was stored by an older queue_core (which kept no number nor
    time). ``type`` is the error's class name and ``stack`` its formatted traceback (None
    for errors raised by queue_core itself rather than by a processor)."""

    attempt: int | None
    type: str | None
    message: str
    stack: str | None
    failed_at: datetime | None


class JobBackend(Protocol):
    """What a ``Job`` calls back into: the queue or worker it came from."""

    async def update_progress(self, job: Job, progress: Any) -> None: ...

    async def add_log(self, job: Job, line: str) -> int: ...

    async def get_logs(self, job: Job) -> list[str]: ...

    async def move_to_delayed(self, job: Job, when: float | timedelta | datetime) -> None: ...

    async def refresh(self, job: Job) -> Job: ...

    async def retry_job(self, job_id: str) -> None: ...

    async def promote_job(self, job_id: str) -> None: ...

    async def remove_job(self, job_id: str) -> None: ...

    async def update_job_data(self, job_id: str, data: Any) -> None: ...

    async def get_dependencies(self, job: Job) -> list[Dependency]: ...

    async def wait_until_finished(
        self,
        job_id: str,
        timeout: float | timedelta | None = None,  # noqa: ASYNC109 - the whole wait's bound
    ) -> Any: ...


_CANCELLED_LOCK = threading.Lock()


def ms_to_datetime(ms: float | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass(slots=True, eq=False)
class Job:
    """A job as read from Redis. Fields are a snapshot; ``await job.refresh()`` re-reads them.

    ``ready_at`` is when the job last became ready to run, if not at its enqueue: its
    delay ran out (a scheduler's run: its tick), a stall or an operator sent it back, or
    a flow parent's children all finished.

    ``attempts_started`` grows each time a worker starts the job (stalls and delays
    included); ``attempts_made`` grows each time an attempt finishes (completed, failed or
    retried). ``manual_retries`` counts the times an operator sent the finished job back
    to run (``retry_job``), which resets both. ``headers`` holds metadata written by
    enqueue hooks, such as trace context; it is never part of ``data``.

    ``failed_reason``, ``error_type`` and ``stacktrace`` describe the latest failure, if
    the job has not completed nor been retried by an operator since. ``errors`` lists the
    error of each failure (``AttemptError``), oldest first, at most the last 10; they stay
    when the job completes or an operator retries it.

    ``read_error`` is set only on jobs of a listing (``get_jobs``) whose stored data could
    not be read (``CorruptJobError``, ``UnsupportedFormatError``): the fields that could
    not be decoded keep their defaults. ``corrupt_record`` is the unreadable record of a
    job that a worker quarantined.

    ``deduplicated`` is True on the job an add returned instead of creating one: the job
    that already held the add's ``job_id`` or ``dedup`` key (see ``Dedup``). Its fields
    are that job's, not the add's (with ``Dedup(replace=True)``, the add's data replaced
    the held job's). When the holding job of a ttl-held key is gone already (removed by
    its retention), the job returned has that id, state ``UNKNOWN`` and no data.

    ``scheduler_id`` is set on the runs of a job scheduler (``upsert_scheduler``), and
    ``scheduled_for`` is the tick a run is for: ``started_at - scheduled_for`` is its
    lateness.

    In a flow (``FlowProducer``), ``parent`` is the job a child's outcome goes to. A
    parent that a worker runs has ``dependencies``: its children's outcomes as they were
    when the attempt started (``get_dependencies()`` reads them again).
    """

    id: str
    name: str
    data: Any
    queue_name: str
    options: JobOptions
    headers: Mapping[str, str]
    state: JobState
    enqueued_at: datetime
    attempts_started: int = 0
    attempts_made: int = 0
    stalled_count: int = 0
    manual_retries: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    ready_at: datetime | None = None
    delayed_until: datetime | None = None
    progress: Any = None
    return_value: Any = None
    failed_reason: str | None = None
    error_type: str | None = None
    stacktrace: str | None = None
    errors: list[AttemptError] = field(default_factory=list)
    read_error: CorruptJobError | UnsupportedFormatError | None = None
    corrupt_record: bytes | None = None
    deduplicated: bool = False
    scheduler_id: str | None = None
    scheduled_for: datetime | None = None
    parent: JobRef | None = None
    dependencies: list[Dependency] | None = None
    _token: str | None = field(default=None, repr=False)
    _backend: JobBackend | None = field(default=None, repr=False)
    _moved: bool = field(default=False, repr=False)
    _cancelled: threading.Event | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        return (
            f"Job(id={self.id!r}, name={self.name!r}, queue={self.queue_name!r}, "
            f"state={self.state.value!r}, attempts_made={self.attempts_made})"
        )

    @property
    def cancelled(self) -> threading.Event:
        """Set when ``queue.cancel()`` asked this running job to stop. A plain ``def``
        processor (run in a thread) checks it, e.g. ``job.cancelled.wait(0.01)``, and
        returns; an ``async`` processor's task is cancelled as well (it sees
        ``asyncio.CancelledError``). Whatever the processor then returns or raises, the
        attempt ends as cancelled: failed for good with ``JobCancelledError``."""
        event = self._cancelled
        if event is None:  # made on first use: most jobs never need one
            with _CANCELLED_LOCK:  # the worker's thread and the processor's may race here
                if self._cancelled is None:
                    self._cancelled = threading.Event()
                event = self._cancelled
        return event

    @property
    def ref(self) -> JobRef:
        """This job's queue and id (``str(job.ref)`` is ``"queue:id"``)."""
        return JobRef(self.queue_name, self.id)

    @property
    def attempt(self) -> int:
        """The number of the attempt running now (1 for the first)."""
        return self.attempts_started

    def _require_backend(self) -> JobBackend:
        if self._backend is None:
            raise QueueError(
                "this Job is a detached snapshot (from SyncQueue); use an async Queue or "
                "the Worker's job to call its methods"
            )
        return self._backend

    async def update_progress(self, progress: Any) -> None:
        """Store progress: a number (e.g. a percentage) or any JSON value."""
        await self._require_backend().update_progress(self, progress)
        self.progress = progress

    async def log(self, line: str) -> int:
        """Append a line to the job's log; returns the number of lines kept."""
        return await self._require_backend().add_log(self, line)

    async def get_logs(self) -> list[str]:
        return await self._require_backend().get_logs(self)

    async def move_to_delayed(self, when: float | timedelta | datetime) -> None:
        """Re-schedule the running job without using an attempt (from inside a processor).

        ``when`` is a delay (seconds or ``timedelta``) or an absolute ``datetime``. The job
        leaves active at once; whatever the processor does afterwards is not recorded. If
        its cancel was requested (``queue.cancel``), it is failed as cancelled instead and
        this raises ``JobCancelledError``.
        """
        await self._require_backend().move_to_delayed(self, when)
        self._moved = True

    async def refresh(self) -> Job:
        """A fresh snapshot of this job from Redis."""
        return await self._require_backend().refresh(self)

    async def wait_until_finished(
        self,
        timeout: float | timedelta | None = None,  # noqa: ASYNC109 - the whole wait's bound
    ) -> Any:
        """Wait for this job to finish and return its return value (see
        ``Queue.wait_until_finished``: raises ``JobFailedError``, ``JobCancelledError``,
        ``JobNotFoundError``, or ``TimeoutError`` after ``timeout`` seconds)."""
        return await self._require_backend().wait_until_finished(self.id, timeout)

    # ----- an operator's actions (Queue.retry_job and its siblings): this snapshot
    # follows what the script did; the rest of Redis's view comes with refresh().

    async def retry(self) -> None:
        """Send this failed or completed job back to waiting, its attempts reset (see
        ``Queue.retry_job``)."""
        await self._require_backend().retry_job(self.id)
        self.state = JobState.WAITING
        self.attempts_started = self.attempts_made = self.stalled_count = 0
        self.manual_retries += 1
        self.started_at = self.finished_at = None
        self.progress = self.return_value = None
        self.failed_reason = self.error_type = self.stacktrace = None

    async def promote(self) -> None:
        """Make this delayed job ready now (see ``Queue.promote_job``)."""
        await self._require_backend().promote_job(self.id)
        self.state = JobState.WAITING
        self.delayed_until = None

    async def remove(self) -> None:
        """Remove this job and every trace of it (see ``Queue.remove_job``)."""
        await self._require_backend().remove_job(self.id)
        self.state = JobState.UNKNOWN

    async def get_dependencies(self) -> list[Dependency]:
        """This parent's children (in the order the flow gave them), each with its status
        (pending, completed, failed, ignored, removed) and value or failure."""
        return await self._require_backend().get_dependencies(self)

    async def get_children_values(self) -> dict[str, Any]:
        """The return values of this parent's completed children, by ``"queue:id"``."""
        return {
            str(dep.ref): dep.value
            for dep in await self.get_dependencies()
            if dep.status == "completed"
        }

    async def update_data(self, data: Any) -> None:
        """Replace this job's data (see ``Queue.update_job_data``)."""
        await self._require_backend().update_job_data(self.id, data)
        self.data = data
