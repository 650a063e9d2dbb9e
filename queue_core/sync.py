"""``SyncQueue``: a blocking producer for Flask, Django, scripts and other sync code.

It runs the same scripts with the same validation and encoding as the async ``Queue``
(both build their calls in ``commands``); only the transport is blocking. Jobs it
returns are detached snapshots: read their fields, or use an async ``Queue`` to act.
"""

from __future__ import annotations

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
    SyncClient,
    byte_client,
    check_server_sync,
    create_sync_client,
    redis_errors,
    server_address,
)
from queue_core.decoding import snapshot_to_job
from queue_core.flows import Dependency, FlowJob, parse_dependencies
from queue_core.hooks import Around, Hook, InternalEvent
from queue_core.job import Job, JobState
from queue_core.log import get_logger
from queue_core.options import Duration, JobOptions, JobOptionsKwargs, RateLimit
from queue_core.queue import (
    _ADD,
    _GET_COUNTS,
    _GET_DEPENDENCIES,
    _GET_JOB,
    _GET_JOBS,
    _GET_STATS,
    DEFAULT_MAX_LOG_LINES,
    DEFAULT_MAX_PAYLOAD_BYTES,
    QueueSettings,
)
from queue_core.registry import WorkerInfo
from queue_core.schedulers import SchedulerInfo
from queue_core.scripts import LuaScript, preload_sync, run_script_sync
from queue_core.serializer import Serializer
from queue_core.waiting import JOB_STATUS, check_wait, wait_blocking

__all__ = ["SyncQueue"]

T = TypeVar("T")

_log = get_logger("queue_core.flows")


