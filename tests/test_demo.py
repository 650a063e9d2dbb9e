"""`make demo` as a user runs it: ``python -m examples.demo --duration 30`` in a subprocess.

The demo runs once for this module (about 40 s) with ``--redis REDIS_URL``, against a
database of the test session's private Redis that also holds a user's keys (a queue named
as one of the demo's, keys like the app's) and keys an earlier demo run left; it starts
real processes: the API under uvicorn, four worker processes, the load generator. Each
test then checks one part of the story, from Redis (``SyncQueue``), from the demo's
output, and from the trace and log files it names; and that the user's keys are as they
were.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from examples.demo import DEMO_PREFIX, cleanup_check
from queue_core import Job, JobState, SyncQueue
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
DEMO_DB = 9  # databases of the session's Redis that no other test uses
SHORT_DB = 10
DURATION_S = 30
QUEUES = ("emails", "images", "reports", "webhooks", "reminders")

pytestmark = pytest.mark.timeout(150)


def demo_env(redis_url: str | None) -> dict[str, str]:
    """This environment without a developer's OpenTelemetry or queue_core settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "QUEUE_CORE_")) and k != "REDIS_URL"
    }
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return env


def run_demo(
    *args: str, redis_url: str | None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "examples.demo", *args],
        check=False,
        cwd=ROOT,
        env=demo_env(redis_url),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


BROWSER_LINE = re.compile(r"^Job browser: (http://127\.0\.0\.1:\d+/)", re.MULTILINE)


def run_demo_and_browse(
    *args: str, redis_url: str, output: Path, timeout: float = 120
) -> tuple[subprocess.CompletedProcess[str], Browsed | None]:
    """``run_demo``, and a GET of the job browser's URL as soon as the demo prints it."""
    command = [sys.executable, "-m", "examples.demo", *args]
    out_path, err_path = output / "demo.out", output / "demo.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        process = subprocess.Popen(
            command, cwd=ROOT, env=demo_env(redis_url), stdout=out, stderr=err, text=True
        )
    browsed = None
    try:
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            found = BROWSER_LINE.search(out_path.read_text())
            if found:
                page = httpx.get(found[1], timeout=30)
                browsed = Browsed(found[1], page.status_code, page.text)
                break
            time.sleep(0.2)
        process.wait(max(1.0, deadline - time.monotonic()))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    done = subprocess.CompletedProcess(
        command, process.returncode, out_path.read_text(), err_path.read_text()
    )
    return done, browsed


def fresh_db(server: RedisServer, db: int) -> str:
    url = server.url.rsplit("/", 1)[0] + f"/{db}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


def read_json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class Browsed:
    """What the job browser answered while the demo ran: its URL, status and page."""

    url: str
    status: int
    text: str


@dataclass(frozen=True)
class DemoRun:
    redis_url: str
    done: subprocess.CompletedProcess[str]
    directory: Path
    seconds: float
    browsed: Browsed | None = None

    @property
    def out(self) -> str:
        return self.done.stdout

    def describe(self) -> str:
        return f"exit {self.done.returncode}\nstdout:\n{self.out}\nstderr:\n{self.done.stderr}"

    def jobs(self, queue: str, state: JobState | None = None) -> list[Job]:
        with SyncQueue(queue, redis=self.redis_url, prefix=DEMO_PREFIX) as q:
            return q.get_jobs(state)

    def files(self, kind: str) -> list[Path]:
        """The trace or log files the demo named, in the order it named them."""
        return [Path(p) for p in re.findall(rf"^  {kind}\s+(\S+)$", self.out, re.MULTILINE)]

    def spans(self) -> list[dict[str, Any]]:
        return [span for path in self.files("traces") for span in read_json_lines(path)]

    def log_records(self) -> list[dict[str, Any]]:
        return [record for path in self.files("logs") for record in read_json_lines(path)]

    def process_log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")


def seed_other_keys(url: str) -> dict[bytes, bytes | None]:
    """A user's own keys in the demo's Redis, named as the demo's would be without its
    prefix; returns every key with its DUMP, to compare after the run."""
    with SyncQueue("emails", redis=url) as emails:  # the README's queue name, prefix qc
        emails.add("welcome_email", {"user_id": "mine"}, job_id="welcome-mine")
    client = redis.Redis.from_url(url)
    try:
        client.hset("app:user:mine", mapping={"email": "me@example.com"})
        client.hset("app:users:by_email", "me@example.com", "mine")
        client.set("qc-demo-notes", "not the demo's: no colon after the prefix")
        return {key: client.dump(key) for key in client.scan_iter()}
    finally:
        client.close()


