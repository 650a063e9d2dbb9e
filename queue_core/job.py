"""``Job``: a snapshot of one job, and the operations a processor may call on it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from queue_core.errors import QueueError
from queue_core.options import JobOptions

if TYPE_CHECKING:
    from queue_core.errors import CorruptJobError, UnsupportedFormatError

__all__ = ["Job", "JobState"]


class JobState(StrEnum):
    WAITING = "waiting"
    ACTIVE = "active"
    DELAYED = "delayed"
    COMPLETED = "completed"
    FAILED = "failed"
    UNKNOWN = "unknown"


class JobBackend(Protocol):
    """What a ``Job`` calls back into: the queue or worker it came from."""

    async def update_progress(self, job: Job, progress: Any) -> None: ...

    async def add_log(self, job: Job, line: str) -> int: ...

    async def get_logs(self, job: Job) -> list[str]: ...

    async def move_to_delayed(self, job: Job, when: float | timedelta | datetime) -> None: ...

    async def refresh(self, job: Job) -> Job: ...


def ms_to_datetime(ms: float | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


@dataclass(slots=True, eq=False)
class Job:
    """A job as read from Redis. Fields are a snapshot; ``await job.refresh()`` re-reads them.

    ``attempts_started`` grows each time a worker starts the job (stalls and delays
    included); ``attempts_made`` grows each time an attempt finishes (completed, failed or
    retried). ``headers`` holds metadata written by enqueue hooks, such as trace context;
    it is never part of ``data``.

    ``read_error`` is set only on jobs of a listing (``get_jobs``) whose stored data could
    not be read (``CorruptJobError``, ``UnsupportedFormatError``): the fields that could
    not be decoded keep their defaults. ``corrupt_record`` is the unreadable record of a
    job that a worker quarantined.
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
    started_at: datetime | None = None
    finished_at: datetime | None = None
    delayed_until: datetime | None = None
    progress: Any = None
    return_value: Any = None
    failed_reason: str | None = None
    error_type: str | None = None
    stacktrace: str | None = None
    read_error: CorruptJobError | UnsupportedFormatError | None = None
    corrupt_record: bytes | None = None
    _token: str | None = field(default=None, repr=False)
    _backend: JobBackend | None = field(default=None, repr=False)
    _moved: bool = field(default=False, repr=False)

    def __repr__(self) -> str:
        return (
            f"Job(id={self.id!r}, name={self.name!r}, queue={self.queue_name!r}, "
            f"state={self.state.value!r}, attempts_made={self.attempts_made})"
        )

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
        leaves active at once; whatever the processor does afterwards is not recorded.
        """
        await self._require_backend().move_to_delayed(self, when)
        self._moved = True

    async def refresh(self) -> Job:
        """A fresh snapshot of this job from Redis."""
        return await self._require_backend().refresh(self)
