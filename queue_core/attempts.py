"""``JobRunner``: the worker's slots, each running one job at a time: decode it, call the
processor, settle the attempt in Redis, tell the hooks, and take the next job that the
settle call handed back.

A job whose stored data cannot be decoded never reaches the processor: it is failed for
good with a ``CorruptJobError``. A settle that meets a Redis fault is retried (its lock
token makes the retry safe); one that meets anything else is reported and the job is left
to stalled recovery, so a slot never crashes on a settle. A job cancelled while it runs
(``queue.cancel``, heard by ``cancel()``) ends its attempt as cancelled: failed for good
with ``JobCancelledError``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import structlog

from queue_core.commands import (
    ALREADY_SETTLED,
    CANCELLED,
    QUARANTINED,
    SETTLED,
    Settled,
    delay_args,
    error_json,
    parse_settle,
)
from queue_core.decoding import job_from_wire
from queue_core.envelope import decode_record
from queue_core.errors import (
    CorruptJobError,
    DelayedError,
    JobCancelledError,
    JobTimeoutError,
    LockLostError,
    RateLimitError,
    SerializationError,
    UnrecoverableError,
)
from queue_core.hooks import Around, HookSet, JobEvent, ProcessEvent, notify
from queue_core.job import Job, JobState, ms_to_datetime
from queue_core.log import get_logger
from queue_core.options import to_ms, to_seconds
from queue_core.process_pool import ProcessPool
from queue_core.retry import BackoffStrategy, retry_delay
from queue_core.scripts import load_script
from queue_core.task_cancels import TaskCancels
from queue_core.threads import DaemonThreadPool
from queue_core.worker_context import WorkerContext

__all__ = ["JobRunner", "Processors", "RawJob"]

RawJob = tuple[str, bytes, bytes]  # (id, envelope, record) as a fetch returns it
Processors = dict[str | None, tuple[Callable[[Job], Any], bool]]  # name -> (fn, is async)

_COMPLETE = load_script("move_to_completed")
_FAIL = load_script("move_to_failed")
_DELAY = load_script("move_to_delayed")

_log = get_logger("queue_core.worker")
# How long a cancel request for a job not held here still applies if the job turns up:
# long enough for a fetch's reply in flight, short enough that a job retried by an
# operator after its cancellation is not cancelled again by a stale request.
_UNCLAIMED_S = 3.0
_UNCLAIMED_MAX = 10_000
# The hooks told of each outcome (HookSet's attribute).
_HOOKS_OF = {
    "completed": "on_completed",
    "failed": "on_failed",
    "cancelled": "on_cancelled",
    "retry": "on_retry_scheduled",
    "delayed": "on_delayed",
    "rate_limited": "on_delayed",
}


class JobRunner:
    def __init__(
        self,
        ctx: WorkerContext,
        processors: Processors,
        backoff_strategies: Mapping[str, BackoffStrategy],
        pool: ProcessPool | None = None,
    ) -> None:
        self.ctx = ctx
        self.processors = processors
        self.backoff_strategies = backoff_strategies
        self.slots: set[asyncio.Task[None]] = set()
        self.slot_freed = asyncio.Event()  # a slot ended, or the worker is closing
        self.threads = DaemonThreadPool(f"queue_core-{ctx.name}")
        self.pool = pool  # plain def processors run there rather than in threads
        self.settle_errors = ctx.supervisor("settle")
        # Set by the Fetcher: hold fetching for ms (manual: True for RateLimitError).
        self.on_hold: Callable[[int, bool], Awaitable[None]] | None = None
        # Slots running an async (or process-pool) processor now, and those cancel() cancelled
        # (again at a lock renewal if the task is still in its processor by then).
        self._in_processor: dict[str, asyncio.Task[Any] | None] = {}
        self._cancelling = TaskCancels(ctx.fetch_settings.lock_ms / 2000)
        self._cancelled_early: set[str] = set()  # held jobs cancelled before they started
        # Requests for jobs not held here, by when they came: a fetch's reply may still be
        # on its way (the job is active in Redis and the request was published after it).
        self._unclaimed: dict[str, float] = {}

    # ----- slots

    def spawn(self, raw: RawJob) -> None:
        self.ctx.held.add(raw[0])
        task = asyncio.create_task(self._slot(raw))
        self.slots.add(task)
        task.add_done_callback(self._slot_done)

    def _slot_done(self, task: asyncio.Task[None]) -> None:
        self.slots.discard(task)
        self.slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            # Not expected: _process reports its own errors. Kept observable all the same.
            self.ctx.spawn(self.settle_errors.failed(task.exception()))  # type: ignore[arg-type]

    async def _slot(self, raw: RawJob | None) -> None:
        """Run jobs one after the other: each settle call hands back the next job."""
        while raw is not None:
            job_id = raw[0]
            try:
                raw = await self._process(raw)
            finally:
                if raw is None or raw[0] != job_id:  # the settle may hand it back at once
                    self.ctx.held.discard(job_id)
                    if self._cancelled_early:  # a request that came as it settled: moot
                        self._cancelled_early.discard(job_id)

    # ----- cancellation

    def cancel(self, job_id: str) -> None:
        """queue.cancel() asked to stop ``job_id`` (heard by the CancelListener, or again
        by the LockRenewer): if it runs here, set ``job.cancelled`` and cancel an async
        processor's task; if it was fetched here and has not started, it ends as cancelled
        without running. Jobs running elsewhere are ignored, and so is a repeated request,
        unless the task is still in its processor a lock renewal after the last
        cancellation: the processor lost it, and it is cancelled again (task_cancels.py)."""
        job = self.ctx.running.get(job_id)
        if job is None:
            if job_id in self.ctx.held:  # fetched, not started yet (or between two jobs)
                _log.info("job_cancel_requested", job_id=job_id, queue=self.ctx.name)
                self._cancelled_early.add(job_id)
            else:
                self._remember_unclaimed(job_id)
            return
        if job.cancelled.is_set():
            if self._cancelling.again(job_id):  # its processor lost the first one
                _log.warning("job_cancel_repeated", job_id=job_id, queue=self.ctx.name)
            return
        _log.info("job_cancel_requested", job_id=job_id, queue=self.ctx.name)
        job.cancelled.set()
        task = self._in_processor.pop(job_id, None)
        if task is not None:
            self._cancelling.deliver(job_id, task)

    def _remember_unclaimed(self, job_id: str) -> None:
        now = time.monotonic()
        unclaimed = self._unclaimed
        unclaimed.pop(job_id, None)
        unclaimed[job_id] = now  # insertion order is age order: the oldest go first
        while unclaimed:
            oldest, heard = next(iter(unclaimed.items()))
            if heard >= now - _UNCLAIMED_S and len(unclaimed) <= _UNCLAIMED_MAX:
                break
            del unclaimed[oldest]

    def _claim_cancel(self, job_id: str) -> bool:
        """True if this job, just taken, was cancelled before this worker knew it held it
        (the request came while the fetch's reply did)."""
        if self._cancelled_early and job_id in self._cancelled_early:
            self._cancelled_early.discard(job_id)
            return True
        heard = self._unclaimed.pop(job_id, None) if self._unclaimed else None
        return heard is not None and heard >= time.monotonic() - _UNCLAIMED_S

    def _stopped_by_cancel(self, job: Job) -> bool:
        """True when cancel() stopped this attempt, undoing its task.cancel(); False if
        the task is being cancelled for another reason too (a forced shutdown wins)."""
        if not self._cancelling.undo(job.id):
            return False
        return job.cancelled.is_set()

    async def _cancel_attempt(
        self, job: Job, hooks: HookSet, event: ProcessEvent | None
    ) -> RawJob | None:
        """Whatever the processor did, the attempt ends as cancelled, never retried (the
        script stores the JobCancelledError with the request's reason). If a settle of
        this attempt already ran (a ``move_to_delayed`` interrupted by the cancel, which
        the script turned into the cancellation), this one finds it settled: the outcome
        is the cancellation all the same, told to the hooks once."""
        error = JobCancelledError(job.id)
        job.failed_reason, job.error_type = str(error), type(error).__name__
        if event is not None:
            event.error = error
        settled = await self._settle(_FAIL, job, [error_json(error)], event=event)
        return await self._after_settle(job, settled, "cancelled", hooks, event, error=error)

    # ----- one job

    async def _process(self, raw: RawJob) -> RawJob | None:
        job_id, envelope, raw_record = raw
        record = decode_record(raw_record)  # just written by the fetch script, which checked it
        job = job_from_wire(
            self.ctx.name,
            job_id,
            envelope,
            record,
            self.ctx.serializer,
            state=JobState.ACTIVE,
            backend=self.ctx.backend,
            lenient=True,
        )
        # The slot's task runs one job after another: each binds its own log context over
        # the last one's, never resetting it (a reset cost as much as the binding), since
        # nothing logs in this task between a job's end and the next job's binding.
        structlog.contextvars.bind_contextvars(
            job_id=job.id, queue=self.ctx.name, job_name=job.name, attempt=job.attempts_started
        )
        if "dpn" in record and job.read_error is None:  # a flow's parent: hooks link to these
            job.dependencies = await self.ctx.read_dependencies(job)
        if self._claim_cancel(job_id):
            _log.info("job_cancel_requested", job_id=job_id, queue=self.ctx.name)
            job.cancelled.set()  # the attempt ends as cancelled without running
        if job.read_error is not None:
            return await self._quarantine(job)
        self.ctx.running[job.id] = job
        try:
            return await self._attempt(job)
        finally:
            self.ctx.running.pop(job.id, None)

    async def _quarantine(self, job: Job) -> RawJob | None:
        """A job that cannot be decoded can never run: fail it for good."""
        error = CorruptJobError(job.id, [str(job.read_error)])
        _log.error("job_quarantined", job_id=job.id, queue=self.ctx.name, reason=str(error))
        settled = await self._settle(_FAIL, job, [error_json(error)])
        if settled is None:
            return None
        job.failed_reason, job.error_type = str(error), type(error).__name__
        hooks = self.ctx.hooks.snapshot()
        return await self._after_settle(job, settled, "failed", hooks, None, error=error)

    async def _attempt(self, job: Job) -> RawJob | None:
        hooks = self.ctx.hooks.snapshot()
        if not hooks.around_process:
            return await self._run_and_settle(job, hooks, None)
        ctx = self.ctx
        event = ProcessEvent(job, ctx.name, ctx.id, ctx.server_address, ctx.server_port)
        with Around(hooks.around_process, event):
            return await self._run_and_settle(job, hooks, event)

    async def _call_processor(self, job: Job) -> Any:
        entry = self.processors.get(job.name) or self.processors.get(None)
        if entry is None:
            raise UnrecoverableError(f"this worker has no processor for job name {job.name!r}")
        fn, is_async = entry
        if job._cancelled is not None and job._cancelled.is_set():  # before it started
            raise JobCancelledError(job.id)  # not run at all
        pool = None if is_async else self.pool
        if is_async or pool is not None:  # cancelling the task stops it (kills its child)
            self._in_processor[job.id] = asyncio.current_task()
        timeout = job.options.timeout
        if pool is not None:  # it times the child's run (JobTimeoutError), not its start
            result = await pool.run(fn, job, timeout)
        elif timeout is None:
            result = await fn(job) if is_async else await self.threads.run(lambda: fn(job))
        else:
            try:
                async with asyncio.timeout(timeout) as scope:
                    if is_async:
                        result = await fn(job)
                    else:
                        result = await self.threads.run(lambda: fn(job))
            except TimeoutError as exc:
                if scope.expired():
                    raise JobTimeoutError(
                        f"attempt {job.attempts_started} ran longer than its {timeout} s timeout"
                    ) from exc
                raise
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _run_and_settle(
        self, job: Job, hooks: HookSet, event: ProcessEvent | None
    ) -> RawJob | None:
        error: BaseException | None = None
        try:
            result = await self._call_processor(job)
            payload = self.ctx.serializer.dumps(result)
        except asyncio.CancelledError:
            if job._cancelled is None or not self._stopped_by_cancel(job):
                if event is not None:
                    event.outcome = "interrupted"
                raise
        except Exception as exc:
            error = exc
        finally:
            self._in_processor.pop(job.id, None)
        if event is not None:
            event.error = error

        cancelled = job._cancelled is not None and self._stopped_by_cancel(job)
        if job._moved:  # job.move_to_delayed() already settled this attempt
            if event is not None:  # as delayed, or as cancelled if a cancel was pending
                event.outcome = "delayed" if job.state is JobState.DELAYED else "cancelled"
            return None
        if cancelled:
            return await self._cancel_attempt(job, hooks, event)
        if error is None:
            job.return_value = result
            settled = await self._settle(_COMPLETE, job, [payload], event=event)
            return await self._after_settle(job, settled, "completed", hooks, event)
        if isinstance(error, DelayedError):
            return await self.delay(job, error.delay, hooks, event)
        if isinstance(error, RateLimitError):
            return await self._rate_limited(job, error, hooks, event)
        return await self._fail_or_retry(job, error, hooks, event)

    async def _fail_or_retry(
        self, job: Job, error: BaseException, hooks: HookSet, event: ProcessEvent | None
    ) -> RawJob | None:
        delay: float | None = None
        if not isinstance(error, UnrecoverableError | SerializationError):
            try:
                delay = retry_delay(job, error, self.backoff_strategies)
            except Exception as exc:
                _log.error("backoff_failed", error=str(exc), job_id=job.id, queue=self.ctx.name)
        job.failed_reason, job.error_type = str(error), type(error).__name__
        if delay is None:
            _log.error(
                "job_failed",
                error=f"{type(error).__name__}: {error}",
                attempts_made=job.attempts_made + 1,
            )
            settled = await self._settle(_FAIL, job, [error_json(error)], event=event)
            return await self._after_settle(job, settled, "failed", hooks, event, error=error)
        _log.warning(
            "job_attempt_failed",
            error=f"{type(error).__name__}: {error}",
            retry_in=round(delay, 3),
            attempts_made=job.attempts_made + 1,
        )
        args = delay_args(to_ms(delay), "rel", counts=True, error=error_json(error))
        settled = await self._settle(_DELAY, job, args, event=event)
        return await self._after_settle(job, settled, "retry", hooks, event, error=error)

    async def delay(
        self,
        job: Job,
        when: float | timedelta | datetime,
        hooks: HookSet,
        event: ProcessEvent | None,
        *,
        fetch: bool = True,
    ) -> RawJob | None:
        """Re-schedule a running job without using an attempt (DelayedError, move_to_delayed)."""
        if isinstance(when, datetime):
            due, mode = round(when.timestamp() * 1000), "abs"
        else:
            due, mode = to_ms(to_seconds(when, "delay")), "rel"
        args = delay_args(due, mode, counts=False)
        settled = await self._settle(_DELAY, job, args, fetch=fetch, event=event)
        return await self._after_settle(job, settled, "delayed", hooks, event)

    async def _rate_limited(
        self, job: Job, error: RateLimitError, hooks: HookSet, event: ProcessEvent | None
    ) -> RawJob | None:
        ms = to_ms(to_seconds(error.seconds, "RateLimitError seconds", allow_zero=False))
        # No fetch: the hold set by this very call would only be reported a second time.
        args = delay_args(ms, "rel", counts=False, front=True, hold_ms=ms)
        settled = await self._settle(_DELAY, job, args, fetch=False, event=event)
        if self.on_hold is not None:
            await self.on_hold(ms, True)
        return await self._after_settle(job, settled, "rate_limited", hooks, event)

    # ----- settling

    async def _settle(
        self,
        script: Any,
        job: Job,
        args: list[Any],
        *,
        fetch: bool = True,
        event: ProcessEvent | None = None,
    ) -> Settled | None:
        """Run a settling script, retrying through Redis faults: the lock token makes a
        retried call safe (it reports the attempt as already settled). Any other error is
        reported, and the job is left to stalled recovery: None."""
        ctx = self.ctx
        count = 1 if fetch and ctx.can_fetch() else 0
        try:
            return await ctx.fetching_call(
                "settle", script, [job.id, job._token or "", *args], count, parse_settle
            )
        except Exception as exc:
            _log.error(
                "job_settle_failed",
                job_id=job.id,
                queue=ctx.name,
                hint="the attempt's outcome was not recorded; stalled recovery runs the "
                "job again once its lock expires",
            )
            if event is not None:
                event.outcome, event.error = "lock_lost", event.error or exc
            await self.settle_errors.failed(exc)
            return None

    async def _after_settle(
        self,
        job: Job,
        settled: Settled | None,
        outcome: str,
        hooks: HookSet,
        event: ProcessEvent | None,
        *,
        error: BaseException | None = None,
    ) -> RawJob | None:
        if settled is None:
            return None
        self.settle_errors.succeeded()
        if settled.record is not None and "par" in settled.record and outcome != "retry":
            self.ctx.deliver_outbox()  # a flow child's outcome, for its parent (outbox.py)
        quarantined = settled.fetched.quarantined
        if settled.status in (SETTLED, ALREADY_SETTLED):
            self.ctx.running.pop(job.id, None)  # no lock to renew any more, even during hooks
            await self._record_outcome(job, settled, outcome, hooks, event=event, error=error)
        elif settled.status == CANCELLED:
            # A cancel was requested: the script failed the job as cancelled, whatever
            # this attempt asked for.
            reason = (settled.record or {}).get("cxr", "")
            cancelled = JobCancelledError(job.id, reason)
            _log.info("job_cancelled", job_id=job.id, queue=self.ctx.name, reason=reason)
            job.failed_reason, job.error_type = cancelled.reason, type(cancelled).__name__
            self.ctx.running.pop(job.id, None)
            await self._record_outcome(
                job, settled, "cancelled", hooks, event=event, error=cancelled
            )
            if event is not None:
                event.error = cancelled
        elif settled.status == QUARANTINED:
            # Its record was corrupt at the settle: the script failed it for good.
            reason = dict(quarantined).get(job.id, "its record is corrupt")
            quarantined = [item for item in quarantined if item[0] != job.id]
            corrupt = CorruptJobError(job.id, [reason])
            _log.error("job_quarantined", job_id=job.id, queue=self.ctx.name, reason=reason)
            job.failed_reason, job.error_type = str(corrupt), type(corrupt).__name__
            self.ctx.running.pop(job.id, None)
            await self._record_outcome(job, settled, "failed", hooks, event=event, error=corrupt)
            if event is not None:
                event.error = corrupt
        else:
            lost = LockLostError(
                f"job {job.id} was taken over (stalled recovery) or removed before it settled; "
                "this attempt's outcome is discarded"
            )
            _log.warning("job_lock_lost", job_id=job.id, queue=self.ctx.name, outcome=outcome)
            if event is not None:
                event.outcome, event.error = "lock_lost", event.error or lost
        if quarantined:
            await self.ctx.report_quarantined(quarantined)
        if settled.fetched.rate_limit_ms > 0 and self.on_hold is not None:
            await self.on_hold(settled.fetched.rate_limit_ms, False)
        return self.next_job(settled)

    def next_job(self, settled: Settled) -> RawJob | None:
        jobs = settled.fetched.jobs
        for extra in jobs[1:]:  # never more than one today; kept safe if that changes
            self.spawn(extra)
        return jobs[0] if jobs else None

    async def _record_outcome(
        self,
        job: Job,
        settled: Settled,
        outcome: str,
        hooks: HookSet,
        *,
        event: ProcessEvent | None,
        error: BaseException | None,
    ) -> None:
        delay: float | None = None
        until: datetime | None = None
        record = settled.record
        if record is not None:  # the script keeps the rules; the job takes its record
            job.attempts_made = record.get("atm", 0)
            job.finished_at = ms_to_datetime(record.get("fon"))
        if outcome in ("completed", "failed", "cancelled"):
            job.state = JobState.COMPLETED if outcome == "completed" else JobState.FAILED
        else:
            job.state = JobState.DELAYED
            until = ms_to_datetime(settled.due_ms)
            job.delayed_until = until
            delay = max(0.0, (settled.due_ms - settled.fetched.now_ms) / 1000)
        if event is not None:
            event.outcome = outcome  # type: ignore[assignment]
            event.delay = delay
        notifications = getattr(hooks, _HOOKS_OF[outcome])
        if notifications:
            await notify(
                notifications,
                JobEvent(self.ctx.name, job, self.ctx.id, error, delay=delay, until=until),
            )