def seed_earlier_run(url: str) -> None:
    """What an earlier demo run left: a job and a user under the demo's prefix."""
    with SyncQueue("emails", redis=url, prefix=DEMO_PREFIX) as emails:
        emails.add("welcome_email", {"user_id": "stale"}, job_id="welcome-stale")
    client = redis.Redis.from_url(url)
    try:
        client.hset(f"{DEMO_PREFIX}:app:user:stale", mapping={"email": "old@example.com"})
    finally:
        client.close()


@pytest.fixture(scope="module")
def other_keys(redis_server: RedisServer) -> dict[bytes, bytes | None]:
    url = fresh_db(redis_server, DEMO_DB)
    keys = seed_other_keys(url)
    seed_earlier_run(url)
    return keys


@pytest.fixture(scope="module")
def demo(
    redis_server: RedisServer,
    other_keys: dict[bytes, bytes | None],
    tmp_path_factory: pytest.TempPathFactory,
) -> DemoRun:
    url = redis_server.url.rsplit("/", 1)[0] + f"/{DEMO_DB}"
    directory = tmp_path_factory.mktemp("demo")
    started = time.monotonic()
    done, browsed = run_demo_and_browse(
        "--duration", str(DURATION_S), "--dir", str(directory), "--redis", "REDIS_URL",
        redis_url=url, output=tmp_path_factory.mktemp("demo-output"),
    )  # fmt: skip
    run = DemoRun(url, done, directory, time.monotonic() - started, browsed)
    print(run.describe())  # shown with the first test's report if it fails
    return run


def test_the_story_played_out(demo: DemoRun) -> None:
    assert demo.done.returncode == 0, demo.describe()
    out = demo.out
    assert f"Redis: $REDIS_URL ({demo.redis_url}) [source: REDIS_URL]" in out
    # The earlier run's job (its job hash, state, ...) and user: 7 keys or so, all deleted.
    cleaned = re.search(r"^Clean-up: deleted (\d+) keys left by earlier demo runs", out, re.M)
    assert cleaned and int(cleaned.group(1)) >= 2, out
    assert f"the demo's keys stay under {DEMO_PREFIX}:" in out
    assert "The story played out." in out
    assert "Process problems" not in out
    checks = re.findall(r"^  \[(ok|--)\] (\w+)", out, re.MULTILINE)
    assert checks == [
        ("ok", "emails"),
        ("ok", "images"),
        ("ok", "reports"),
        ("ok", "reports"),
        ("ok", "reports"),
        ("ok", "webhooks"),
        ("ok", "webhooks"),
        ("ok", "reminders"),
    ], out
    # stdout is not a terminal: compact lines, no cursor movement.
    assert "\x1b[" not in out
    assert re.search(r"^\[\s*\d+s\] emails: done \d+", out, re.MULTILINE), out
    assert demo.seconds < DURATION_S + 30, f"the demo took {demo.seconds:.0f} s"


def test_the_demo_keeps_to_its_own_keys(
    demo: DemoRun, other_keys: dict[bytes, bytes | None]
) -> None:
    """The user's keys are as they were; every other key is under the demo's prefix; the
    earlier run's job is gone, so the final summary counts this run's jobs only."""
    client = redis.Redis.from_url(demo.redis_url)
    try:
        assert {key: client.dump(key) for key in other_keys} == other_keys
        new = {key.decode() for key in client.scan_iter()} - {k.decode() for k in other_keys}
        assert new and all(key.startswith(f"{DEMO_PREFIX}:") for key in new), sorted(new)
        assert not client.exists(f"{DEMO_PREFIX}:app:user:stale")
    finally:
        client.close()
    emails = demo.jobs("emails")
    assert emails and "welcome-stale" not in {job.id for job in emails}
    final = demo.out.split("Final summary after", 1)[1]
    row = re.search(r"^emails\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", final, re.MULTILINE)
    assert row, final
    counts = {"waiting": 1, "active": 2, "delayed": 3, "completed": 4, "failed": 5}
    for state, column in counts.items():
        assert int(row.group(column)) == len([j for j in emails if j.state == state]), state


