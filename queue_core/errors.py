"""Typed errors.

The tree::

    QueueError                       raised to callers by queue_core
    ├── InvalidOptionError           bad input; nothing was written
    │   └── InvalidScheduleError     a job scheduler's bad cron, zone, period or bounds
    ├── SerializationError           a payload or result that cannot be encoded
    ├── PayloadTooLargeError
    ├── RedisUnavailableError        connection faults: refused, dropped, a failover
    │   └── RedisTimeoutError        no reply within the call's deadline
    ├── RedisFullError               Redis refused a write: maxmemory reached
    ├── ClusterClientRequiredError   a Cluster node redirected a non-cluster client
    ├── CorruptJobError              a stored job that cannot be read
    ├── UnsupportedFormatError       a job written by a newer queue_core
    ├── JobNotFoundError  LockLostError  JobTimeoutError  StalledJobError
    ├── ProcessCrashedError          a process-pool child died while running the job
    ├── JobStateError                the job's state forbids the operation; nothing changed
    ├── QueueBusyError               obliterate refused: jobs are active (force=True)
    ├── EventsDisabledError          waiting for a job on a queue that records no events
    ├── PartialFlowError             a flow add on Redis Cluster failed half way, undo too
    └── JobFailedError               wait_until_finished: the job failed for good
        ├── JobCancelledError        ... because it was cancelled (queue.cancel)
        └── DependencyFailedError    ... because a flow child failed with "fail_parent"

Two families live here. ``QueueError`` and its subclasses are raised *to* callers: bad
input, an unreachable Redis, a missing job. The processor-facing exceptions
(``UnrecoverableError``, ``DelayedError``, ``RateLimitError``) are raised *by* user code
inside a job to steer what happens to it next.
"""

from __future__ import annotations

from datetime import datetime, timedelta

__all__ = [
    "ClusterClientRequiredError",
    "CorruptJobError",
    "DelayedError",
    "DependencyFailedError",
    "EventsDisabledError",
    "InvalidOptionError",
    "InvalidScheduleError",
    "JobCancelledError",
    "JobFailedError",
    "JobNotFoundError",
    "JobStateError",
    "JobTimeoutError",
    "LockLostError",
    "PartialFlowError",
    "PayloadTooLargeError",
    "ProcessCrashedError",
    "QueueBusyError",
    "QueueError",
    "RateLimitError",
    "RedisFullError",
    "RedisTimeoutError",
    "RedisUnavailableError",
    "SerializationError",
    "StalledJobError",
    "UnrecoverableError",
    "UnsupportedFormatError",
]


class QueueError(Exception):
    """Base class of every error queue_core raises to its callers."""


class InvalidOptionError(QueueError, ValueError):
    """An option, queue name, job name or job id is invalid. Nothing was written."""


class InvalidScheduleError(InvalidOptionError):
    """A job scheduler's schedule is invalid (a cron expression, a time zone, both or
    neither of every and cron, end before start...). Nothing was written."""


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


class RedisTimeoutError(RedisUnavailableError, TimeoutError):
    """Redis did not answer within the call's deadline (``redis_timeout``): the server is
    frozen, overloaded or unreachable behind a stuck network.

    Unlike a refused connection, the command may have reached Redis and may still run
    once it answers again: an add that raised this may or may not have happened. Retry
    it with the same ``job_id`` to make the retry safe.
    """


class RedisFullError(QueueError):
    """Redis refused a write because it reached ``maxmemory`` (policy ``noeviction``).

    Nothing was written. Back off and retry once memory is freed (workers finishing and
    retention trimming free it), or raise ``maxmemory``.
    """


class ClusterClientRequiredError(QueueError):
    """A Redis Cluster node answered MOVED or ASK: the queue lives on another node, and
    the client is a plain one. Pass a ``redis.asyncio.cluster.RedisCluster`` (or
    ``redis.cluster.RedisCluster`` to ``SyncQueue``) as ``redis=``."""


class CorruptJobError(QueueError):
    """A stored job cannot be read: its record or envelope is not what queue_core wrote
    (invalid JSON, a wrong shape, missing fields, undecodable data).

    A worker that meets such a job quarantines it: the job goes to the failed set with
    this error as its reason, and its unreadable record is kept for inspection. Readers
    (``get_job``) raise it with ``job_id``, ``reasons`` and the ``raw`` stored values.
    """

    def __init__(
        self, job_id: str, reasons: list[str], raw: dict[str, bytes | None] | None = None
    ) -> None:
        super().__init__(f"job {job_id!r} is corrupt: {'; '.join(reasons)}")
        self.job_id = job_id
        self.reasons = reasons
        self.raw = raw or {}


