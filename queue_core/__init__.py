"""queue_core: a Redis job queue for Python, with BullMQ's model in Python idiom.

Delivery is at least once: after a crash a job can run twice, so make processors
idempotent (a stable ``job_id``, idempotency keys). The curated public API is below.
"""

from queue_core.commands import JobSpec, QueueStats
from queue_core.errors import (
    ClusterClientRequiredError,
    CorruptJobError,
    DelayedError,
    InvalidOptionError,
    JobNotFoundError,
    JobTimeoutError,
    LockLostError,
    PayloadTooLargeError,
    QueueError,
    RateLimitError,
    RedisFullError,
    RedisTimeoutError,
    RedisUnavailableError,
    SerializationError,
    StalledJobError,
    UnrecoverableError,
    UnsupportedFormatError,
)
from queue_core.hooks import (
    EnqueuedJob,
    EnqueueEvent,
    Hook,
    InternalEvent,
    JobEvent,
    Outcome,
    ProcessEvent,
    QuarantineEvent,
    RateLimitEvent,
    StalledEvent,
    WorkerErrorEvent,
    WorkerEvent,
    register_hook,
    unregister_hook,
)
from queue_core.job import Job, JobState
from queue_core.log import configure_logging, register_log_processor, unregister_log_processor
from queue_core.options import Backoff, JobOptions, KeepJobs, RateLimit
from queue_core.queue import Queue
from queue_core.retry import BackoffStrategy
from queue_core.serializer import JsonSerializer, Serializer
from queue_core.sync import SyncQueue
from queue_core.worker import Processor, Worker

__all__ = [
    "Backoff",
    "BackoffStrategy",
    "ClusterClientRequiredError",
    "CorruptJobError",
    "DelayedError",
    "EnqueueEvent",
    "EnqueuedJob",
    "Hook",
    "InternalEvent",
    "InvalidOptionError",
    "Job",
    "JobEvent",
    "JobNotFoundError",
    "JobOptions",
    "JobSpec",
    "JobState",
    "JobTimeoutError",
    "JsonSerializer",
    "KeepJobs",
    "LockLostError",
    "Outcome",
    "PayloadTooLargeError",
    "ProcessEvent",
    "Processor",
    "QuarantineEvent",
    "Queue",
    "QueueError",
    "QueueStats",
    "RateLimit",
    "RateLimitError",
    "RateLimitEvent",
    "RedisFullError",
    "RedisTimeoutError",
    "RedisUnavailableError",
    "SerializationError",
    "Serializer",
    "StalledEvent",
    "StalledJobError",
    "SyncQueue",
    "UnrecoverableError",
    "UnsupportedFormatError",
    "Worker",
    "WorkerErrorEvent",
    "WorkerEvent",
    "configure_logging",
    "register_hook",
    "register_log_processor",
    "unregister_hook",
    "unregister_log_processor",
]
__version__ = "0.1.0"