class SyncQueue(QueueSettings):
    """The blocking twin of ``Queue``: ``add``, ``add_bulk``, ``get_job``, ``get_counts``,
    ``get_stats``, ``get_jobs``. ``redis`` is a URL or a ``redis.Redis`` /
    ``redis.cluster.RedisCluster``, never closed by ``close()``; for one created with
    ``decode_responses=True`` the queue opens (and closes) a twin that does not decode.

    ``redis_timeout`` (seconds, default 5) is the socket timeout of the client it creates
    from a URL: a call that gets no reply within it raises ``RedisTimeoutError`` (an add
    may or may not have happened). A client passed in keeps its own ``socket_timeout``.
    """

    def __init__(
        self,
        name: str,
        *,
        redis: str | SyncClient | None = None,
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
            self.client: SyncClient = create_sync_client(redis, self.redis_timeout)
            self._owns_client = True
        else:  # a decoding client's byte twin is ours to close
            self.client, self._owns_client = byte_client(redis)
        self.server_address, self.server_port = server_address(self.client)
        self._checked = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def _call(self, operation: str, script: LuaScript, args: list[Any]) -> Any:
        with redis_errors(operation, self.redis_timeout):
            if not self._checked:
                hooks = self.hooks.snapshot().around_internal
                with Around(hooks, InternalEvent(self.name, None, "connect")):
                    check_server_sync(self.client)
                    preload_sync(self.client)
                self.server_address, self.server_port = server_address(
                    self.client, self.keys["wait"]
                )
                self._checked = True
            return run_script_sync(self.client, script, self.keys, args)

    def add(self, name: str, data: Any = None, **options: Unpack[JobOptionsKwargs]) -> Job:
        """Enqueue one job. With a ``job_id`` that exists, return that job and write nothing."""
        plan = AddPlan(self.name, [(name, data, self.options(options))], bulk=False)
        return self._add(plan)[0]

    def add_bulk(self, jobs: Iterable[JobSpec]) -> list[Job]:
        """Enqueue several jobs atomically, in one round trip."""
        return self._add(self.plan_bulk(jobs))

    def _add(self, plan: AddPlan) -> list[Job]:
        hooks = self.hooks.snapshot().around_enqueue
        if not hooks:
            return self._run_add(plan)
        plan.event.server_address, plan.event.server_port = self.server_address, self.server_port
        with Around(hooks, plan.event):
            return self._run_add(plan)

    def _run_add(self, plan: AddPlan) -> list[Job]:
        reply = self._call("add", _ADD, plan.args(self.serializer, self.max_payload_bytes))
        return plan.result(reply, self.serializer, None)

    def get_job(self, job_id: str) -> Job | None:
        snapshot = self._call("get_job", _GET_JOB, [job_id])
        if snapshot is None:
            return None
        return snapshot_to_job(self.name, job_id, snapshot, self.serializer, None)

    def get_counts(self) -> dict[str, int]:
        return parse_counts(self._call("get_counts", _GET_COUNTS, []))

    def get_stats(self) -> QueueStats:
        """Counts per state and the age of the oldest waiting job (one instant, one call)."""
        return parse_stats(self._call("get_stats", _GET_STATS, []))

    def get_jobs(
        self,
        states: JobState | str | Iterable[JobState | str] | None = None,
        start: int = 0,
        end: int = -1,
    ) -> list[Job]:
        reply = self._call("get_jobs", _GET_JOBS, [start, end, *state_names(states)])
        return [
            snapshot_to_job(
                self.name, item[0].decode(), item[1], self.serializer, None, lenient=True
            )
            for item in reply
        ]

    def wait_until_finished(self, job_id: str, timeout: float | timedelta | None = None) -> Any:
        """The blocking twin of ``Queue.wait_until_finished`` (see there): one look at the
        job, then XREAD BLOCK on this queue's client until it finishes or ``timeout``."""
        seconds = check_wait(job_id, timeout)
        return wait_blocking(
            job_id,
            seconds,
            status=lambda ids: self._call("wait_until_finished", JOB_STATUS, ids),
            client=self.client,
            keys=self.keys,
            serializer=self.serializer,
        )

    # ----- operating the queue: the blocking twins of Queue's methods (see there)

    def _operate(self, operation: Operation[T]) -> T:
        hooks = self.hooks.snapshot().around_operation
        if not hooks or not operation.action:
            return operation.parse(
                self._call(operation.name, operation.script, operation.args), None
            )
        event = self.operation_event(operation)
        with Around(hooks, event):
            args = operation.args
            if operation.rebuild is not None and event.headers:
                args = operation.rebuild(event.headers)
            return operation.parse(self._call(operation.name, operation.script, args), event)

    def pause(self) -> bool:
        return self._operate(admin.pause(True))

    def resume(self) -> bool:
        return self._operate(admin.pause(False))

    def is_paused(self) -> bool:
        return self.get_config().paused

    def get_config(self) -> QueueConfig:
        return self._operate(admin.get_config())

    def set_global_concurrency(self, limit: int | None) -> None:
        self._operate(admin.global_concurrency(limit))

    def set_rate_limit(self, limit: RateLimit | None) -> None:
        self._operate(admin.rate_limit(limit))

    def set_events_max_length(self, length: int | None) -> None:
        self._operate(admin.events_length(length))

    def get_workers(self) -> list[WorkerInfo]:
        return self._operate(registry.get_workers())

    # ----- job schedulers: the blocking twins of Queue's (see there)

    def upsert_scheduler(
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
        return self._operate(
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

    def get_scheduler(self, scheduler_id: str) -> SchedulerInfo | None:
        found = self._operate(schedulers.get_schedulers(scheduler_id, self.serializer))
        return found[0] if found else None

    def get_schedulers(self) -> list[SchedulerInfo]:
        return self._operate(schedulers.get_schedulers(None, self.serializer))

    def remove_scheduler(self, scheduler_id: str) -> bool:
        return self._operate(schedulers.remove_scheduler(scheduler_id))

    # ----- actions on jobs: the blocking twins of Queue's (see there)

    def _operate_steps(self, steps: job_actions.Steps[T]) -> T:
        result: Any = None
        while True:
            try:
                operation = steps.send(result)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            result = self._operate(operation)

    def retry_job(self, job_id: str) -> None:
        self._operate(job_actions.retry(job_id, self.name))

    def promote_job(self, job_id: str) -> None:
        self._operate(job_actions.promote(job_id, self.name))

    def remove_job(self, job_id: str) -> None:
        self._operate(job_actions.remove(job_id, self.name))
        self._deliver_after()

    def update_job_data(self, job_id: str, data: Any) -> None:
        self._operate(
            job_actions.update_data(
                job_id, data, self.name, self.serializer, self.max_payload_bytes
            )
        )

    def retry_jobs(
        self,
        state: str = "failed",
        name: str | None = None,
        limit: int | None = None,
        on_progress: Callable[[int], object] | None = None,
    ) -> int:
        return self._operate_steps(job_actions.retry_jobs(state, name, limit, on_progress))

    def drain(self, include_delayed: bool = False) -> int:
        result = self._operate_steps(job_actions.drain(include_delayed))
        self._deliver_after()
        return result

    def clean(self, state: str, grace: Duration, limit: int | None = None) -> list[str]:
        result = self._operate_steps(job_actions.clean(state, grace, limit))
        self._deliver_after()
        return result

    def obliterate(self, force: bool = False) -> int:
        result = self._operate_steps(job_actions.obliterate(self.name, force))
        self._deliver_after()
        return result

    def cancel(self, job_id: str, reason: str = "") -> CancelResult:
        result = self._operate(cancel_job(job_id, reason, self.keys))
        self._deliver_after()
        return result

    def get_dependencies(self, job_id: str) -> list[Dependency]:
        """See ``Queue.get_dependencies``."""
        reply = self._call("get_dependencies", _GET_DEPENDENCIES, [job_id])
        return parse_dependencies(reply, self.serializer)

    def get_flow(self, job_id: str) -> FlowJob | None:
        """See ``Queue.get_flow`` (children in other queues are read on this connection)."""
        job = self.get_job(job_id)
        if job is None:
            return None
        node = FlowJob(job)
        for dependency in self.get_dependencies(job_id):
            ref = dependency.ref
            queue = self if ref.queue == self.name else self._sibling(ref.queue)
            child = queue.get_flow(ref.id)
            if child is not None:
                node.children.append(child)
        return node

    def _sibling(self, name: str) -> SyncQueue:
        return SyncQueue(
            name,
            redis=self.client,
            prefix=self.keys.prefix,
            serializer=self.serializer,
            redis_timeout=self.redis_timeout,
        )

    def _deliver_after(self) -> None:
        try:
            self.deliver_outbox()
        except Exception as exc:
            _log.warning("outbox_delivery_failed", queue=self.name, error=repr(exc))

    def deliver_outbox(self) -> int:
        """See ``Queue.deliver_outbox``."""
        with redis_errors("deliver_outbox", self.redis_timeout):
            return outbox.run_sync(self.client, self.keys.prefix, outbox.deliver(self.name))
