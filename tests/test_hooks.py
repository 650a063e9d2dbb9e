"""Lifecycle hooks: what they see, that their "after" part always runs, that they cannot
break a job, and that no registered hook means nothing to run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import redis.asyncio
import structlog

from queue_core import (
    DelayedError,
    EnqueueEvent,
    Hook,
    InternalEvent,
    Job,
    JobEvent,
    JobSpec,
    ProcessEvent,
    Queue,
    SerializationError,
    Worker,
    WorkerEvent,
    register_hook,
    unregister_hook,
)
from queue_core.hooks import GLOBAL_HOOKS, HookRegistry
from tests.conftest import wait_counts, wait_for
from tests.log_capture import capture_logs


class Tracing(Hook):
    """A stand-in for an instrumentation: writes a header at enqueue, reads it back."""

    def __init__(self) -> None:
        self.log: list[tuple[Any, ...]] = []

    @contextmanager
    def around_enqueue(self, event: EnqueueEvent) -> Iterator[None]:
        for i, job in enumerate(event.jobs):
            job.headers["traceparent"] = f"00-{'a' * 32}-{i:016x}-01"
        self.log.append(("enqueue-enter", event.bulk, len(event.jobs)))
        yield
        self.log.append(
            ("enqueue-exit", [j.job_id for j in event.jobs], [j.duplicate for j in event.jobs],
             type(event.error).__name__ if event.error else None)
        )  # fmt: skip

    @contextmanager
    def around_process(self, event: ProcessEvent) -> Iterator[None]:
        self.log.append(("process-enter", event.job.id, dict(event.job.headers)))
        yield
        self.log.append(
            ("process-exit", event.job.id, event.outcome,
             type(event.error).__name__ if event.error else None, event.delay)
        )  # fmt: skip

    def on_completed(self, event: JobEvent) -> None:
        self.log.append(("completed", event.job.id, event.job.return_value))

    async def on_failed(self, event: JobEvent) -> None:  # async hooks are awaited
        await asyncio.sleep(0)
        self.log.append(("failed", event.job.id, type(event.error).__name__))

    def on_retry_scheduled(self, event: JobEvent) -> None:
        self.log.append(("retry", event.job.id, event.delay))

    def on_delayed(self, event: JobEvent) -> None:
        self.log.append(("delayed", event.job.id, event.delay))

    def on_progress(self, event: JobEvent) -> None:
        self.log.append(("progress", event.job.id, event.job.progress))

    def on_worker_started(self, event: WorkerEvent) -> None:
        self.log.append(("worker-started", event.concurrency))

    def on_worker_stopped(self, event: WorkerEvent) -> None:
        self.log.append(("worker-stopped", event.worker_id))


def entries(hook: Tracing, kind: str) -> list[tuple[Any, ...]]:
    return [e for e in hook.log if e[0] == kind]


async def test_enqueue_hook_writes_headers_apart_from_data(
    queue_name: str, redis_url: str, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    hook = Tracing()
    seen: list[tuple[Any, dict[str, str]]] = []

    async def process(job: Job) -> None:
        seen.append((job.data, dict(job.headers)))

    async with Queue(queue_name, redis=redis_url, hooks=[hook]) as queue:
        job = await queue.add("welcome", {"to": "ada"})
        envelope = await raw.hget(queue.keys["jobs"], job.id)
        header = json.loads(envelope.split(b"\n", 1)[0])
        assert header["headers"] == {"traceparent": f"00-{'a' * 32}-{0:016x}-01"}
        async with make_worker(process):
            await wait_counts(queue, completed=1)
    assert seen == [({"to": "ada"}, {"traceparent": f"00-{'a' * 32}-{0:016x}-01"})]
    assert job.headers == header["headers"]
    assert entries(hook, "enqueue-enter") == [("enqueue-enter", False, 1)]
    assert entries(hook, "enqueue-exit") == [("enqueue-exit", [job.id], [False], None)]


async def test_bulk_enqueue_is_one_event_with_per_job_headers(
    queue_name: str, redis_url: str
) -> None:
    hook = Tracing()
    async with Queue(queue_name, redis=redis_url, hooks=[hook]) as queue:
        await queue.add("x", 0, job_id="dup-1")
        jobs = await queue.add_bulk(
            [JobSpec("x", 1), JobSpec("x", 2), JobSpec("x", 3, queue.options({"job_id": "dup-1"}))]
        )
    assert entries(hook, "enqueue-enter")[-1] == ("enqueue-enter", True, 3)
    assert entries(hook, "enqueue-exit")[-1] == (
        "enqueue-exit", [jobs[0].id, jobs[1].id, "dup-1"], [False, False, True], None
    )  # fmt: skip
    assert [j.headers.get("traceparent", "")[-4:] for j in jobs[:2]] == ["0-01", "1-01"]


async def test_enqueue_hook_after_part_runs_when_the_add_fails(
    queue_name: str, redis_url: str
) -> None:
    hook = Tracing()
    async with Queue(queue_name, redis=redis_url, hooks=[hook]) as queue:
        with pytest.raises(SerializationError):
            await queue.add("x", {1, 2})
        assert (await queue.get_counts())["waiting"] == 0
    assert entries(hook, "enqueue-exit") == [
        ("enqueue-exit", [None], [False], "SerializationError")
    ]


async def test_process_hook_sees_every_outcome(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    hook = Tracing()

    async def process(job: Job) -> str:
        if job.data == "fail" and job.attempts_started == 1:
            raise KeyError("first try")
        if job.data == "fail":
            raise KeyError("again")
        if job.data == "delay" and job.attempts_started == 1:
            raise DelayedError(0.05)
        await job.update_progress(50)
        return f"ok-{job.data}"

    ok = await queue.add("x", "ok")
    bad = await queue.add("x", "fail", attempts=2, backoff=0.05)
    later = await queue.add("x", "delay")
    async with make_worker(process, concurrency=3, hooks=[hook]):
        await wait_counts(queue, completed=2, failed=1)
    exits = {(e[1], e[2], e[3]) for e in entries(hook, "process-exit")}
    assert exits == {
        (ok.id, "completed", None),
        (bad.id, "retry", "KeyError"),
        (bad.id, "failed", "KeyError"),
        (later.id, "delayed", "DelayedError"),
        (later.id, "completed", None),
    }
    retry_exit = next(e for e in entries(hook, "process-exit") if e[2] == "retry")
    assert retry_exit[4] == 0.05
    assert ("completed", ok.id, "ok-ok") in hook.log
    assert ("failed", bad.id, "KeyError") in hook.log
    assert ("retry", bad.id, 0.05) in hook.log
    assert ("delayed", later.id, 0.05) in hook.log
    assert ("progress", ok.id, 50) in hook.log
    assert entries(hook, "worker-started") == [("worker-started", 3)]
    assert len(entries(hook, "worker-stopped")) == 1
    # Each attempt's after part ran after its enter, in order.
    for job_id in (ok.id, bad.id, later.id):
        kinds = [e[0] for e in hook.log if e[0].startswith("process") and e[1] == job_id]
        assert kinds == ["process-enter", "process-exit"] * (len(kinds) // 2)


class Broken(Hook):
    @contextmanager
    def around_enqueue(self, event: EnqueueEvent) -> Iterator[None]:
        raise RuntimeError("broken on enter")
        yield

    @contextmanager
    def around_process(self, event: ProcessEvent) -> Iterator[None]:
        yield
        raise RuntimeError("broken on exit")

    def on_completed(self, event: JobEvent) -> None:
        raise RuntimeError("broken notification")

    async def on_worker_started(self, event: WorkerEvent) -> None:
        raise RuntimeError("broken async notification")


async def test_a_failing_hook_never_breaks_the_job(
    queue_name: str, redis_url: str, make_worker: Callable[..., Worker]
) -> None:
    good = Tracing()

    async def process(job: Job) -> str:
        return "fine"

    with capture_logs() as logs:
        async with Queue(queue_name, redis=redis_url, hooks=[Broken(), good]) as queue:
            job = await queue.add("x", 1)
            async with make_worker(process, hooks=[Broken(), good]):
                await wait_counts(queue, completed=1)
            done = await queue.get_job(job.id)
    assert done is not None and done.return_value == "fine"
    # The healthy hook still ran fully, and each failure was logged with the hook's name.
    assert ("completed", job.id, "fine") in good.log
    assert any(e[0] == "process-exit" and e[2] == "completed" for e in good.log)
    failures = {(e["event"], e["hook"]) for e in logs if "hook failed" in e["event"]}
    assert failures == {
        ("hook failed on entry", "Broken.around_enqueue"),
        ("hook failed on exit", "Broken.around_process"),
        ("hook failed", "Broken.on_completed"),
        ("hook failed", "Broken.on_worker_started"),
    }


async def test_after_part_runs_when_an_attempt_is_interrupted(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    hook = Tracing()
    started = asyncio.Event()

    async def hang(job: Job) -> None:
        started.set()
        await asyncio.Event().wait()

    job = await queue.add("x")
    worker = make_worker(hang, hooks=[hook])
    async with worker:
        await started.wait()
        await worker.close(force=True)
    assert entries(hook, "process-exit") == [
        ("process-exit", job.id, "interrupted", "CancelledError", None)
    ]


async def test_global_hooks_reach_existing_and_new_queues(queue_name: str, redis_url: str) -> None:
    hook = Tracing()
    async with Queue(queue_name, redis=redis_url) as before:
        register_hook(hook)
        try:
            async with Queue(queue_name, redis=redis_url) as after:
                await before.add("x", 1)
                await after.add("x", 2)
        finally:
            unregister_hook(hook)
        await before.add("x", 3)
    assert len(entries(hook, "enqueue-enter")) == 2
    assert hook not in GLOBAL_HOOKS.all()


def test_no_hooks_means_empty_hook_sets() -> None:
    registry = HookRegistry(GLOBAL_HOOKS)
    snapshot = registry.snapshot()
    assert snapshot.around_process == () and snapshot.on_completed == ()
    assert registry.snapshot() is snapshot  # cached: the hot path compares one integer

    class OnlyCompleted(Hook):
        def on_completed(self, event: JobEvent) -> None:
            return None

    hook = OnlyCompleted()
    registry.add(hook)
    fresh = registry.snapshot()
    assert fresh is not snapshot
    assert len(fresh.on_completed) == 1
    assert fresh.around_process == () and fresh.on_failed == ()  # only what it overrides
    with pytest.raises(TypeError, match="subclass"):
        registry.add(object())  # type: ignore[arg-type]


async def test_hooks_run_in_the_jobs_context(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    contexts: list[dict[str, Any]] = []

    class Context(Hook):
        @contextmanager
        def around_process(self, event: ProcessEvent) -> Iterator[None]:
            contexts.append(structlog.contextvars.get_contextvars())
            yield

    await queue.add("x")
    async with make_worker(lambda job: None, hooks=[Context()]):
        await wait_for(lambda: len(contexts) == 1)
    assert contexts[0]["queue"] == queue.name and contexts[0]["attempt"] == 1


async def test_internal_operations_are_wrapped(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    seen: list[str] = []

    class Internal(Hook):
        @contextmanager
        def around_internal(self, event: InternalEvent) -> Iterator[None]:
            seen.append(event.operation)
            yield

    await queue.add("x")
    async with make_worker(
        lambda job: None, hooks=[Internal()], lock_duration=0.2, drain_delay=0.2
    ):
        await wait_counts(queue, completed=1)
        await wait_for(lambda: {"renew_locks", "wait"} <= set(seen) or len(seen) > 20)
    assert {"connect", "fetch", "wait", "recover_stalled"} <= set(seen)
