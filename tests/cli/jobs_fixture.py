"""Targets for the worker command's tests (run in subprocesses by test_worker_cli.py).

The queue and the Redis URL come from the environment (``CLI_TEST_QUEUE``, ``REDIS_URL``)
for the targets that build their own Workers.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from queue_core import Job, Worker

# Fast timings: a SIGKILLed worker's jobs are back in wait within about a second.
TIMINGS: dict[str, Any] = {
    "lock_duration": 1.0,
    "stalled_interval": 0.5,
    "drain_delay": 1.0,
    "shutdown_timeout": 10.0,
}


async def process(job: Job) -> dict[str, Any]:
    """``sleep`` waits without blocking; ``block`` blocks the event loop (a bug a
    liveness probe must catch)."""
    data = job.data or {}
    if "sleep" in data:
        await asyncio.sleep(data["sleep"])
    if "block" in data:
        time.sleep(data["block"])  # noqa: ASYNC251 - blocking the loop is the point
    return {"pid": os.getpid(), "name": job.name}


def send_email(job: Job) -> str:
    return f"sent {job.data['to']}"


processors = {"email": send_email, "other": process}


def _queue() -> str:
    return os.environ["CLI_TEST_QUEUE"]


def workers() -> list[Worker]:
    """A factory: the command calls it inside its event loop."""
    return [Worker(_queue(), process, concurrency=2, **TIMINGS)]


@asynccontextmanager
async def managed() -> AsyncIterator[list[Worker]]:
    """A factory that opens what its processors share and closes it after the workers."""
    print("managed: opened", flush=True)
    yield [Worker(_queue(), process, **TIMINGS), Worker(_queue() + "-b", process, **TIMINGS)]
    print("managed: closed", flush=True)


def not_a_factory(job: Job) -> None:
    raise AssertionError("never called")


def bad_factory() -> str:
    return "not a worker"


def failing_factory() -> list[Worker]:
    raise ValueError("the factory could not read its settings")


number = 42
