"""``queue-core worker``, run in subprocesses (``python -m queue_core worker``) against a
private Redis, on the targets of ``tests/cli/jobs_fixture.py``.

A subprocess costs about a second of CPU to start (imports), so commands that do not
depend on each other run at once, and each test checks several things per run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis

from queue_core import JobState, SyncQueue
from tests.processes import ROOT, Process
from tests.redis_server import RedisServer, free_port
from tests.waiting import wait_until

FIXTURE = "tests.cli.jobs_fixture"


def worker_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "queue_core", "worker", *args]


@pytest.fixture
def queue_name() -> str:
    return f"cli-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def env(redis_server: RedisServer, queue_name: str) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "CLI_TEST_QUEUE": queue_name,
        "QUEUE_CORE_LOG_FORMAT": "json",
        "COLUMNS": "200",
        "NO_COLOR": "1",
    }


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_server.url) as c:
        yield c


@pytest.fixture
def spawn(env: dict[str, str], tmp_path: Path) -> Iterator[Any]:
    """Start ``queue-core worker ARGS`` in the background; killed at teardown."""
    started: list[Process] = []

    def start(*args: str, tag: str = "worker") -> Process:
        process = Process(worker_command(*args), env, tmp_path, f"{tag}{len(started)}")
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


def events(text: str, name: str) -> list[dict[str, Any]]:
    """The JSON log lines of ``text`` whose event is ``name``. The supervisor and its
    children share one stderr: lines written at the same instant may share a line."""
    found = []
    decoder = json.JSONDecoder()
    for line in text.splitlines():
        start = line.find("{")
        while start != -1:
            try:
                record, end = decoder.raw_decode(line, start)
            except ValueError:
                break  # not JSON: a traceback, a print
            if isinstance(record, dict) and record.get("event") == name:
                found.append(record)
            start = line.find("{", end)
    return found


def run_all(commands: Sequence[tuple[list[str], dict[str, str]]]) -> list[tuple[int, str, str]]:
    """Run the commands (argv, env) at once; each one's (exit code, stdout, stderr)."""
    running = [
        subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for argv, env in commands
    ]
    results = []
    for process in running:
        out, err = process.communicate(timeout=60)
        results.append((process.returncode, out, err))
    return results


def test_check_prints_what_would_run_and_errors_are_one_line_with_exit_codes(
    env: dict[str, str], queue_name: str
) -> None:
    nowhere = f"redis://127.0.0.1:{free_port()}/0"
    cases: list[tuple[list[str], int]] = [
        ([f"{FIXTURE}:process", "-q", "emails", "-q", "webhooks", "-c", "5", "--check"], 0),
        ([f"{FIXTURE}:managed", "--check", "--processes", "3"], 0),
        ([f"{FIXTURE}:process", "-q", "emails", "--redis", nowhere, "--check"], 3),
        (["tests.cli.broken_fixture:worker", "--check"], 7),
        ([f"{FIXTURE}:nothing", "--check"], 2),
        ([f"{FIXTURE}:workers", "--concurrency", "3"], 2),  # a Worker flag, Worker target
        # Under a supervisor: a child that cannot import is not started again.
        (["tests.cli.broken_fixture:worker", "--processes", "2"], 7),
    ]
    results = run_all([(worker_command(*args), env) for args, _ in cases])
    for (args, expected), (code, _, err) in zip(cases, results, strict=True):
        assert code == expected, (args, code, err)

    host, port = "127.0.0.1", env["REDIS_URL"].rsplit(":", 1)[1].split("/")[0]
    version = _version(env)
    assert results[0][1].splitlines() == [
        f"queue emails: concurrency 5, prefix qc, Redis {version} at {host}:{port}",
        f"queue webhooks: concurrency 5, prefix qc, Redis {version} at {host}:{port}",
        "ok: 2 workers in 1 process",
    ]
    # A factory's context manager is entered, then left before the report.
    assert results[1][1].splitlines() == [
        "managed: opened",
        "managed: closed",
        f"queue {queue_name}: concurrency 1, prefix qc, Redis {version} at {host}:{port}",
        f"queue {queue_name}-b: concurrency 1, prefix qc, Redis {version} at {host}:{port}",
        "ok: 2 workers in 3 processes",
    ]

    # A failure is one line, "error: ...", on stderr, after the traceback of the target's
    # code when that raised (its frames only, not the command's); nothing on stdout.
    (_, out, unreachable), (_, _, broken), (_, _, missing), (_, _, usage) = results[2:6]
    assert out == ""
    assert unreachable.startswith(f"error: connecting to Redis at {nowhere[8:-2]} failed")
    assert unreachable.count("\n") == 1
    assert broken.startswith("Traceback (most recent call last):\n")
    assert 'tests/cli/broken_fixture.py", line 7, in settings' in broken
    assert "queue_core" not in broken and "importlib" not in broken
    assert broken.splitlines()[-1] == (
        "error: cannot import tests.cli.broken_fixture: KeyError: 'missing'"
    )
    assert missing == f"error: {FIXTURE}:nothing: module {FIXTURE!r} has no 'nothing'\n"
    assert "Usage:" in usage  # Typer's usage error
    assert "--concurrency builds Workers for a processor target" in " ".join(
        usage.replace("│", "").split()
    )
    supervised = results[6][2]
    assert len(events(supervised, "worker_process_started")) == 2
    failed = events(supervised, "worker_process_failed")
    assert failed and all((e["exit_code"], e["restart"]) == (7, False) for e in failed)
    assert [e["exit_code"] for e in events(supervised, "supervisor_stopped")] == [7]


