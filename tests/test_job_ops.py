"""What a processor can do with its job: progress, logs, refresh."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from queue_core import InvalidOptionError, Job, JobNotFoundError, JobState, Queue, Worker
from tests.conftest import wait_counts


async def test_progress_and_logs_from_a_processor(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def process(job: Job) -> None:
        await job.update_progress(10)
        await job.log("resizing 3 images")
        await job.update_progress({"done": 3, "of": 3})
        await job.log("uploaded")

    job = await queue.add("resize")
    async with make_worker(process):
        await wait_counts(queue, completed=1)
    done = await queue.get_job(job.id)
    assert done is not None
    assert done.progress == {"done": 3, "of": 3}
    assert await done.get_logs() == ["resizing 3 images", "uploaded"]


async def test_logs_keep_only_the_newest_lines(redis_url: str, queue_name: str) -> None:
    async with Queue(queue_name, redis=redis_url, max_log_lines=3) as queue:
        job = await queue.add("x")
        kept = [await job.log(f"line {i}") for i in range(5)]
        assert kept == [1, 2, 3, 3, 3]
        assert await job.get_logs() == ["line 2", "line 3", "line 4"]


async def test_progress_must_be_json(queue: Queue) -> None:
    job = await queue.add("x")
    with pytest.raises(InvalidOptionError, match="progress"):
        await job.update_progress(object())
    with pytest.raises(InvalidOptionError, match="log line"):
        await job.log(42)  # type: ignore[arg-type]
    fresh = await job.refresh()
    assert fresh.progress is None and await fresh.get_logs() == []


async def test_operations_on_a_removed_job_are_typed_errors(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    job = await queue.add("x", remove_on_complete=True)
    async with make_worker(lambda j: None):
        await wait_counts(queue, completed=0, waiting=0, active=0)
    with pytest.raises(JobNotFoundError):
        await job.update_progress(1)
    with pytest.raises(JobNotFoundError):
        await job.log("late")
    with pytest.raises(JobNotFoundError):
        await job.refresh()


async def test_refresh_returns_the_current_state(
    queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    job = await queue.add("x", {"n": 1})
    async with make_worker(lambda j: j.data["n"] + 1):
        await wait_counts(queue, completed=1)
    assert job.state is JobState.WAITING  # a snapshot does not change by itself
    fresh = await job.refresh()
    assert (fresh.state, fresh.return_value) == (JobState.COMPLETED, 2)


async def test_job_repr_is_short_and_hides_data(queue: Queue) -> None:
    job = await queue.add("secret", {"password": "hunter2"})
    text = repr(job)
    assert "hunter2" not in text
    assert text.startswith(f"Job(id={job.id!r}, name='secret'")


def test_job_attribute_names() -> None:
    names: dict[str, Any] = Job.__dataclass_fields__
    for field in ("attempts_started", "attempts_made", "enqueued_at", "started_at", "finished_at",
                  "progress", "return_value", "failed_reason", "stacktrace"):  # fmt: skip
        assert field in names
