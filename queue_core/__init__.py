"""queue_core: a Redis job queue for Python, with BullMQ's model in Python idiom.

Delivery is at least once: after a crash a job can run twice, so make processors
idempotent (a stable ``job_id``, idempotency keys). The curated public API is below.
"""

from queue_core.admin import QueueConfig
from queue_core.commands import JobSpec, QueueStats
from queue_core.errors import (
    ClusterClientRequiredError,
    CorruptJobError,
    DelayedError,
    DependencyFailedError,
    EventsDisabledError,
    InvalidOptionError,
    InvalidScheduleError,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    JobStateError,
    JobTimeoutError,
    LockLostError,
    PartialFlowError,
    PayloadTooLargeError,
    ProcessCrashedError,
    QueueBusyError,
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
from queue_core.events import QueueEvent, QueueEvents
from queue_core.flow_producer import FlowProducer
from queue_core.flows import Dependency, DependencyStatus, FailurePolicy, FlowJob, FlowNode
from queue_core.hooks import (
    EnqueuedJob,
    EnqueueEvent,
    Hook,
    InternalEvent,
    JobEvent,
    OperationEvent,
    Outcome,
    ProcessEvent,
    QuarantineEvent,
    RateLimitEvent,
    StalledEvent,
    WorkerErrorEvent,
    WorkerEvent,
    acting_as,
    register_hook,
    unregister_hook,
)
from queue_core.job import AttemptError, Job, JobRef, JobState
from queue_core.log import (
    configure_logging,
    get_logger,
    register_log_processor,
    unregister_log_processor,
)
from queue_core.options import Backoff, Dedup, JobOptions, KeepJobs, RateLimit
from queue_core.pool_child import ProcessPoolJob
from queue_core.queue import Queue
from queue_core.registry import WorkerInfo
from queue_core.retry import BackoffStrategy
from queue_core.schedulers import SchedulerInfo
from queue_core.serializer import JsonSerializer, Serializer
from queue_core.sync import SyncQueue
from queue_core.worker import Processor, Worker

__all__ = [
    "AttemptError",
    "Backoff",
    "BackoffStrategy",
    "ClusterClientRequiredError",
    "CorruptJobError",
    "Dedup",
    "DelayedError",
    "Dependency",
    "DependencyFailedError",
    "DependencyStatus",
    "EnqueueEvent",
    "EnqueuedJob",
    "EventsDisabledError",
    "FailurePolicy",
    "FlowJob",
    "FlowNode",
    "FlowProducer",
    "Hook",
    "InternalEvent",
    "InvalidOptionError",
    "InvalidScheduleError",
    "Job",
    "JobCancelledError",
    "JobEvent",
    "JobFailedError",
    "JobNotFoundError",
    "JobOptions",
    "JobRef",
    "JobSpec",
    "JobState",
    "JobStateError",
    "JobTimeoutError",
    "JsonSerializer",
    "KeepJobs",
    "LockLostError",
    "OperationEvent",
    "Outcome",
    "PartialFlowError",
    "PayloadTooLargeError",
    "ProcessCrashedError",
    "ProcessEvent",
    "ProcessPoolJob",
    "Processor",
    "QuarantineEvent",
    "Queue",
    "QueueBusyError",
    "QueueConfig",
    "QueueError",
    "QueueEvent",
    "QueueEvents",
    "QueueStats",
    "RateLimit",
    "RateLimitError",
    "RateLimitEvent",
    "RedisFullError",
    "RedisTimeoutError",
    "RedisUnavailableError",
    "SchedulerInfo",
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
    "WorkerInfo",
    "acting_as",
    "configure_logging",
    "get_logger",
    "register_hook",
    "register_log_processor",
    "unregister_hook",
    "unregister_log_processor",
]
__version__ = "0.1.0"