def _version(env: dict[str, str]) -> str:
    with redis.Redis.from_url(env["REDIS_URL"]) as c:
        return str(c.info("server")["redis_version"])


def test_burst_works_several_queues_in_one_process_and_exits_0(
    env: dict[str, str], client: redis.Redis, queue_name: str, spawn: Any
) -> None:
    first, second = SyncQueue(queue_name, redis=client), SyncQueue(f"{queue_name}-2", redis=client)
    for i in range(6):
        first.add("email", {"to": f"user{i}@example.com"})
        second.add("other", {"sleep": 0.05})
    later = first.add("email", {"to": "later@example.com"}, delay=60)
    worker = spawn(
        f"{FIXTURE}:processors", "-q", queue_name, "-q", second.name, "-c", "3", "--burst"
    )
    assert worker.wait(timeout=30) == 0, worker.describe()

    assert first.get_counts()["completed"] == 6
    assert second.get_counts()["completed"] == 6
    # A delayed job not yet due is not waited for.
    job = first.get_job(later.id)
    assert job is not None and job.state is JobState.DELAYED
    done = first.get_jobs(JobState.COMPLETED)
    assert sorted(j.return_value for j in done) == [f"sent user{i}@example.com" for i in range(6)]
    err = worker.stderr()
    assert len(events(err, "worker_started")) == 2
    assert events(err, "worker_burst_done")
    assert len(events(err, "worker_stopped")) == 2


def test_pool_process_runs_plain_processors_in_child_processes(
    client: redis.Redis, queue_name: str, spawn: Any
) -> None:
    queue = SyncQueue(queue_name, redis=client)
    for n in (1000, 2000):
        queue.add("cpu", {"n": n})
    worker = spawn("tests.pool_jobs:cpu", "-q", queue_name, "--pool", "process",
                   "--pool-size", "2", "--burst")  # fmt: skip
    assert worker.wait(timeout=60) == 0, worker.describe()
    done = queue.get_jobs(JobState.COMPLETED)
    assert len(done) == 2
    # Each ran in a child process, not in the worker's.
    assert worker.pid not in {job.return_value["pid"] for job in done}


def test_sigterm_lets_the_running_job_finish_and_a_second_signal_stops_at_once(
    client: redis.Redis, queue_name: str, spawn: Any
) -> None:
    queue = SyncQueue(queue_name, redis=client)
    long = queue.add("other", {"sleep": 1.5})
    graceful = spawn(f"{FIXTURE}:managed")  # two workers, two queues, one event loop
    wait_until(
        lambda: queue.get_counts()["active"] == 1,
        timeout=20,
        what="the job to start",
        context=graceful.describe,
    )
    graceful.popen.send_signal(signal.SIGTERM)
    assert graceful.wait(timeout=15) == 0, graceful.describe()
    job = queue.get_job(long.id)
    assert job is not None and job.state is JobState.COMPLETED, graceful.describe()
    assert graceful.stdout().splitlines() == ["managed: opened", "managed: closed"]
    (signalled,) = events(graceful.stderr(), "worker_process_signal")
    assert (signalled["signal"], signalled["force"]) == ("SIGTERM", False)

    stuck = queue.add("other", {"sleep": 60})
    forced = spawn(f"{FIXTURE}:process", "-q", queue_name)
    wait_until(
        lambda: queue.get_counts()["active"] == 1,
        timeout=20,
        what="the job to start",
        context=forced.describe,
    )
    forced.popen.send_signal(signal.SIGINT)
    forced.wait_for_output('"worker_closing"')
    signalled_at = time.monotonic()
    forced.popen.send_signal(signal.SIGINT)
    assert forced.wait(timeout=10) == 0, forced.describe()
    assert time.monotonic() - signalled_at < 5
    job = queue.get_job(stuck.id)
    assert job is not None and job.state is not JobState.COMPLETED  # left to stalled recovery
    assert [e["force"] for e in events(forced.stderr(), "worker_process_signal")] == [False, True]