def test_it_says_where_to_look(demo: DemoRun) -> None:
    out = demo.out
    api = re.search(r"^API: (http://127\.0\.0\.1:\d+)", out, re.MULTILINE)
    assert api, out
    metrics = re.findall(r"metrics (http://127\.0\.0\.1:\d+/metrics)", out)
    assert len(metrics) == 5  # the API and four worker processes
    names = re.findall(r"^  (api|worker-\S+|loadgen)\s+pid \d+", out, re.MULTILINE)
    assert names == [
        "api",
        "worker-emails+reminders-1",
        "worker-images-1",
        "worker-reports-1",
        "worker-webhooks-1",
        "loadgen",
    ]
    # The job browser, in the demo's process, answered while the demo ran: its queues.
    assert demo.browsed is not None, out
    assert demo.browsed.status == 200, demo.browsed
    for queue in QUEUES:
        assert f'data-queue="{queue}"' in demo.browsed.text, queue
    assert "Job browser: http://127.0.0.1:" in out
    assert '"GET / HTTP/1.1" 200' in demo.process_log("job-browser")
    assert len(demo.files("traces")) == 5
    assert len(demo.files("logs")) == 5
    assert all(p.parent == demo.directory / "telemetry" for p in demo.files("traces"))
    # Every process stopped on SIGTERM after a graceful shutdown.
    assert '"event": "worker_process_stopped"' in demo.process_log("worker-webhooks-1")
    assert '"event": "api_stopped"' in demo.process_log("api")
    assert '"event": "loadgen_stopped"' in demo.process_log("loadgen")


def test_welcome_emails_were_sent(demo: DemoRun) -> None:
    jobs = [j for j in demo.jobs("emails") if j.name == "welcome_email"]
    completed = [j for j in jobs if j.state is JobState.COMPLETED]
    assert len(completed) >= 10, [(j.id, j.state) for j in jobs]
    assert not [j for j in jobs if j.state is JobState.FAILED]
    assert all(j.id.startswith("welcome-") for j in jobs)  # stable ids, one per user
    client = redis.Redis.from_url(demo.redis_url, decode_responses=True)
    try:
        for job in completed:
            assert job.return_value in ({"sent": True}, {"sent": False, "reason": "already sent"})
            user = client.hgetall(f"{DEMO_PREFIX}:app:user:{job.data['user_id']}")
            assert user["welcome_sent_at"], user
        assert client.hlen(f"{DEMO_PREFIX}:app:users:by_email") == len(jobs)
    finally:
        client.close()


def test_images_were_resized_under_the_rate_limit(demo: DemoRun) -> None:
    completed = demo.jobs("images", JobState.COMPLETED)
    assert len(completed) >= 10
    for job in completed:
        variants = job.return_value["variants"]
        assert len(variants) == 3
        assert all(v["bytes"] > 0 and max(v["width"], v["height"]) <= 800 for v in variants)
    # At least once: "once" or "N times" with N >= 1, never "0 times".
    held = r"images resized: \d+; the rate limiter held fetching (once|[1-9]\d* times)"
    assert re.search(held, demo.out), demo.out
    # The images worker logged each hold.
    log = demo.process_log("worker-images-1")
    assert '"event": "rate_limited"' in log
    assert '"manual": false' in log


def test_reports_were_built_at_low_priority(demo: DemoRun) -> None:
    completed = [j for j in demo.jobs("reports", JobState.COMPLETED) if j.name == "build_report"]
    assert len(completed) >= 3
    for job in completed:
        assert job.progress == 100
        assert len(job.return_value["digest"]) == 16
        assert job.options.priority in (-10, 10)  # low, or urgent now and then
    assert any(job.options.priority == -10 for job in completed)