class UnsupportedFormatError(QueueError):
    """A job was stored by a newer queue_core whose format this version does not read.

    Workers leave such jobs for workers of the newer version (see "Rolling upgrades" in
    the README); readers raise this instead of guessing.
    """

    def __init__(self, job_id: str, version: object, supported: int) -> None:
        super().__init__(
            f"job {job_id!r} has format version {version!r}; this queue_core reads up to "
            f"{supported}: upgrade it"
        )
        self.job_id = job_id
        self.version = version
        self.supported = supported


class JobNotFoundError(QueueError, LookupError):
    """The job does not exist (it may have been removed by a retention policy)."""


class JobStateError(QueueError):
    """The job's state forbids the operation (retrying an active job, promoting one that
    is not delayed, cancelling a finished one...). Nothing was changed."""

    def __init__(self, job_id: str, state: str, operation: str, message: str = "") -> None:
        super().__init__(
            message or f"cannot {operation} job {job_id!r}: it is {state}",
        )
        self.job_id = job_id
        self.state = state
        self.operation = operation


class QueueBusyError(QueueError):
    """``obliterate`` refused because ``active`` jobs are running (pass ``force=True`` to
    remove them too). Nothing was changed by the call that raised it."""

    def __init__(self, queue: str, active: int) -> None:
        super().__init__(
            f"cannot obliterate queue {queue!r}: jobs are active ({active}); "
            "pass force=True to remove them too"
        )
        self.queue = queue
        self.active = active


class EventsDisabledError(QueueError):
    """``wait_until_finished`` on a queue whose events are off: waiting reads the events
    stream. Turn events on with ``queue.set_events_max_length(None)`` (or a length)."""


class PartialFlowError(QueueError):
    """``FlowProducer.add`` on a Redis Cluster failed after adding part of the tree, and
    removing that part failed too (Redis was away for both). ``left`` lists the jobs
    left behind, ``"queue:id"``: parents waiting for children that were never added,
    and perhaps some children; remove them (``remove_job``) or add the flow again.
    On a single Redis a flow is one transaction, and this is never raised."""

    def __init__(self, left: list[str], cause: BaseException) -> None:
        super().__init__(
            f"the flow was added in part and could not be removed ({cause!r}); "
            f"jobs left: {', '.join(left)}"
        )
        self.left = left


class JobFailedError(QueueError):
    """The job failed for good: raised by ``wait_until_finished``. ``reason`` is its
    error's message and ``error_type`` its class name, as the worker recorded them."""

    def __init__(self, job_id: str, reason: str, error_type: str) -> None:
        super().__init__(f"job {job_id!r} failed: {error_type}: {reason}")
        self.job_id = job_id
        self.reason = reason
        self.error_type = error_type


class JobCancelledError(JobFailedError):
    """The job was cancelled (``queue.cancel``). It is the recorded failure of a cancelled
    job (never retried), and what ``wait_until_finished`` raises for one. Its message is
    the reason given to ``cancel``."""

    def __init__(self, job_id: str, reason: str = "", error_type: str = "JobCancelledError"):
        super().__init__(job_id, reason or "cancelled", error_type)
        self.args = (self.reason,)


class DependencyFailedError(JobFailedError):
    """A flow parent failed because a child with ``on_failure="fail_parent"`` failed: the
    recorded failure of such a parent (it never ran), and what ``wait_until_finished``
    raises for it. ``reason`` names the child (``queue:id``) and gives its reason."""

    def __init__(self, job_id: str, reason: str, error_type: str = "DependencyFailedError"):
        super().__init__(job_id, reason, error_type)


class LockLostError(QueueError):
    """The worker no longer holds the job's lock: another worker recovered it as stalled.

    The result of this attempt is discarded; the job runs (or ran) again elsewhere.
    """


class JobTimeoutError(QueueError, TimeoutError):
    """An attempt ran longer than the job's ``timeout`` option. Counts as a failed attempt."""


class ProcessCrashedError(QueueError):
    """The child process running the job (``Worker(pool="process")``) died before the
    job finished: killed, a segfault, ``os._exit``. Counts as a failed attempt; the
    worker's other jobs go on, and the next job gets a new child."""


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

    def __reduce__(self) -> tuple[object, ...]:  # pickled whole (from a process pool)
        return (type(self), (self.delay, str(self)))


class RateLimitError(Exception):
    """Raise from a processor when an upstream rate-limits you (an HTTP 429, say).

    The job goes back to wait without using an attempt, and every worker of the queue
    stops fetching for ``seconds``.
    """

    def __init__(self, seconds: float | timedelta, message: str = "") -> None:
        super().__init__(message or f"rate limited for {seconds!r}")
        self.seconds = seconds

    def __reduce__(self) -> tuple[object, ...]:  # pickled whole (from a process pool)
        return (type(self), (self.seconds, str(self)))
