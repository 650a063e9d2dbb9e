"""``Queue``: the asyncio producer and reader of one queue."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Self, Unpack

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
    check_decoding,
    check_server,
    create_async_client,
    redis_errors,
    server_address,
    to_deadline,
)
from queue_core.deadlines import CallDeadlines
from queue_core.decoding import snapshot_to_job
from queue_core.errors import InvalidOptionError, JobNotFoundError, QueueError
from queue_core.hooks import (
    GLOBAL_HOOKS,
    Around,
    Hook,
    HookRegistry,
    InternalEvent,
    JobEvent,
    notify,
)
from queue_core.job import Job, JobState
from queue_core.keys import QueueKeys
from queue_core.options import JobOptions, JobOptionsKwargs, check_int
from queue_core.scripts import load_script, preload, run_script
from queue_core.serializer import JsonSerializer, Serializer

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
        self.hooks = HookRegistry(GLOBAL_HOOKS)
        for hook in hooks:
            self.hooks.add(hook)

    def options(self, overrides: JobOptionsKwargs) -> JobOptions:
        if not overrides:
            return self.default_job_options
        return self.default_job_options.replace(**overrides)

    def plan_bulk(self, jobs: Iterable[JobSpec]) -> AddPlan:
        specs = []
        for spec in jobs:
            if not isinstance(spec, JobSpec):
                raise InvalidOptionError(f"add_bulk takes JobSpec items, not {type(spec).__name__}")
            specs.append((spec.name, spec.data, spec.options or self.default_job_options))
        return AddPlan(self.name, specs, bulk=True)


class Queue(QueueSettings):
    """Add jobs to a queue and read them back.

    ``redis`` is a URL (default: ``$REDIS_URL``, else ``redis://127.0.0.1:6379/0``) or a
    ``redis.asyncio.Redis`` / ``RedisCluster`` client created with
    ``decode_responses=False``. A client passed in is not closed by ``close()``.

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
        self._owns_client = redis is None or isinstance(redis, str)
        self.client: AsyncClient = (
            create_async_client(redis) if redis is None or isinstance(redis, str) else redis
        )
        check_decoding(self.client)
        self.server_address, self.server_port = server_address(self.client)
        self._checked = False
        self._deadlines = CallDeadlines(self.redis_timeout)

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

    # JobBackend: what a Job obtained from this queue calls back into.

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
