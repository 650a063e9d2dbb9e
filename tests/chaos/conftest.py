"""Fixtures of the chaos tests: a private redis-server per test and worker subprocesses.

Every fault test gets its own server (function scope), so a restart or a kill never
disturbs another test; nothing here touches the shared Redis on port 6379.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chaos.support import WorkerProcess
from tests.redis_server import RedisServer


@pytest.fixture
def make_redis() -> Iterator[Callable[..., RedisServer]]:
    """Start private redis-servers (RedisServer options); each is removed at teardown."""
    servers: list[RedisServer] = []

    def start(**options: Any) -> RedisServer:
        server = RedisServer(**options)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.cleanup()


@pytest.fixture
def chaos_redis(make_redis: Callable[..., RedisServer]) -> RedisServer:
    """A private redis-server for one test (no persistence)."""
    return make_redis()


@pytest.fixture
def chaos_queue() -> str:
    return f"chaos-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def spawn_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start worker subprocesses (``WorkerProcess`` arguments); killed at teardown."""
    workers: list[WorkerProcess] = []

    def spawn(redis_url: str, queue: str, tag: str, **options: Any) -> WorkerProcess:
        worker = WorkerProcess(tmp_path, redis_url, queue, tag, **options)
        workers.append(worker)
        return worker.start()

    yield spawn
    for worker in workers:
        worker.cleanup()
