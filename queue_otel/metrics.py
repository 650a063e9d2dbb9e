"""Metrics on queue_core's hooks: the four messaging-convention metrics, plus queue_core's
own (wait, end-to-end duration, retries, failures, stalls, rate limits, active jobs,
workers). Durations are seconds with job-shaped buckets (see ``semconv``).

Attributes are bounded: the system, the queue, the job name, the outcome and
``error.type`` (an exception class name), and the Redis server; never a job or worker id.
When this hook runs inside the tracing hook, every measurement taken during an attempt
carries that attempt's trace as an exemplar.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry.metrics import Meter

from queue_core import (
    EnqueueEvent,
    Hook,
    Job,
    JobEvent,
    ProcessEvent,
    RateLimitEvent,
    StalledEvent,
    WorkerEvent,
)
from queue_otel import semconv as sc
from queue_otel.tracing import FAILED_OUTCOMES, wait_seconds

__all__ = ["MetricsHook"]


def _base(queue: str, address: str | None = None, port: int | None = None) -> dict[str, Any]:
    attributes: dict[str, Any] = {sc.MESSAGING_SYSTEM: sc.SYSTEM, sc.DESTINATION: queue}
    if address is not None:
        attributes[sc.SERVER_ADDRESS] = address
    if port is not None:
        attributes[sc.SERVER_PORT] = port
    return attributes


def _job(queue: str, job: Job) -> dict[str, Any]:
    return {**_base(queue), sc.JOB_NAME: job.name}


class MetricsHook(Hook):
    def __init__(self, meter: Meter) -> None:
        self.sent = meter.create_counter(
            sc.SENT_MESSAGES, unit="{message}", description="Jobs handed to Redis by producers."
        )
        self.consumed = meter.create_counter(
            sc.CONSUMED_MESSAGES,
            unit="{message}",
            description="Job attempts delivered to processors, by outcome.",
        )
        self.client_duration = meter.create_histogram(
            sc.CLIENT_OPERATION_DURATION,
            unit="s",
            description="Duration of enqueue calls.",
            explicit_bucket_boundaries_advisory=list(sc.CLIENT_BUCKETS),
        )
        self.process_duration = meter.create_histogram(
            sc.PROCESS_DURATION,
            unit="s",
            description="Duration of one processing attempt, settling included.",
            explicit_bucket_boundaries_advisory=list(sc.JOB_BUCKETS),
        )
        self.wait = meter.create_histogram(
            sc.WAIT_DURATION,
            unit="s",
            description="Time from a job becoming ready to its first attempt starting.",
            explicit_bucket_boundaries_advisory=list(sc.JOB_BUCKETS),
        )
        self.job_duration = meter.create_histogram(
            sc.JOB_DURATION,
            unit="s",
            description="Time from enqueue to the final outcome, retries and delays included.",
            explicit_bucket_boundaries_advisory=list(sc.JOB_BUCKETS),
        )
        self.retries = meter.create_counter(
            sc.RETRIES, unit="{retry}", description="Retries scheduled after a failed attempt."
        )
        self.failures = meter.create_counter(
            sc.FAILURES, unit="{job}", description="Jobs that failed for good, by error.type."
        )
        self.stalls = meter.create_counter(
            sc.STALLS, unit="{job}", description="Jobs recovered from a dead worker."
        )
        self.rate_limit = meter.create_histogram(
            sc.RATE_LIMIT_DELAY,
            unit="s",
            description="Holds of fetching imposed by rate limits.",
            explicit_bucket_boundaries_advisory=list(sc.JOB_BUCKETS),
        )
        self.active = meter.create_up_down_counter(
            sc.ACTIVE_JOBS, unit="{job}", description="Jobs running now."
        )
        self.workers = meter.create_up_down_counter(
            sc.WORKERS, unit="{worker}", description="Workers running now."
        )
        self.capacity = meter.create_up_down_counter(
            sc.WORKER_CAPACITY,
            unit="{job}",
            description="Jobs the running workers may run at once.",
        )

    @contextmanager
    def around_enqueue(self, event: EnqueueEvent) -> Iterator[None]:
        started = time.perf_counter()
        yield
        attributes = {
            **_base(event.queue, event.server_address, event.server_port),
            sc.OPERATION_NAME: "send",
            sc.OPERATION_TYPE: "send",
        }
        if event.error is not None:
            attributes[sc.ERROR_TYPE] = type(event.error).__qualname__
        self.client_duration.record(time.perf_counter() - started, attributes)
        for job in event.jobs:
            self.sent.add(1, {**attributes, sc.JOB_NAME: job.name})

    @contextmanager
    def around_process(self, event: ProcessEvent) -> Iterator[None]:
        job = event.job
        attributes = {
            **_base(event.queue, event.server_address, event.server_port),
            sc.OPERATION_NAME: "process",
            sc.OPERATION_TYPE: "process",
            sc.JOB_NAME: job.name,
        }
        if job.attempts_started == 1:
            self.wait.record(wait_seconds(job), _job(event.queue, job))
        active = _job(event.queue, job)
        self.active.add(1, active)
        started = time.perf_counter()
        try:
            yield
        finally:
            self.active.add(-1, active)
            outcome = event.outcome or "interrupted"
            if outcome in FAILED_OUTCOMES and event.error is not None:
                attributes[sc.ERROR_TYPE] = type(event.error).__qualname__
            self.process_duration.record(time.perf_counter() - started, attributes)
            self.consumed.add(1, {**attributes, sc.JOB_OUTCOME: outcome})

    def on_completed(self, event: JobEvent) -> None:
        self._finished(event.queue, event.job, None)

    def on_failed(self, event: JobEvent) -> None:
        error_type = type(event.error).__qualname__ if event.error else event.job.error_type
        self._finished(event.queue, event.job, error_type or "_OTHER")

    def _finished(self, queue: str, job: Job, error_type: str | None) -> None:
        attributes = _job(queue, job)
        if job.finished_at is not None:
            outcome = {sc.JOB_OUTCOME: "failed" if error_type else "completed"}
            if error_type:
                outcome[sc.ERROR_TYPE] = error_type
            elapsed = (job.finished_at - job.enqueued_at).total_seconds()
            self.job_duration.record(max(0.0, elapsed), {**attributes, **outcome})
        if error_type is not None:
            self.failures.add(1, {**attributes, sc.ERROR_TYPE: error_type})

    def on_retry_scheduled(self, event: JobEvent) -> None:
        attributes = _job(event.queue, event.job)
        if event.error is not None:
            attributes[sc.ERROR_TYPE] = type(event.error).__qualname__
        self.retries.add(1, attributes)

    def on_stalled(self, event: StalledEvent) -> None:
        base = _base(event.queue)
        if event.requeued:
            self.stalls.add(len(event.requeued), {**base, sc.STALL_OUTCOME: "requeued"})
        for job in event.failed:
            self.stalls.add(1, {**_job(event.queue, job), sc.STALL_OUTCOME: "failed"})
            self._finished(event.queue, job, job.error_type or "StalledJobError")

    def on_rate_limited(self, event: RateLimitEvent) -> None:
        kind = "manual" if event.manual else "limiter"
        self.rate_limit.record(event.delay, {**_base(event.queue), sc.RATE_LIMIT_KIND: kind})

    def on_worker_started(self, event: WorkerEvent) -> None:
        self.workers.add(1, _base(event.queue))
        self.capacity.add(event.concurrency, _base(event.queue))

    def on_worker_stopped(self, event: WorkerEvent) -> None:
        self.workers.add(-1, _base(event.queue))
        self.capacity.add(-event.concurrency, _base(event.queue))