def test_supervisor_replaces_a_killed_child_and_no_job_is_lost(
    client: redis.Redis, queue_name: str, spawn: Any
) -> None:
    queue = SyncQueue(queue_name, redis=client)
    ids = [queue.add("other", {"sleep": 0.25}).id for _ in range(40)]
    supervisor = spawn(f"{FIXTURE}:workers", "--processes", "2", tag="supervisor")

    def children() -> dict[int, int]:
        started = events(supervisor.stderr(), "worker_process_started")
        return {e["index"]: e["pid"] for e in started}  # the latest pid of each index

    first = wait_until(
        lambda: len(children()) == 2 and queue.get_counts()["completed"] >= 4 and children(),
        timeout=20,
        what="two children working",
        context=supervisor.describe,
    )
    os.kill(first[0], signal.SIGKILL)
    replaced = wait_until(
        lambda: children()[0] != first[0] and children(),
        timeout=10,
        what="the killed child replaced",
        context=supervisor.describe,
    )
    (crash,) = events(supervisor.stderr(), "worker_process_crashed")
    assert (crash["index"], crash["pid"], crash["signal"]) == (0, first[0], "SIGKILL")
    assert crash["restart_in"] == 0.5
    assert replaced[1] == first[1]  # the other child went on
    # The new child works on the queue (its worker registered), and every job completed:
    # the killed child's jobs came back through stalled recovery.
    wait_until(
        lambda: replaced[0] in {w.pid for w in queue.get_workers()},
        timeout=10,
        what="the new child's worker",
        context=supervisor.describe,
    )
    wait_until(
        lambda: queue.get_counts()["completed"] == 40,
        timeout=20,
        what="every job completed",
        context=lambda: f"{queue.get_counts()}\n{supervisor.describe()}",
    )
    assert queue.get_counts()["failed"] == 0
    assert {j.id for j in queue.get_jobs(JobState.COMPLETED)} == set(ids)

    assert supervisor.terminate() == 0, supervisor.describe()
    stopped = events(supervisor.stderr(), "worker_process_stopped")
    assert sorted(e["pid"] for e in stopped) == sorted(replaced.values())
    assert all(e["exit_code"] == 0 for e in stopped)
    for pid in replaced.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())
    except urllib.error.URLError:
        return 0, {}  # not listening yet


def test_the_probe_fails_while_the_event_loop_is_blocked(
    client: redis.Redis, queue_name: str, spawn: Any
) -> None:
    port = free_port()
    worker = spawn(
        f"{FIXTURE}:process", "-q", queue_name, "--health-port", str(port),
        "--health-host", "127.0.0.1", "--health-max-lag", "1",
    )  # fmt: skip
    wait_until(
        lambda: worker.check_alive() or probe(port, "/readyz")[0] == 200,
        timeout=20,
        what="the worker ready",
        context=worker.describe,
    )
    code, body = probe(port, "/livez")
    assert code == 200 and body["status"] == "ok"
    (state,) = body["workers"]
    assert (state["queue"], state["running"], state["healthy"]) == (queue_name, True, True)

    SyncQueue(queue_name, redis=client).add("other", {"block": 3})  # time.sleep in async def
    code, body = wait_until(
        lambda: (reply := probe(port, "/livez"))[0] == 503 and reply,
        timeout=10,
        what="/livez failing",
        context=worker.describe,
    )
    assert body["status"] == "event loop stuck" and body["beat_age_s"] >= 1  # rounded to ms
    assert probe(port, "/readyz")[0] == 503
    wait_until(lambda: probe(port, "/livez")[0] == 200, timeout=10, what="/livez back")
    assert probe(port, "/readyz")[0] == 200
    assert probe(port, "/metrics")[0] == 404
    assert worker.terminate() == 0, worker.describe()


def test_reload_restarts_the_worker_when_a_python_file_changes(
    env: dict[str, str], client: redis.Redis, queue_name: str, tmp_path: Path
) -> None:
    module = tmp_path / "reload_jobs.py"
    source = "async def process(job):\n    return {version}\n"
    module.write_text(source.format(version=1))
    queue = SyncQueue(queue_name, redis=client)
    with (tmp_path / "out").open("wb") as out:
        process = subprocess.Popen(
            worker_command("reload_jobs:process", "-q", queue_name, "--reload"),
            cwd=tmp_path,  # the module is found in, and watched under, the working directory
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def result_of(job_id: str) -> Any:
            job = queue.get_job(job_id)
            return job is not None and job.state is JobState.COMPLETED and [job.return_value]

        def output() -> str:
            return (tmp_path / "out").read_text()

        first = queue.add("any")
        assert wait_until(lambda: result_of(first.id), timeout=20, what="v1", context=output) == [1]
        module.write_text(source.format(version=2))
        stamp = time.time() + 1  # a new mtime even on a coarse clock
        os.utime(module, (stamp, stamp))
        wait_until(lambda: events(output(), "worker_reloading"), timeout=10, what="a reload")
        second = queue.add("any")
        assert wait_until(lambda: result_of(second.id), timeout=20, what="v2", context=output) == [
            2
        ]
        (reloading,) = events(output(), "worker_reloading")
        assert reloading["changed"] == str(module)
        assert len(events(output(), "worker_process_started")) == 2
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0, output()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
