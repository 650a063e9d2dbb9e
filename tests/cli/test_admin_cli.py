"""The operator commands of ``queue-core``, each run in a subprocess (``python -m
queue_core``) against a private Redis, on jobs the library added and processed first.

A subprocess costs about a second of CPU to start (imports), so each test runs its
commands concurrently where they do not depend on each other, and checks several things
per run.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import typer

from queue_core import (
    FlowNode,
    FlowProducer,
    Job,
    JobOptions,
    JobSpec,
    Queue,
    SyncQueue,
    Worker,
)
from queue_core.cli.common import parse_duration, seconds
from queue_core.cli.stats import Rate, _rate
from queue_core.keys import QueueKeys
from tests.conftest import wait_counts
from tests.redis_server import free_port


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """Runs ``python -m queue_core`` against the test's Redis and key prefix."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        # The private Redis via $REDIS_URL (the option's env var); a wide, plain terminal.
        self.env = {**os.environ, "REDIS_URL": url, "COLUMNS": "200", "NO_COLOR": "1"}

    def argv(self, args: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", "queue_core", *args, "--prefix", self.prefix]

    def run(self, *args: str) -> Result:
        done = subprocess.run(
            self.argv(args),
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return Result(done.returncode, done.stdout, done.stderr)

    def many(self, *commands: Sequence[str]) -> list[Result]:
        """Several commands at once (each in its own process), results in order."""
        with ThreadPoolExecutor(len(commands)) as pool:
            return list(pool.map(lambda args: self.run(*args), commands))

    async def amany(self, *commands: Sequence[str]) -> list[Result]:
        """``many`` off the event loop, so that the test's workers keep running."""
        return await asyncio.to_thread(self.many, *commands)

    def on_terminal(self, args: Sequence[str], typed: str = "") -> tuple[Result, str]:
        """Run with stdin and stderr on a pseudo-terminal (where ``typed`` is typed);
        returns the result (its ``err`` empty) and what was drawn on the terminal."""
        main, child = pty.openpty()
        try:
            with subprocess.Popen(
                self.argv(args), env=self.env, stdin=child, stdout=subprocess.PIPE, stderr=child
            ) as proc:
                os.close(child)
                os.write(main, typed.encode())
                drawn = b""
                while True:
                    try:
                        chunk = os.read(main, 65536)
                    except OSError:  # EIO: every holder of the terminal's other end exited
                        break
                    if not chunk:
                        break
                    drawn += chunk
                assert proc.stdout is not None
                out = proc.stdout.read().decode()
                code = proc.wait(30)
        finally:
            os.close(main)
        return Result(code, out, ""), drawn.decode(errors="replace")


@pytest.fixture
def prefix() -> str:
    # A prefix of the test's own: `stats` without queue names lists every queue under it.
    return f"cli-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cli(redis_url: str, prefix: str) -> Cli:
    return Cli(redis_url, prefix)


async def process(job: Job) -> dict[str, Any]:
    await job.log(f"working on {job.id}")
    if job.data.get("fail"):
        raise RuntimeError(f"broken input {job.data['n']}")
    return {"sent": job.data["n"]}


@pytest.fixture
async def seeded(redis_url: str, prefix: str) -> AsyncIterator[Queue]:
    """``emails``: 3 completed, 2 failed, 2 waiting, 1 delayed, a scheduler (its pending
    run delayed too); ``albums`` and ``images``: a flow, its parent waiting for two
    children."""
    async with Queue("emails", redis=redis_url, prefix=prefix) as queue:
        for n in range(5):
            await queue.add("send", {"n": n, "fail": n in (1, 3)}, job_id=f"mail-{n}")
        async with Worker("emails", process, redis=redis_url, prefix=prefix, concurrency=5):
            await wait_counts(queue, completed=3, failed=2)
        for n in range(5, 7):
            await queue.add("send", {"n": n}, job_id=f"mail-{n}")
        await queue.add("send", {"n": 7}, job_id="mail-later", delay=3600)
        await queue.upsert_scheduler("digest", every=3600, name="digest")
        async with FlowProducer(redis=redis_url, prefix=prefix) as flows:
            children = [FlowNode("resize", "images", {"photo": p}) for p in ("tram", "tiles")]
            await flows.add(
                FlowNode("album", "albums", {}, JobOptions(job_id="album-1"), children=children)
            )
        yield queue


def cells(table: str, first: str) -> list[str]:
    """The cells of the row of a rich table whose first cell is ``first``."""
    for line in table.splitlines():
        row = [cell.strip() for cell in line.split("│")[1:-1]]
        if row and row[0] == first:
            return row
    raise AssertionError(f"no row {first!r} in:\n{table}")


async def test_reading_commands(cli: Cli, seeded: Queue, redis_url: str, prefix: str) -> None:
    async def stay(job: Job) -> None:
        await asyncio.sleep(30)

    # A live worker for `workers`, on a queue of its own (its jobs would change the figures).
    async with Worker("idle", stay, redis=redis_url, prefix=prefix, concurrency=3) as worker:
        table, stats, listed, failed, show, parent, tree, workers, schedulers = await cli.amany(
            ["stats"],
            ["stats", "emails", "--json"],
            ["jobs", "list", "emails"],
            ["jobs", "list", "emails", "--state", "failed", "--json"],
            ["jobs", "show", "emails", "mail-1"],
            ["jobs", "show", "albums", "album-1", "--json"],
            ["flow", "albums", "album-1"],
            ["workers", "--json"],
            ["schedulers", "list", "emails"],
        )
    results = (table, stats, listed, failed, show, parent, tree, workers, schedulers)
    assert all(r.code == 0 for r in results), [r.err for r in results if r.code]

    # stats: every queue under the prefix, one row each with counts per state:
    # queue, paused, waiting, active, delayed, children, completed, failed, then figures.
    assert f"queues under prefix {cli.prefix!r}" in table.out
    assert cells(table.out, "emails")[:8] == ["emails", "-", "2", "0", "2", "0", "3", "2"]
    assert cells(table.out, "albums")[5] == "1"  # waiting_children
    assert cells(table.out, "images")[2] == "2"
    assert cells(table.out, "idle")[2:8] == ["0"] * 6
    (emails,) = stats.json()["queues"]
    assert emails["queue"] == "emails" and emails["paused"] is False
    assert emails["counts"] == {
        "waiting": 2,
        "active": 0,
        "delayed": 2,
        "completed": 3,
        "failed": 2,
        "waiting_children": 0,
    }
    # Every job finished within the window, the queue younger than it: a lower bound.
    completed = emails["rates"]["completed"]["5m"]
    assert completed == {"per_minute": 0.6, "count": 3, "basis": "at_least"}
    assert emails["rates"]["failed"]["5m"]["count"] == 2
    assert emails["wait_sample"] == 5 and 0 <= emails["wait_p95"] < 60  # a loaded machine
    assert emails["oldest_waiting_age"] >= 0

    assert cells(listed.out, "mail-5")[1:4] == ["send", "waiting", "0/1"]
    assert cells(listed.out, "mail-later")[2] == "delayed"
    assert cells(listed.out, "mail-3")[5] == "RuntimeError: broken input 3"
    assert cells(listed.out, "mail-0")[5] == '-> {"sent": 0}'
    failed_jobs = failed.json()["jobs"]
    assert sorted(j["id"] for j in failed_jobs) == ["mail-1", "mail-3"]
    finished = [j["finished_at"] for j in failed_jobs]
    assert finished == sorted(finished, reverse=True)  # newest first
    assert {j["error_type"] for j in failed_jobs} == {"RuntimeError"}
    assert {j["data"]["n"] for j in failed_jobs} == {1, 3}

    assert "RuntimeError: broken input 1" in show.out
    assert '"fail": true' in show.out  # its data
    assert "working on mail-1" in show.out  # its logs
    assert "Traceback" in show.out  # the stack

    album = parent.json()
    assert album["state"] == "waiting_children" and album["logs"] == []
    assert [d["status"] for d in album["dependencies"]] == ["pending", "pending"]
    assert all(d["job"].startswith("images:") for d in album["dependencies"])

    assert "albums:album-1 album waiting_children" in tree.out
    assert tree.out.count("resize waiting") == 2

    (live,) = workers.json()["workers"]
    assert live["id"] == worker.id and live["queue"] == "idle" and live["concurrency"] == 3

    assert cells(schedulers.out, "digest")[1:4] == ["digest", "every 1h00m", "1"]


async def test_watch_refreshes_until_interrupted(cli: Cli, seeded: Queue) -> None:
    watch = await asyncio.create_subprocess_exec(
        *cli.argv(["stats", "emails", "--watch", "--json", "--interval", "0.2"]),
        env=cli.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    assert watch.stdout is not None
    try:
        first = json.loads(await asyncio.wait_for(watch.stdout.readline(), 30))
        await seeded.add("send", {"n": 99})
        for _ in range(50):  # the add shows within a refresh or two
            later = json.loads(await asyncio.wait_for(watch.stdout.readline(), 10))
            if later["queues"][0]["counts"]["waiting"] == 3:
                break
    finally:
        watch.send_signal(signal.SIGINT)
        await asyncio.wait_for(watch.communicate(), 10)  # reads to the end: no pipe left open
        code = watch.returncode
    assert first["queues"][0]["counts"]["waiting"] == 2
    assert later["queues"][0]["counts"]["waiting"] == 3
    assert code == 0  # Ctrl-C ends a watch cleanly


async def test_errors_and_exit_codes(cli: Cli, seeded: Queue) -> None:
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    no_redis, no_queue, refused, bad_grace, bad_state, mixed = await cli.amany(
        ["stats", "--redis", unreachable],
        ["jobs", "list", "emials"],
        ["jobs", "promote", "emails", "mail-5"],
        ["clean", "emails", "--state", "completed", "--grace", "soon", "--yes"],
        ["jobs", "list", "emails", "--state", "running"],
        ["jobs", "retry", "emails", "mail-1", "ghost", "mail-3"],
    )
    assert no_redis.code == 3
    assert no_redis.err.startswith(f"error: Redis at {unreachable}: ")
    assert "Connection refused" in no_redis.err
    assert no_queue.code == 4
    assert no_queue.err == f"error: no queue 'emials' under prefix {cli.prefix!r}\n"
    assert refused.code == 6
    assert refused.err == "error: cannot promote job 'mail-5': it is waiting\n"
    assert bad_state.code == 2
    assert bad_state.err.startswith("error: unknown state(s) ['running']")
    for result in (no_redis, no_queue, refused, bad_state):
        assert result.out == ""
        assert len(result.err.splitlines()) == 1  # one line, no traceback
    assert bad_grace.code == 2  # Click's usage error, naming the option
    assert "--grace" in bad_grace.err and "'soon' is not a duration" in bad_grace.err
    # Several ids: each is tried; the unknown one sets the exit code (5: unknown job).
    assert mixed.code == 5
    assert mixed.out == "mail-1: retried\nmail-3: retried\n"
    assert mixed.err == "error: job 'ghost' does not exist in queue 'emails'\n"
    assert (await seeded.get_counts())["failed"] == 0


async def test_actions(cli: Cli, seeded: Queue, redis_url: str, prefix: str) -> None:
    sync = SyncQueue("emails", redis=redis_url, prefix=prefix)
    paused, promoted, retried, refused = await cli.amany(
        ["pause", "emails"],
        ["jobs", "promote", "emails", "mail-later"],
        ["jobs", "retry", "emails", "--all-failed"],
        ["jobs", "remove", "emails", "mail-6"],  # stdin is not a terminal, and no --yes
    )
    assert paused.out == "emails: paused\n" and sync.is_paused()
    assert promoted.out == "mail-later: promoted\n"
    assert retried.out == "emails: retried 2 failed jobs\n"
    assert refused.code == 2 and refused.out == ""
    assert "stdin is not a terminal" in refused.err and "pass --yes" in refused.err
    assert sync.get_job("mail-6") is not None  # nothing was changed

    resumed, cancelled, removed, cleaned = await cli.amany(
        ["resume", "emails"],
        ["jobs", "cancel", "emails", "mail-5", "--reason", "not needed"],
        ["jobs", "remove", "emails", "mail-6", "--yes"],
        ["clean", "emails", "--state", "completed", "--grace", "0s", "--yes"],
    )
    assert resumed.out == "emails: resumed\n" and not sync.is_paused()
    assert cancelled.out == "mail-5: cancelled\n"
    job = sync.get_job("mail-5")
    assert job is not None and job.state == "failed" and job.failed_reason == "not needed"
    assert removed.out == "mail-6: removed\n" and sync.get_job("mail-6") is None
    assert cleaned.out == "emails: cleaned 3 completed jobs\n"

    # A drain of 2,504 jobs runs in three chunks; with stderr on a terminal a progress
    # bar is drawn there (and erased), and stdout keeps the one-line result.
    sync.add_bulk([JobSpec("bulk", {"n": n}) for n in range(2500)])
    drained, drawn = await asyncio.to_thread(
        cli.on_terminal, ["drain", "emails", "--delayed", "--yes"]
    )
    # 2,500 + mail-1 and -3 (retried), mail-later (promoted), the digest's run (delayed)
    assert (drained.code, drained.out) == (0, "emails: drained 2504 jobs\n")
    assert "draining" in drawn and "2504 jobs" in drawn
    assert sync.get_counts()["waiting"] == sync.get_counts()["delayed"] == 0

    # Obliterate refuses while a job runs, unless --force.
    started = asyncio.Event()

    async def hold(job: Job) -> None:
        started.set()
        await asyncio.sleep(30)

    await seeded.add("send", {"n": 8})
    async with Worker("emails", hold, redis=redis_url, prefix=prefix, shutdown_timeout=1):
        await asyncio.wait_for(started.wait(), 10)
        busy = await asyncio.to_thread(cli.run, "obliterate", "emails", "--yes")
        assert busy.code == 6 and "jobs are active (1)" in busy.err
        gone = await asyncio.to_thread(cli.run, "obliterate", "emails", "--yes", "--force")
        assert gone.code == 0 and gone.out.startswith("emails: obliterated, ")
        keys = QueueKeys("emails", prefix)
        assert sync.client.exists(*[keys[k] for k in ("jobs", "state", "wait", "meta")]) == 0
    sync.close()


def test_confirmation_on_a_terminal(cli: Cli, seeded: Queue) -> None:
    """On a terminal a destructive command asks (on stderr); "n" changes nothing, "y"
    goes ahead."""
    declined, asked = cli.on_terminal(["schedulers", "remove", "emails", "digest"], "n\n")
    assert "Remove scheduler 'digest' of 'emails'? [y/N]" in asked
    assert declined.code == 1 and declined.out == ""
    assert "error: aborted; nothing was changed" in asked
    accepted, asked = cli.on_terminal(["schedulers", "remove", "emails", "digest"], "y\n")
    assert "Remove scheduler 'digest' of 'emails'? [y/N]" in asked
    assert (accepted.code, accepted.out) == (0, "digest: removed\n")


def test_rates_say_how_far_to_trust_them() -> None:
    """In process: the stats' rate from a count and the oldest finish time kept."""
    now = 1_000_000_000.0
    # The set holds a job older than the window: the count is the whole minute's.
    assert _rate(30, 60, now, now - 120_000) == Rate(30.0, 30, "exact")
    assert _rate(0, 60, now, now - 120_000) == Rate(0.0, 0, "exact")
    assert _rate(0, 60, now, None) == Rate(0.0, 0, "exact")
    # Retention kept only the last 20 s, 1,000 jobs: extrapolated to 3,000 a minute.
    assert _rate(1000, 60, now, now - 20_000) == Rate(3000.0, 1000, "extrapolated")
    # Too few to extrapolate from: what is known is a lower bound.
    assert _rate(5, 60, now, now - 20_000) == Rate(5.0, 5, "at_least")
    assert [r.cell() for r in (Rate(3000.0, 1, "extrapolated"), Rate(2.5, 1, "at_least"))] == [
        "~3000",
        ">=2.5",
    ]


def test_durations() -> None:
    assert parse_duration("90") == timedelta(seconds=90)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("250ms") == timedelta(milliseconds=250)
    for bad in ("", "1x", "h", "1h 30m", "-5s", "-5", "inf", "nan", "9999999999d"):
        with pytest.raises(typer.BadParameter):
            parse_duration(bad)
    assert [seconds(v) for v in (None, 0.25, 12.5, 245, 11520, 180000)] == [
        "-",
        "250ms",
        "12.5s",
        "4m05s",
        "3h12m",
        "2d02h",
    ]