def test_the_workers_ran_the_schedules(demo: DemoRun) -> None:
    """The reports worker upserted the weekly report and the cleanup (every 10 s in the
    demo), ran the cleanup about three times in 30 s, and the demo showed them."""
    with SyncQueue("reports", redis=demo.redis_url, prefix=DEMO_PREFIX) as reports:
        schedulers = {info.id: info for info in reports.get_schedulers()}
    assert set(schedulers) == {"weekly-report", "cleanup"}
    weekly, cleanup = schedulers["weekly-report"], schedulers["cleanup"]
    assert (weekly.name, weekly.cron, weekly.tz) == ("weekly_report", "0 7 * * MON", "UTC")
    assert weekly.next_run_at is not None and weekly.next_run_at > datetime.now(UTC)
    assert (cleanup.name, cleanup.every) == ("cleanup", timedelta(seconds=10))
    assert cleanup.data == {"grace_s": 300.0}
    runs = sorted(
        (j for j in demo.jobs("reports", JobState.COMPLETED) if j.scheduler_id == "cleanup"),
        key=lambda j: j.scheduled_for or datetime.min.replace(tzinfo=UTC),
    )
    assert len(runs) >= 2, [(j.id, j.state) for j in demo.jobs("reports")]
    for run in runs:
        assert run.name == "cleanup"
        # Nothing of a 30 s run is 300 s old: the story's jobs stay.
        assert run.return_value == {"removed": 0, "grace_s": 300.0, "by_queue": {}}
    ticks = [j.scheduled_for for j in runs if j.scheduled_for is not None]
    assert all((b - a) % timedelta(seconds=10) == timedelta(0) for a, b in pairwise(ticks))
    out = demo.out
    assert re.search(r"^  cleanup\s+every 10\.0s\s+.+runs [1-9]", out, re.MULTILINE), out
    assert re.search(r"^  weekly-report\s+cron 0 7 \* \* MON UTC\s+next Mon ", out, re.MULTILINE)
    assert re.search(r"\| scheduler runs: cleanup [1-9]\d*, weekly-report 0$", out, re.MULTILINE)
    checked = r"^  \[ok\] reports    cleanup runs: [1-9]\d* \(every 10 s\)"
    assert re.search(checked, out, re.MULTILINE), out
    assert '"event": "scheduler_upserted"' in demo.process_log("worker-reports-1")


def test_the_cleanup_check_waits_for_a_long_enough_run() -> None:
    assert cleanup_check([], elapsed=5, every=10).ok  # too short a run to expect one
    assert not cleanup_check([], elapsed=25, every=10).ok


def test_webhooks_were_retried_and_some_failed_for_good(demo: DemoRun) -> None:
    jobs = [j for j in demo.jobs("webhooks") if j.state in (JobState.COMPLETED, JobState.FAILED)]
    by_kind: dict[str, list[Job]] = {"flaky": [], "gone": [], "down": [], "other": []}
    for job in jobs:
        kind = job.data["target"].split("-")[0]
        by_kind[kind if kind in by_kind else "other"].append(job)
    # flaky-*: the receiver fails the first two deliveries, so a success took 3+ attempts.
    flaky_done = [j for j in by_kind["flaky"] if j.state is JobState.COMPLETED]
    assert flaky_done, by_kind
    assert all(j.attempts_made >= 3 for j in flaky_done)
    # gone-*: 410, unrecoverable: failed at the first attempt, no retry.
    assert by_kind["gone"]
    for job in by_kind["gone"]:
        assert job.state is JobState.FAILED
        assert job.error_type == "WebhookRejectedError"
        assert job.attempts_made == 1
    # down-*: 503 every time: failed once its attempts were used up.
    assert by_kind["down"]
    for job in by_kind["down"]:
        assert job.state is JobState.FAILED
        assert job.error_type == "WebhookDeliveryError"
        assert job.attempts_made == job.options.attempts == 4
    assert len(demo.jobs("webhooks", JobState.FAILED)) >= 2  # the dead-letter set


def test_reminders_wait_a_day_ahead(demo: DemoRun) -> None:
    delayed = demo.jobs("reminders", JobState.DELAYED)
    users = [j for j in demo.jobs("emails") if j.name == "welcome_email"]
    assert len(delayed) == len(users)
    now = datetime.now(UTC)
    for job in delayed:
        assert job.name == "signup_reminder"
        assert job.delayed_until is not None
        assert job.delayed_until - now > timedelta(hours=23), job.delayed_until
        assert job.id == f"reminder-{job.data['user_id']}"
    assert not demo.jobs("reminders", JobState.COMPLETED)


