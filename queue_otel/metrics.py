"""Metrics on queue_core's hooks: the four messaging-convention metrics, plus queue_core's
own (wait, end-to-end duration, retries, failures, stalls, rate limits, active jobs,
workers). Durations are seconds with job-shaped buckets (see ``semconv``).
``messaging.client.consumed.messages`` counts deliveries, as the fetch hands a job to the
worker (so once per attempt, retries included), with no outcome; an attempt's outcome and
``error.type`` are on ``messaging.process.duration``, failures for good on
``queue_core.job.failures``.

Attributes are bounded: the system, the queue, the job name, the outcome and
``error.type`` (an exception class name), and the Redis server; never a job or worker id.

Cost matters on a path taken thousands of times a second: a synchronous measurement in
the SDK costs 20-35 µs (it validates and hashes every attribute each time). So nothing
here measures through the SDK on the job's path: counts are kept in a dictionary and
handed to the SDK by observable instruments when metrics are collected; durations are
aggregated by ``BridgedHistogram`` (``histograms.py``) and merged into the SDK's own
histograms at collection, with exemplars (recorded inside the attempt's span, they carry
its trace). Attribute sets are built once each (``_Keys``). The values are the same:
monotonic counts stay monotonic, gauges report the current number, histograms have the
SDK's buckets, sums, minima and maxima.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from queue_core import (
    EnqueueEvent,
    Hook,
    Job,
    JobEvent,
    OperationEvent,
    ProcessEvent,
    QuarantineEvent,
    RateLimitEvent,
    StalledEvent,
    WorkerErrorEvent,
    WorkerEvent,
)
from queue_otel import semconv as sc
from queue_otel.histograms import BridgedHistogram
from queue_otel.scope import After
from queue_otel.tracing import FAILED_OUTCOMES, wait_seconds

__all__ = ["MetricsHook"]

Key = tuple[tuple[str, Any], ...]


class _Tally:
    """Counts per attribute set, safe across threads (SyncQueue producers run anywhere)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Key, float] = {}

    def add(self, key: Key, amount: float = 1) -> None:
        with self._lock:
            self._counts[key] = self._counts.get(key, 0) + amount

    def observe(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            items = list(self._counts.items())
        return [Observation(value, dict(key)) for key, value in items]


def _key(**attributes: Any) -> Key:
    return tuple(sorted((k, v) for k, v in attributes.items() if v is not None))


class _Keys:
    """Attribute keys of the hot path, built once per distinct (queue, job name, ...)."""

    def __init__(self) -> None:
        self._consumed: dict[tuple[Any, ...], Key] = {}
        self._process: dict[tuple[Any, ...], Key] = {}
        self._other: dict[tuple[Any, ...], Key] = {}  # by kind and values

    def client(self, event: EnqueueEvent, error: str | None) -> Key:
        """client.operation.duration key of one add."""
        signature = ("client", event.queue, event.server_address, event.server_port, error)
        key = self._other.get(signature)
        if key is None:
            key = self._other[signature] = _key(**self._send(event, error))
        return key

    def sent(self, event: EnqueueEvent, error: str | None, name: str) -> Key:
        """sent.messages key of one job added."""
        signature = ("sent", event.queue, event.server_address, event.server_port, error, name)
        key = self._other.get(signature)
        if key is None:
            key = self._other[signature] = _key(**self._send(event, error), **{sc.JOB_NAME: name})
        return key

    @staticmethod
    def _send(event: EnqueueEvent, error: str | None) -> dict[str, Any]:
        return {
            sc.MESSAGING_SYSTEM: sc.SYSTEM, sc.DESTINATION: event.queue,
            sc.SERVER_ADDRESS: event.server_address, sc.SERVER_PORT: event.server_port,
            sc.OPERATION_NAME: "send", sc.OPERATION_TYPE: "send", sc.ERROR_TYPE: error,
        }  # fmt: skip

    def job(
        self, queue: str, name: str, outcome: str | None = None, error: str | None = None
    ) -> Key:
        """A job's key (active jobs, wait time), with its outcome and error for its duration."""
        signature = ("job", queue, name, outcome, error)
        key = self._other.get(signature)
        if key is None:
            key = self._other[signature] = _key(**{
                sc.MESSAGING_SYSTEM: sc.SYSTEM, sc.DESTINATION: queue, sc.JOB_NAME: name,
                sc.JOB_OUTCOME: outcome, sc.ERROR_TYPE: error,
            })  # fmt: skip
        return key

    def consumed(self, event: ProcessEvent) -> Key:
        """consumed.messages key of one delivery: the fetch succeeded, so no error.type, and
        no outcome (the attempt has not run yet)."""
        signature = (event.queue, event.job.name, event.server_address, event.server_port)
        key = self._consumed.get(signature)
        if key is None:
            key = self._consumed[signature] = _key(**{
                sc.MESSAGING_SYSTEM: sc.SYSTEM, sc.DESTINATION: event.queue,
                sc.SERVER_ADDRESS: event.server_address, sc.SERVER_PORT: event.server_port,
                sc.OPERATION_NAME: "receive", sc.JOB_NAME: event.job.name,
            })  # fmt: skip
        return key

    def process(self, event: ProcessEvent, outcome: str, error: str | None) -> Key:
        """process.duration key of one attempt: its outcome, and error.type if it failed."""
        signature = (event.queue, event.job.name, event.server_address, event.server_port,
                     outcome, error)  # fmt: skip
        key = self._process.get(signature)
        if key is None:
            key = self._process[signature] = _key(**{
                sc.MESSAGING_SYSTEM: sc.SYSTEM, sc.DESTINATION: event.queue,
                sc.SERVER_ADDRESS: event.server_address, sc.SERVER_PORT: event.server_port,
                sc.OPERATION_NAME: "process", sc.OPERATION_TYPE: "process",
                sc.JOB_NAME: event.job.name, sc.JOB_OUTCOME: outcome, sc.ERROR_TYPE: error,
            })  # fmt: skip
        return key


class MetricsHook(Hook):
    def __init__(self, meter: Meter) -> None:
        self._sent = _Tally()
        self._consumed = _Tally()
        self._retries = _Tally()
        self._failures = _Tally()
        self._stalls = _Tally()
        self._active = _Tally()
        self._workers = _Tally()
        self._capacity = _Tally()
        self._worker_errors = _Tally()
        self._actions = _Tally()
        self._action_jobs = _Tally()
        self._scheduler_runs = _Tally()
        self._attributes: dict[Key, dict[str, Any]] = {}  # one dict per attribute set
        self._keys = _Keys()
        counters: list[tuple[str, str, str, _Tally, Callable[..., Any]]] = [
            (sc.SENT_MESSAGES, "{message}", "Jobs handed to Redis by producers.",
             self._sent, meter.create_observable_counter),
            (sc.CONSUMED_MESSAGES, "{message}",
             "Jobs delivered to workers by their fetch (each attempt is a delivery).",
             self._consumed, meter.create_observable_counter),
            (sc.RETRIES, "{retry}", "Retries scheduled after a failed attempt.",
             self._retries, meter.create_observable_counter),
            (sc.FAILURES, "{job}", "Jobs that failed for good, by error.type.",
             self._failures, meter.create_observable_counter),
            (sc.STALLS, "{job}", "Jobs recovered from a dead worker.",
             self._stalls, meter.create_observable_counter),
            (sc.ACTIVE_JOBS, "{job}", "Jobs running now.",
             self._active, meter.create_observable_up_down_counter),
            (sc.WORKERS, "{worker}", "Workers running now.",
             self._workers, meter.create_observable_up_down_counter),
            (sc.WORKER_CAPACITY, "{job}", "Jobs the running workers may run at once.",
             self._capacity, meter.create_observable_up_down_counter),
            (sc.WORKER_ERRORS, "{error}", "Unexpected errors in a worker's own loops.",
             self._worker_errors, meter.create_observable_counter),
            (sc.OPERATOR_ACTIONS, "{action}",
             "Operator actions (pause, retry, cancel, remove...), by operation and error.type.",
             self._actions, meter.create_observable_counter),
            (sc.OPERATOR_JOBS, "{job}", "Jobs changed by operator actions, by operation.",
             self._action_jobs, meter.create_observable_counter),
            (sc.SCHEDULER_RUNS, "{run}", "Runs of job schedulers started, by scheduler.",
             self._scheduler_runs, meter.create_observable_counter),
        ]  # fmt: skip
        for name, unit, description, tally, create in counters:
            callback: Callable[[CallbackOptions], Iterable[Observation]] = tally.observe
            if tally is self._sent:  # the first callback of a collection: hand histograms over
                callback = self._flush_then(tally.observe)
            create(name, callbacks=[callback], unit=unit, description=description)

        def histogram(name: str, description: str, buckets: tuple[float, ...]) -> Any:
            return BridgedHistogram(meter, name, description, buckets)

        self._client_duration = histogram(
            sc.CLIENT_OPERATION_DURATION, "Duration of enqueue calls.", sc.CLIENT_BUCKETS
        )
        self._process_duration = histogram(
            sc.PROCESS_DURATION,
            "Duration of one processing attempt, settling included, by outcome.",
            sc.JOB_BUCKETS,
        )  # fmt: skip
        self._wait = histogram(
            sc.WAIT_DURATION, "Time from a job becoming ready to its first attempt starting.",
            sc.JOB_BUCKETS,
        )  # fmt: skip
        self._job_duration = histogram(
            sc.JOB_DURATION, "Time from enqueue to the final outcome, retries and delays included.",
            sc.JOB_BUCKETS,
        )  # fmt: skip
        self._rate_limit = histogram(
            sc.RATE_LIMIT_DELAY, "Holds of fetching imposed by rate limits.", sc.JOB_BUCKETS
        )
        self._lateness = histogram(
            sc.SCHEDULER_LATENESS,
            "How late a scheduler's run started: its start minus the tick it was for.",
            sc.JOB_BUCKETS,
        )

    def _flush_then(
        self, observe: Callable[[CallbackOptions], Iterable[Observation]]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            for histogram in self._histograms:
                histogram.flush()
            return observe(options)

        return callback

    @property
    def _histograms(self) -> tuple[BridgedHistogram, ...]:
        return (self._client_duration, self._process_duration, self._wait, self._job_duration,
                self._rate_limit, self._lateness)  # fmt: skip

    def _record(self, histogram: BridgedHistogram, value: float, key: Key) -> None:
        histogram.record(value, key, self._dict(key))

    def _dict(self, key: Key) -> dict[str, Any]:
        """The attribute dict of ``key``, built once: a measurement reads it, never edits it."""
        attributes = self._attributes.get(key)
        if attributes is None:
            attributes = self._attributes[key] = dict(key)
        return attributes

    # ------------------------------------------------------------------ producer

    def around_enqueue(self, event: EnqueueEvent) -> After:
        return After(partial(self._after_enqueue, event, time.perf_counter()))

    def _after_enqueue(self, event: EnqueueEvent, started: float) -> None:
        error = type(event.error).__qualname__ if event.error is not None else None
        self._record(
            self._client_duration, time.perf_counter() - started, self._keys.client(event, error)
        )
        for job in event.jobs:
            if not job.duplicate:  # an existing job_id: nothing was written, nothing sent
                self._sent.add(self._keys.sent(event, error, job.name))

    # ------------------------------------------------------------------ worker

    def around_process(self, event: ProcessEvent) -> After:
        job = event.job
        active = self._keys.job(event.queue, job.name)
        if job.attempts_started == 1:
            self._record(self._wait, wait_seconds(job), active)
            if job.scheduler_id is not None:
                self._scheduler_run(event.queue, job)
        # The attempt starts as the fetch hands the job over: one delivery, counted now,
        # whatever the attempt then does (a retry is fetched, so counted, again).
        self._consumed.add(self._keys.consumed(event))
        self._active.add(active, 1)
        return After(partial(self._after_process, event, active, time.perf_counter()))

    def _after_process(self, event: ProcessEvent, active: Key, started: float) -> None:
        elapsed = time.perf_counter() - started
        self._active.add(active, -1)
        outcome = event.outcome or "interrupted"
        failed = outcome in FAILED_OUTCOMES and event.error is not None
        error = type(event.error).__qualname__ if failed else None
        key = self._keys.process(event, outcome, error)
        self._record(self._process_duration, elapsed, key)

    def _scheduler_run(self, queue: str, job: Job) -> None:
        key = _key(**{sc.MESSAGING_SYSTEM: sc.SYSTEM, sc.DESTINATION: queue,
                      sc.SCHEDULER_ID: job.scheduler_id})  # fmt: skip
        self._scheduler_runs.add(key)
        if job.started_at is not None and job.scheduled_for is not None:
            late = (job.started_at - job.scheduled_for).total_seconds()
            self._record(self._lateness, max(0.0, late), key)

    def on_completed(self, event: JobEvent) -> None:
        self._finished(event.queue, event.job, None)

    def on_cancelled(self, event: JobEvent) -> None:
        self._finished(event.queue, event.job, None, outcome="cancelled")

    # ------------------------------------------------------------------ operator

    @contextmanager
    def around_operation(self, event: OperationEvent) -> Iterator[None]:
        yield
        error = type(event.error).__qualname__ if event.error is not None else None
        base = {sc.MESSAGING_SYSTEM: sc.SYSTEM, sc.DESTINATION: event.queue,
                sc.OPERATION: event.operation}  # fmt: skip
        self._actions.add(_key(**base, **{sc.ERROR_TYPE: error}))
        if event.count:
            self._action_jobs.add(_key(**base), event.count)

    def on_failed(self, event: JobEvent) -> None:
        error_type = type(event.error).__qualname__ if event.error else event.job.error_type
        self._finished(event.queue, event.job, error_type or "_OTHER")

    def _finished(
        self, queue: str, job: Job, error_type: str | None, outcome: str | None = None
    ) -> None:
        if job.finished_at is not None:
            outcome = outcome or ("failed" if error_type else "completed")
            key = self._keys.job(queue, job.name, outcome, error_type)
            elapsed = (job.finished_at - job.enqueued_at).total_seconds()
            self._record(self._job_duration, max(0.0, elapsed), key)
        if error_type is not None:
            self._failures.add(self._keys.job(queue, job.name, error=error_type))

    def on_retry_scheduled(self, event: JobEvent) -> None:
        error = type(event.error).__qualname__ if event.error is not None else None
        self._retries.add(
            _key(**{sc.MESSAGING_SYSTEM: sc.SYSTEM, sc.DESTINATION: event.queue,
                    sc.JOB_NAME: event.job.name, sc.ERROR_TYPE: error})
        )  # fmt: skip

    def on_stalled(self, event: StalledEvent) -> None:
        base = {sc.MESSAGING_SYSTEM: sc.SYSTEM, sc.DESTINATION: event.queue}
        if event.requeued:
            self._stalls.add(_key(**base, **{sc.STALL_OUTCOME: "requeued"}), len(event.requeued))
        for job in event.failed:
            self._stalls.add(_key(**base, **{sc.STALL_OUTCOME: "failed", sc.JOB_NAME: job.name}))
            self._finished(event.queue, job, job.error_type or "StalledJobError")

    def on_rate_limited(self, event: RateLimitEvent) -> None:
        kind = "manual" if event.manual else "limiter"
        key = _key(**{sc.MESSAGING_SYSTEM: sc.SYSTEM, sc.DESTINATION: event.queue,
                      sc.RATE_LIMIT_KIND: kind})  # fmt: skip
        self._record(self._rate_limit, event.delay, key)

    def on_worker_started(self, event: WorkerEvent) -> None:
        key = _key(**{sc.MESSAGING_SYSTEM: sc.SYSTEM, sc.DESTINATION: event.queue})
        self._workers.add(key, 1)
        self._capacity.add(key, event.concurrency)

    def on_worker_error(self, event: WorkerErrorEvent) -> None:
        self._worker_errors.add(
            _key(**{sc.MESSAGING_SYSTEM: sc.SYSTEM, sc.DESTINATION: event.queue,
                    sc.WORKER_LOOP: event.loop, sc.ERROR_TYPE: type(event.error).__qualname__})
        )  # fmt: skip

    def on_quarantined(self, event: QuarantineEvent) -> None:
        # Corrupt jobs the worker never ran: failures whose job name cannot be read.
        key = _key(**{sc.MESSAGING_SYSTEM: sc.SYSTEM, sc.DESTINATION: event.queue,
                      sc.ERROR_TYPE: "CorruptJobError"})  # fmt: skip
        self._failures.add(key, len(event.jobs))

    def on_worker_stopped(self, event: WorkerEvent) -> None:
        key = _key(**{sc.MESSAGING_SYSTEM: sc.SYSTEM, sc.DESTINATION: event.queue})
        self._workers.add(key, -1)
        self._capacity.add(key, -event.concurrency)
