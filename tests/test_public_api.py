"""The public API is what ``queue_core.__all__`` lists, no more and no less: adding or
removing a name is a decision, made here on purpose (the modules behind it are private)."""

from __future__ import annotations

import inspect

import queue_core

PUBLIC = {
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
}


def test_the_public_api_is_pinned() -> None:
    assert set(queue_core.__all__) == PUBLIC
    assert len(queue_core.__all__) == len(PUBLIC)  # no name listed twice


def test_every_public_class_and_function_says_what_it_is() -> None:
    for name in PUBLIC:
        value = getattr(queue_core, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert value.__doc__, f"queue_core.{name} has no docstring"


def test_the_job_browser_api_is_pinned() -> None:
    import queue_core.ui  # noqa: PLC0415 - needs the [ui] extra, as users' imports do

    assert sorted(queue_core.ui.__all__) == ["BasicAuth", "TokenAuth", "hash_password", "queue_ui"]
    for name in queue_core.ui.__all__:
        assert getattr(queue_core.ui, name).__doc__, f"queue_core.ui.{name} has no docstring"