def test_trace_files_hold_spans_with_the_messaging_attributes(demo: DemoRun) -> None:
    spans = demo.spans()
    assert spans
    process = [s for s in spans if s["attributes"].get("messaging.operation.type") == "process"]
    sent = [s for s in spans if s["attributes"].get("messaging.operation.type") == "send"]
    for span in process + sent:
        assert span["attributes"]["messaging.system"] == "queue_core"
        assert span["attributes"]["messaging.message.id"]
    assert {s["attributes"]["messaging.destination.name"] for s in sent} == set(QUEUES)
    assert {s["attributes"]["messaging.destination.name"] for s in process} == {
        "emails",
        "images",
        "reports",
        "webhooks",
    }
    assert all(s["kind"] == "SpanKind.CONSUMER" for s in process)
    failed = [s for s in process if s["status"]["status_code"] == "ERROR"]
    assert {s["attributes"]["error.type"] for s in failed} >= {
        "WebhookRejectedError",
        "WebhookDeliveryError",
    }
    # One trace from the API's POST /users to the worker's attempt.
    signups = {s["context"]["trace_id"] for s in spans if s["name"] == "POST /users"}
    emails = {
        s["context"]["trace_id"]
        for s in process
        if s["attributes"]["messaging.destination.name"] == "emails"
    }
    assert signups & emails
    # The receiver's SERVER span joins the webhook job's trace (context sent by hand).
    hooks = {s["context"]["trace_id"] for s in spans if s["name"].startswith("POST /hooks")}
    webhooks = {
        s["context"]["trace_id"]
        for s in process
        if s["attributes"]["messaging.destination.name"] == "webhooks"
    }
    assert hooks & webhooks
    assert "One signup, end to end: trace " in demo.out


def test_log_files_hold_lines_with_trace_ids(demo: DemoRun) -> None:
    records = demo.log_records()
    sent = [r for r in records if r["body"] == "email_sent"]
    assert sent
    span_traces = {s["context"]["trace_id"] for s in demo.spans()}
    for record in sent:
        assert record["trace_id"] != "0x" + "0" * 32
        assert record["trace_id"] in span_traces
        assert record["attributes"]["queue"] == "emails"
        assert record["attributes"]["job_id"].startswith("welcome-")
        assert record["trace_id"] == "0x" + record["attributes"]["trace_id"]
    # The workers' own output: JSON lines, those of a job with its trace id.
    lines = [
        json.loads(line)
        for line in demo.process_log("worker-webhooks-1").splitlines()
        if line.startswith("{")
    ]
    delivered = [line for line in lines if line["event"] == "webhook_delivered"]
    assert delivered
    assert all(len(line["trace_id"]) == 32 and line["job_id"] for line in delivered)


def test_a_short_run_says_what_is_missing(redis_server: RedisServer, tmp_path: Path) -> None:
    """At one request a second, the first image burst is the 8th request: a run of one
    second sends none, so the story is incomplete and the exit status 1. By default, with
    REDIS_URL set, the demo runs on a private redis-server and leaves REDIS_URL's alone."""
    url = fresh_db(redis_server, SHORT_DB)
    done = run_demo("--duration", "1", "--rate", "1", "--dir", str(tmp_path), redis_url=url)
    assert done.returncode == 1, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    private = r"^Redis: a private redis-server .+, stopped on exit \[source: redis-server\]$"
    assert re.search(private, done.stdout, re.MULTILINE), done.stdout
    assert "Clean-up: deleted 0 keys left by earlier demo runs" in done.stdout
    assert "the private server stops now" in done.stdout
    client = redis.Redis.from_url(url)
    try:
        assert client.dbsize() == 0
    finally:
        client.close()
    assert re.search(r"^  \[--\] images", done.stdout, re.MULTILINE), done.stdout
    assert "Part of the story is missing" in done.stdout
    assert "Process problems" not in done.stdout


def test_an_unreachable_redis_url_exits_2(tmp_path: Path) -> None:
    done = run_demo(
        "--dir", str(tmp_path), "--redis", "REDIS_URL", redis_url="redis://127.0.0.1:1/0",
        timeout=30,
    )  # fmt: skip
    assert done.returncode == 2, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "is not usable" in done.stderr
    assert "Traceback" not in done.stderr
