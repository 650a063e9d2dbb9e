"""``Queue``: the asyncio producer and reader of one queue."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, TypeVar, Unpack

from queue_core import admin, job_actions, outbox, registry, schedulers
from queue_core.admin import Operation, QueueConfig
from queue_core.cancellation import CancelResult, cancel_job
from queue_core.commands import (
    AddPlan,
    JobSpec,
    QueueStats,
    parse_counts,
    parse_stats,
    state_names,
)
from queue_core.connection import (
    DEFAULT_REDIS_TIMEOUT,
    AsyncClient,
    byte_client,
    check_server,
    create_async_client,
    redis_errors,
    server_address,
    to_deadline,
)
from queue_core.deadlines import CallDeadlines
from queue_core.decoding import snapshot_to_job
from queue_core.errors import InvalidOptionError, JobNotFoundError, QueueError
from queue_core.flows import Dependency, FlowJob, parse_dependencies
from queue_core.hooks import (
    GLOBAL_HOOKS,
    Around,
    Hook,
    HookRegistry,
    InternalEvent,
    JobEvent,
    OperationEvent,
    notify,
)
from queue_core.job import Job, JobState
from queue_core.keys import QueueKeys
from queue_core.log import get_logger
from queue_core.options import Duration, JobOptions, JobOptionsKwargs, RateLimit, check_int
from queue_core.registry import WorkerInfo
from queue_core.schedulers import SchedulerInfo
from queue_core.scripts import load_script, preload, run_script
from queue_core.serializer import JsonSerializer, Serializer
from queue_core.waiting import JOB_STATUS, ResultWaiter, check_wait

T = TypeVar("T")

_log = get_logger("queue_core.flows")

__all__ = ["DEFAULT_MAX_LOG_LINES", "DEFAULT_MAX_PAYLOAD_BYTES", "Queue", "QueueSettings"]

DEFAULT_MAX_PAYLOAD_BYTES = 512 * 1024
DEFAULT_MAX_LOG_LINES = 1000

_ADD = load_script("add")
_GET_JOB = load_script("get_job")
_GET_JOBS = load_script("get_jobs")
_GET_COUNTS = load_script("get_counts")
_GET_STATS = load_script("get_stats")
_UPDATE_PROGRESS = load_script("update_progress")
_ADD_LOG = load_script("add_log")
_GET_DEPENDENCIES = load_script("get_dependencies")


class QueueSettings:
    """What the async and the blocking producer share: names, defaults, codec, hooks."""

    def __init__(
        self,
        name: str,
        *,
        prefix: str,
        default_job_options: JobOptions | None,
        serializer: Serializer | None,
        max_payload_bytes: int,
        max_log_lines: int,
        hooks: Iterable[Hook],
        redis_timeout: float | timedelta | None,
    ) -> None:
        self.keys = QueueKeys(name, prefix)
        self.redis_timeout = to_deadline(redis_timeout)
        self.name = name
        if default_job_options is not None and not isinstance(default_job_options, JobOptions):
            raise InvalidOptionError("default_job_options must be a JobOptions")
        self.default_job_options = default_job_options or JobOptions()
        self.serializer: Serializer = serializer or JsonSerializer()
        self.max_payload_bytes = check_int(max_payload_bytes, "max_payload_bytes", 1, 2**29)
        self.max_log_lines = check_int(max_log_lines, "max_log_lines", 1, 1_000_000)
        self.server_address: str | None = None
        self.server_port: int | None = None
        self.hooks = HookRegistry(GLOBAL_HOOKS)
        for hook in hooks:
            self.hooks.add(hook)

    def options(self, overrides: JobOptionsKwargs) -> JobOptions:
        if not overrides:
            return self.default_job_options
        return self.default_job_options.replace(**overrides)

    def operation_event(self, operation: Operation[Any]) -> OperationEvent:
        return OperationEvent(
            self.name, operation.name, operation.job_id, self.server_address, self.server_port
        )

    def plan_bulk(self, jobs: Iterable[JobSpec]) -> AddPlan:
        specs = []
        for spec in jobs:
            if not isinstance(spec, JobSpec):
                raise InvalidOptionError(f"add_bulk takes JobSpec items, not {type(spec).__name__}")
            specs.append((spec.name, spec.data, spec.options or self.default_job_options))
        return AddPlan(self.name, specs, bulk=True)

    def plan_scheduler(
        self,
        scheduler_id: str,
        *,
        every: float | timedelta | None,
        cron: str | None,
        tz: str | None,
        start: datetime | None,
        end: datetime | None,
        limit: int | None,
        name: str | None,
        data: Any,
        options: JobOptions | None,
        catch_up: bool,
    ) -> Operation[SchedulerInfo]:
        return schedulers.upsert_scheduler(
            self.name,
            scheduler_id,
            every=every,
            cron=cron,
            tz=tz,
            start=start,
            end=end,
            limit=limit,
            name=name,
            data=data,
            options=self.default_job_options if options is None else options,
            catch_up=catch_up,
            serializer=self.serializer,
            max_payload_bytes=self.max_payload_bytes,
        )


class Queue(QueueSettings):
    """Add jobs to a queue and read them back.

    ``redis`` is a URL (default: ``$REDIS_URL``, else ``redis://127.0.0.1:6379/0``) or a
    ``redis.asyncio.Redis`` / ``RedisCluster`` client. A client passed in is not closed by
    ``close()``. One created with ``decode_responses=True`` is not used as is (job payloads
    are bytes): the queue opens a twin with the same settings that does not decode, and
    ``close()`` closes that twin.

    ``redis_timeout`` (seconds, default 5) is the deadline of each call: past it the call
    raises ``RedisTimeoutError``, and an add may or may not have happened (retry it with
    the same ``job_id``). ``None`` waits forever.
    """

    def __init__(
        self,
        name: str,
        *,
        redis: str | AsyncClient | None = None,
        prefix: str = "qc",
        default_job_options: JobOptions | None = None,
        serializer: Serializer | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_log_lines: int = DEFAULT_MAX_LOG_LINES,
        hooks: Iterable[Hook] = (),
        redis_timeout: float | timedelta | None = DEFAULT_REDIS_TIMEOUT,
    ) -> None:
        super().__init__(
            name,
            prefix=prefix,
            default_job_options=default_job_options,
            serializer=serializer,
            max_payload_bytes=max_payload_bytes,
            max_log_lines=max_log_lines,
            hooks=hooks,
            redis_timeout=redis_timeout,
        )
        if redis is None or isinstance(redis, str):
            self.client: AsyncClient = create_async_client(redis)
            self._owns_client = True
        else:  # a decoding client's byte twin is ours to close
            self.client, self._owns_client = byte_client(redis)
        self.server_address, self.server_port = server_address(self.client)
        self._checked = False
        self._deadlines = CallDeadlines(self.redis_timeout)
        self._results: ResultWaiter | None = None  # made by the first wait_until_finished

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._results is not None:
            await self._results.close()
        if self._owns_client:
            await self.client.aclose()

    async def _call(self, operation: str, script: Any, args: list[Any]) -> Any:
        # The deadline sits inside redis_errors, which turns its TimeoutError into
        # RedisTimeoutError.
        with redis_errors(operation, self.redis_timeout), self._deadlines():
            if not self._checked:
                await self._connect()
            return await run_script(self.client, script, self.keys, args)

    async def _connect(self) -> None:
        hooks = self.hooks.snapshot().around_internal
        with Around(hooks, InternalEvent(self.name, None, "connect")):
            await check_server(self.client)
            await preload(self.client)
        self.server_address, self.server_port = server_address(self.client, self.keys["wait"])
        self._checked = True

    async def add(self, name: str, data: Any = None, **options: Unpack[JobOptionsKwargs]) -> Job:
        """Enqueue one job. With a ``job_id`` that exists, return that job and write nothing."""
        plan = AddPlan(self.name, [(name, data, self.options(options))], bulk=False)
        return (await self._add(plan))[0]

    async def add_bulk(self, jobs: Iterable[JobSpec]) -> list[Job]:
        """Enqueue several jobs atomically, in one round trip."""
        return await self._add(self.plan_bulk(jobs))

    async def _add(self, plan: AddPlan) -> list[Job]:
        hooks = self.hooks.snapshot().around_enqueue
        if not hooks:
            return await self._run_add(plan)
        plan.event.server_address, plan.event.server_port = self.server_address, self.server_port
        with Around(hooks, plan.event):
            return await self._run_add(plan)

    async def _run_add(self, plan: AddPlan) -> list[Job]:
        args = plan.args(self.serializer, self.max_payload_bytes)
        reply = await self._call("add", _ADD, args)
        return plan.result(reply, self.serializer, self)

    async def get_job(self, job_id: str) -> Job | None:
        """The job, or None. Raises ``CorruptJobError`` (or ``UnsupportedFormatError``) for
        a job whose stored data cannot be read."""
        snapshot = await self._call("get_job", _GET_JOB, [job_id])
        if snapshot is None:
            return None
        return snapshot_to_job(self.name, job_id, snapshot, self.serializer, self)

    async def get_counts(self) -> dict[str, int]:
        """Jobs per state: waiting, active, delayed, completed, failed (one instant)."""
        return parse_counts(await self._call("get_counts", _GET_COUNTS, []))

    async def get_stats(self) -> QueueStats:
        """Counts per state and the age of the oldest waiting job (one instant, one call)."""
        return parse_stats(await self._call("get_stats", _GET_STATS, []))

    async def get_jobs(
        self,
        states: JobState | str | Iterable[JobState | str] | None = None,
        start: int = 0,
        end: int = -1,
    ) -> list[Job]:
        """Jobs in ``states`` (all by default), ``start`` to ``end`` inclusive within each.

        Waiting jobs come in run order, completed and failed ones newest first. A job
        whose stored data cannot be read is listed with ``read_error`` set; ``get_job``
        raises that error instead.
        """
        names = state_names(states)
        reply = await self._call("get_jobs", _GET_JOBS, [start, end, *names])
        return [
            snapshot_to_job(
                self.name, item[0].decode(), item[1], self.serializer, self, lenient=True
            )
            for item in reply
        ]

    # ----- operating the queue (admin.py builds each action; the scripts keep the rules)

    async def _operate(self, operation: Operation[T]) -> T:
        hooks = self.hooks.snapshot().around_operation
        if not hooks or not operation.action:
            return operation.parse(
                await self._call(operation.name, operation.script, operation.args), None
            )
        event = self.operation_event(operation)
        with Around(hooks, event):
            args = operation.args
            if operation.rebuild is not None and event.headers:
                args = operation.rebuild(event.headers)
            reply = await self._call(operation.name, operation.script, args)
            return operation.parse(reply, event)

    async def pause(self) -> bool:
        """Stop every worker of this queue, in every process, from starting jobs: once this
        returns, no fetch takes a job (jobs fetched before still run). Waiting jobs stay;
        adds are accepted. Stored in Redis: it survives restarts. True if it changed."""
        return await self._operate(admin.pause(True))

    async def resume(self) -> bool:
        """Let workers start jobs again (idle ones are woken at once). True if it changed."""
        return await self._operate(admin.pause(False))

    async def is_paused(self) -> bool:
        return (await self.get_config()).paused

    async def get_config(self) -> QueueConfig:
        """The queue-wide settings stored in Redis, and the rate limit's current hold."""
        return await self._operate(admin.get_config())

    async def set_global_concurrency(self, limit: int | None) -> None:
        """At most ``limit`` jobs of this queue active at once across every worker and
        process (None: no limit). Each worker's own ``concurrency`` still applies."""
        await self._operate(admin.global_concurrency(limit))

    async def set_rate_limit(self, limit: RateLimit | None) -> None:
        """At most ``limit.max`` jobs started per ``limit.duration`` by all workers
        together; it replaces the workers' own ``limiter``. None removes it."""
        await self._operate(admin.rate_limit(limit))

    async def set_events_max_length(self, length: int | None) -> None:
        """Keep about ``length`` entries in the queue's events stream (None: the default,
        10,000; 0: record no events, which ``QueueEvents`` and ``wait_until_finished``
        need)."""
        await self._operate(admin.events_length(length))

    async def cancel(self, job_id: str, reason: str = "") -> CancelResult:
        """Cancel a job. A waiting or delayed one ends at once as failed with
        ``JobCancelledError`` (its message ``reason``, or "cancelled"), never retried:
        "cancelled". A running one is signalled to the worker that holds it, in any
        process, which stops the attempt (an ``async`` processor's task is cancelled, a
        sync one sees ``job.cancelled``) and fails the job the same way: "cancelling".
        ``JobNotFoundError`` for an unknown job, ``JobStateError`` for a finished one."""
        result = await self._operate(cancel_job(job_id, reason, self.keys))
        await self._deliver_after("cancel")  # a cancelled flow parent cancels its children
        return result

    # ----- job schedulers (schedulers.py has the model and builds each call)

    async def upsert_scheduler(
        self,
        scheduler_id: str,
        *,
        every: float | timedelta | None = None,
        cron: str | None = None,
        tz: str | None = None,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
        name: str | None = None,
        data: Any = None,
        options: JobOptions | None = None,
        catch_up: bool = False,
    ) -> SchedulerInfo:
        """Create or replace, atomically, a recurring job: every ``every`` (seconds or a
        timedelta) or on a 5-field ``cron`` expression in zone ``tz`` (IANA, default UTC),
        from ``start`` to ``end`` (aware datetimes), at most ``limit`` runs. Each run is a
        job named ``name`` (default: the scheduler id) with ``data`` and ``options`` (no
        job_id, delay or dedup), made when the previous run is taken: one job per tick
        across every worker. After a downtime it runs once (``catch_up=True``: once per
        missed tick). Changing a schedule makes no extra run. ``InvalidScheduleError``
        for a bad schedule, nothing written. See ``queue_core.schedulers``."""
        return await self._operate(
            self.plan_scheduler(
                scheduler_id,
                every=every,
                cron=cron,
                tz=tz,
                start=start,
                end=end,
                limit=limit,
                name=name,
                data=data,
                options=options,
                catch_up=catch_up,
            )
        )

    async def get_scheduler(self, scheduler_id: str) -> SchedulerInfo | None:
        found = await self._operate(schedulers.get_schedulers(scheduler_id, self.serializer))
        return found[0] if found else None

    async def get_schedulers(self) -> list[SchedulerInfo]:
        return await self._operate(schedulers.get_schedulers(None, self.serializer))

    async def remove_scheduler(self, scheduler_id: str) -> bool:
        """Delete a scheduler and its pending run if that has not started. True if it
        existed."""
        return await self._operate(schedulers.remove_scheduler(scheduler_id))

    # ----- actions on jobs (job_actions.py builds them; one script each, bulk ones in
    # chunks of job_actions.CHUNK jobs, one script call and one hook event per chunk)

    async def _operate_steps(self, steps: job_actions.Steps[T]) -> T:
        result: Any = None
        while True:
            try:
                operation = steps.send(result)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            result = await self._operate(operation)

    async def retry_job(self, job_id: str) -> None:
        """Send a failed or completed job back to waiting, keeping its id (a stable
        ``job_id`` can run again): its attempts, stalls and times are reset, its result
        and progress removed; its data, options, logs and past errors (``Job.errors``)
        stay, but it has no current error (``failed_reason``). Raises
        ``JobNotFoundError``, or ``JobStateError`` for a job that is waiting, active or
        delayed, or was quarantined as corrupt. Its dedup key is not taken again."""
        await self._operate(job_actions.retry(job_id, self.name))

    async def promote_job(self, job_id: str) -> None:
        """Make a delayed job ready now. ``JobStateError`` unless it is delayed."""
        await self._operate(job_actions.promote(job_id, self.name))

    async def remove_job(self, job_id: str) -> None:
        """Remove a job and every trace of it (result, error, progress, logs) and free its
        dedup key, in any state but running: an active job whose lock is held raises
        ``JobStateError`` (cancel it instead); one whose worker died may be removed."""
        await self._operate(job_actions.remove(job_id, self.name))
        await self._deliver_after("remove")  # a flow child tells its parent; a parent its children

    async def update_job_data(self, job_id: str, data: Any) -> None:
        """Replace a job's data, in any state, serialized and capped as an add's
        (``SerializationError``, ``PayloadTooLargeError``; nothing written then). A running
        attempt keeps the data it started with."""
        await self._operate(
            job_actions.update_data(
                job_id, data, self.name, self.serializer, self.max_payload_bytes
            )
        )

    async def retry_jobs(
        self,
        state: str = "failed",
        name: str | None = None,
        limit: int | None = None,
        on_progress: Callable[[int], object] | None = None,
    ) -> int:
        """Retry, as ``retry_job`` does, the jobs of ``state`` ("failed" or "completed")
        named ``name`` (all if None), at most ``limit``, oldest first; returns how many.

        Done in chunks of 1,000 jobs, one atomic script call each: ``on_progress(count)``
        is called after each chunk with the count so far. Only jobs that finished before
        the first chunk are considered, so jobs that fail again meanwhile are not retried
        twice; jobs that a retention policy trims meanwhile may shift a chunk past a few.
        """
        return await self._operate_steps(job_actions.retry_jobs(state, name, limit, on_progress))

    async def drain(self, include_delayed: bool = False) -> int:
        """Remove every waiting job (and delayed one with ``include_delayed``) wholly, as
        ``remove_job`` does; active jobs are untouched. Returns how many were removed.

        Done in chunks of 1,000 jobs: each chunk that removes any emits one ``drained``
        event with its ``count`` (not one ``removed`` event per job). Jobs added while it
        runs may be drained too."""
        result = await self._operate_steps(job_actions.drain(include_delayed))
        await self._deliver_after("bulk")
        return result

    async def clean(self, state: str, grace: Duration, limit: int | None = None) -> list[str]:
        """Remove the jobs of ``state`` (completed, failed, waiting or delayed; not active)
        older than ``grace`` (seconds or ``timedelta``), at most ``limit``; returns their ids.

        Completed and failed jobs are aged by their finish time, waiting and delayed ones
        by their enqueue time. Done in chunks of 1,000 jobs; each chunk that removes any
        emits one ``cleaned`` event with the ``state`` and its ``count`` (not one
        ``removed`` event per job). Waiting and delayed jobs are scanned by position, so a
        job that moves while it runs may be missed: call it again."""
        result = await self._operate_steps(job_actions.clean(state, grace, limit))
        await self._deliver_after("bulk")
        return result

    async def obliterate(self, force: bool = False) -> int:
        """Remove the queue and everything in it: every job, its settings, counters,
        events, dedup keys and worker list (live workers list themselves again at their
        next heartbeat). Returns the number of jobs removed.

        Raises ``QueueBusyError``, changing nothing, while jobs are active, unless
        ``force`` (their workers then find them gone when they settle). The first chunk
        pauses the queue; each chunk removes up to 1,000 jobs whole (a job is never half
        removed); the last one, finding no job left, deletes every key. A job added while
        it runs is either removed whole or, if added after that last chunk, survives whole
        in the fresh queue. Should it stop half way (an error), the queue stays paused:
        call it again, or ``resume()``."""
        result = await self._operate_steps(job_actions.obliterate(self.name, force))
        await self._deliver_after("bulk")
        return result

    # ----- flows (flows.py, outbox.py; FlowProducer adds them)

    async def deliver_outbox(self) -> int:
        """Deliver what this queue owes other queues now (outbox.py): the outcomes of
        flow children for their parents, cancels for a removed parent's children. The
        actions that write such messages call it; workers also sweep it every few
        seconds. Returns the number of messages delivered."""
        with redis_errors("deliver_outbox", self.redis_timeout), self._deadlines():
            if not self._checked:
                await self._connect()
            return await outbox.run_async(self.client, self.keys.prefix, outbox.deliver(self.name))

    async def _deliver_after(self, action: str) -> None:
        """Deliver what an action that succeeded wrote into the outbox. A failure here
        does not undo the action nor fail it: a worker's sweep delivers the rest."""
        try:
            await self.deliver_outbox()
        except Exception as exc:
            _log.warning("outbox_delivery_failed", queue=self.name, after=action, error=repr(exc),
                         hint="workers of this queue deliver it within seconds")  # fmt: skip

    async def get_dependencies(self, job: Job | str) -> list[Dependency]:
        """A flow parent's children and their outcomes (see ``Job.get_dependencies``); an
        empty list for a job that is not a parent."""
        job_id = job if isinstance(job, str) else job.id
        reply = await self._call("get_dependencies", _GET_DEPENDENCIES, [job_id])
        return parse_dependencies(reply, self.serializer)

    async def get_flow(self, job_id: str) -> FlowJob | None:
        """The flow below a job: the job, then each child (in any queue) with its own
        children, every job with its state as read now (one read per job). None if the
        job does not exist; a child that is gone (removed) is left out."""
        job = await self.get_job(job_id)
        if job is None:
            return None
        node = FlowJob(job)
        for dependency in await self.get_dependencies(job):
            ref = dependency.ref
            if ref.queue == self.name:
                child = await self.get_flow(ref.id)
            else:
                async with self._sibling(ref.queue) as queue:
                    child = await queue.get_flow(ref.id)
            if child is not None:
                node.children.append(child)
        return node

    def _sibling(self, name: str) -> Queue:
        """Another queue on this queue's connection and settings (closing it leaves the
        connection open)."""
        return Queue(
            name,
            redis=self.client,
            prefix=self.keys.prefix,
            serializer=self.serializer,
            redis_timeout=self.redis_timeout,
        )

    async def get_workers(self) -> list[WorkerInfo]:
        """The live workers of this queue, in any process, oldest first: those whose last
        heartbeat has not expired (a killed worker leaves within 3 heartbeat intervals)."""
        return await self._operate(registry.get_workers())

    # ----- JobBackend: what a Job obtained from this queue calls back into.

    async def update_progress(self, job: Job, progress: Any, worker_id: str | None = None) -> None:
        try:
            encoded = json.dumps(progress, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidOptionError(f"progress must be JSON-serializable: {exc}") from exc
        if not await self._call("update_progress", _UPDATE_PROGRESS, [job.id, encoded]):
            raise JobNotFoundError(f"job {job.id!r} does not exist in queue {self.name!r}")
        hooks = self.hooks.snapshot().on_progress
        if hooks:
            job.progress = progress
            await notify(hooks, JobEvent(self.name, job, worker_id))

    async def add_log(self, job: Job, line: str) -> int:
        if not isinstance(line, str):
            raise InvalidOptionError(f"a log line must be a str, not {type(line).__name__}")
        kept = int(await self._call("add_log", _ADD_LOG, [job.id, line, self.max_log_lines]))
        if kept == 0:
            raise JobNotFoundError(f"job {job.id!r} does not exist in queue {self.name!r}")
        return kept

    async def get_logs(self, job: Job) -> list[str]:
        with redis_errors("get_logs", self.redis_timeout), self._deadlines():
            raw = await self.client.hget(self.keys["logs"], job.id)
        return [] if raw is None else list(json.loads(raw))

    async def move_to_delayed(self, job: Job, when: float | timedelta | datetime) -> None:
        raise QueueError("move_to_delayed is only for a running job, from inside its processor")

    async def refresh(self, job: Job) -> Job:
        fresh = await self.get_job(job.id)
        if fresh is None:
            raise JobNotFoundError(f"job {job.id!r} does not exist in queue {self.name!r}")
        return fresh

    # ----- waiting for results (waiting.py): one reader of the events stream per queue

    async def wait_until_finished(
        self,
        job_id: str,
        timeout: float | timedelta | None = None,  # noqa: ASYNC109 - the whole wait's bound
    ) -> Any:
        """Wait for the job to finish and return its return value (decoded with the
        queue's serializer). It does not poll: it looks at the job once, then waits on the
        queue's events stream; every wait of this queue shares one reader (one connection).

        Raises ``JobFailedError`` (``reason``, ``error_type``) if it failed for good,
        ``JobCancelledError`` if it was cancelled, ``JobNotFoundError`` if it does not exist
        or is removed meanwhile, ``TimeoutError`` after ``timeout`` seconds (None: no
        limit), and ``EventsDisabledError`` if the queue records no events."""
        seconds = check_wait(job_id, timeout)
        if self._results is None:
            self._results = ResultWaiter(
                self._job_status, self.client, self.keys, self.serializer, self.redis_timeout
            )
        return await self._results.wait(job_id, seconds)

    async def _job_status(self, job_ids: list[str]) -> Any:
        return await self._call("wait_until_finished", JOB_STATUS, job_ids)
