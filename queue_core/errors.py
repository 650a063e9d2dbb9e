"""Typed errors.

Two families live here. ``QueueError`` and its subclasses are raised *to* callers: bad
input, an unreachable Redis, a missing job. The processor-facing exceptions
(``UnrecoverableError``, ``DelayedError``, ``RateLimitError``) are raised *by* user code
inside a job to steer what happens to it next.
"""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = [
    "DelayedError",
    "InvalidOptionError",
    "JobNotFoundError",
    "JobTimeoutError",
    "LockLostError",
    "PayloadTooLargeError",
    "QueueError",
    "RateLimitError",
    "RedisUnavailableError",
    "SerializationError",
    "StalledJobError",
    "UnrecoverableError",
]


class QueueError(Exception):
    """Base class of every error queue_core raises to its callers."""


class InvalidOptionError(QueueError, ValueError):
    """An option, queue name, job name or job id is invalid. Nothing was written."""


class SerializationError(QueueError, ValueError):
    """A payload or return value could not be encoded or decoded. Nothing was written."""


class PayloadTooLargeError(QueueError, ValueError):
    """An encoded job is larger than the queue's ``max_payload_bytes``. Nothing was written."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"encoded job is {size} bytes, above the limit of {limit} bytes")
        self.size = size
        self.limit = limit


class RedisUnavailableError(QueueError, ConnectionError):
    """Redis could not be reached, or the connection dropped during a call.

    Every operation is one atomic script, so a call that raised this either happened
    whole or not at all. A producer that sees it may retry; with a ``job_id`` the retry
    is idempotent.
    """


class JobNotFoundError(QueueError, LookupError):
    """The job does not exist (it may have been removed by a retention policy)."""


class LockLostError(QueueError):
    """The worker no longer holds the job's lock: another worker recovered it as stalled.

    The result of this attempt is discarded; the job runs (or ran) again elsewhere.
    """


class JobTimeoutError(QueueError, TimeoutError):
    """An attempt ran longer than the job's ``timeout`` option. Counts as a failed attempt."""


class StalledJobError(QueueError):
    """Recorded as the failure of a job that stalled more than ``max_stalled_count`` times."""


class UnrecoverableError(Exception):
    """Raise from a processor to fail the job at once, skipping any remaining attempts."""


class DelayedError(Exception):
    """Raise from a processor to re-schedule the job without using up an attempt.

    ``delay`` is seconds (float), a ``timedelta`` or an absolute ``datetime``.
    """

    def __init__(self, delay: float | timedelta | datetime, message: str = "") -> None:
        super().__init__(message or f"job re-scheduled: {delay!r}")
        self.delay = delay


class RateLimitError(Exception):
    """Raise from a processor when an upstream rate-limits you (an HTTP 429, say).

    The job goes back to wait without using an attempt, and every worker of the queue
    stops fetching for ``seconds``.
    """

    def __init__(self, seconds: float | timedelta, message: str = "") -> None:
        super().__init__(message or f"rate limited for {seconds!r}")
        self.seconds = seconds
