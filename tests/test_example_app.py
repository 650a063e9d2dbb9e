"""The example application in one process: the API served by uvicorn on a real port (in a
thread), httpx against it, and the workers of ``examples.app.worker`` in the test's event
loop, on a database of the session's Redis that no other test uses. Uninstrumented: the
demo's test covers the telemetry."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import redis
import redis.asyncio
import uvicorn

from examples.app.api import create_app
from examples.app.config import QUEUES, Settings, SettingsError
from examples.app.jobs import Jobs
from examples.app.worker import ProcessSettings, build_workers, start_schedules
from queue_core import Job, JobState, Queue, UnrecoverableError, Worker
from tests.conftest import wait_counts, wait_for
from tests.e2e.otlp_receiver import OtlpReceiver, ReceivedLog, ReceivedSpan
from tests.e2e.support import Process, clean_env, port_open
from tests.redis_server import RedisServer, free_port
from tests.waiting import wait_until

APP_DB = 11

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def settings(redis_server: RedisServer) -> Settings:
    url = redis_server.url.rsplit("/", 1)[0] + f"/{APP_DB}"
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return Settings(
        redis_url=url,
        metrics_port=0,
        hooks_failure_rate=0.0,  # only the failures the target ids ask for
        smtp_failure_rate=0.0,
        webhook_backoff=0.05,
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[str]:
    """The API on a free port, served by uvicorn in a thread; its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped while starting"
        assert time.monotonic() < deadline, "uvicorn did not start within 15 s"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)
    assert not thread.is_alive()


@pytest.fixture
async def client(api: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=api, timeout=10) as http:
        yield http


@pytest.fixture
async def run_workers(settings: Settings) -> AsyncIterator[Any]:
    """Start the example's workers for some queues, as ``python -m examples.app.worker``
    builds them; they are closed at teardown."""
    async with contextlib.AsyncExitStack() as stack:
        users = redis.asyncio.Redis.from_url(settings.redis_url, decode_responses=True)
        stack.push_async_callback(users.aclose)
        http = await stack.enter_async_context(httpx.AsyncClient())

        async def start(queues: Sequence[str]) -> list[Worker]:
            jobs = Jobs(settings, users, http)
            workers = build_workers(queues, jobs, settings, shutdown_timeout=5)
            for worker in workers:
                await stack.enter_async_context(worker)  # runs until the test ends
            return workers

        yield start


async def settled(settings: Settings, queue: str, job_id: str, timeout: float = 20) -> Job:
    """Wait until the job completed or failed; return it."""
    found: list[Job] = []
    async with Queue(queue, redis=settings.redis_url) as q:

        async def done() -> bool:
            job = await q.get_job(job_id)
            if job is not None and job.state in (JobState.COMPLETED, JobState.FAILED):
                found.append(job)
                return True
            return False

        await wait_for(done, timeout, what=f"job {job_id} of {queue} to settle")
    return found[0]


async def test_a_signup_enqueues_a_welcome_email_and_a_reminder_a_day_later(
    client: httpx.AsyncClient, settings: Settings, run_workers: Any
) -> None:
    email = f"ada-{uuid.uuid4().hex[:6]}@example.com"
    created = await client.post("/users", json={"email": email, "name": "Ada"})
    assert created.status_code == 201, created.text
    body = created.json()
    user_id = body["user_id"]
    assert body["welcome_email"] == {
        "queue": "emails",
        "job_id": f"welcome-{user_id}",
        "state": "waiting",
    }
    reminder = body["signup_reminder"]
    assert reminder["state"] == "delayed"
    due = datetime.fromisoformat(reminder["due_at"])
    assert timedelta(hours=23, minutes=59) < due - datetime.now(UTC) <= timedelta(hours=24)

    # The same email again: the first user, and nothing enqueued twice.
    again = await client.post("/users", json={"email": email.upper(), "name": "Ada"})
    assert again.status_code == 200
    assert again.json()["user_id"] == user_id
    async with Queue("emails", redis=settings.redis_url) as emails:
        assert (await emails.get_counts())["waiting"] == 1

    await run_workers(["emails"])
    job = await settled(settings, "emails", f"welcome-{user_id}")
    assert job.state is JobState.COMPLETED
    assert job.return_value == {"sent": True}
    user = (await client.get(f"/users/{user_id}")).json()
    assert user["email"] == email
    assert user["welcome_sent_at"]
    assert "reminder_sent_at" not in user
    summary = (await client.get("/queues")).json()
    assert summary["reminders"]["counts"]["delayed"] == 1
    assert summary["emails"]["counts"]["completed"] == 1


async def test_webhooks_retry_fail_at_once_or_run_out_of_attempts(
    client: httpx.AsyncClient, settings: Settings, run_workers: Any
) -> None:
    ids = {}
    for target in ("acme", "flaky-globex", "gone-umbrella", "down-vandelay"):
        accepted = await client.post("/webhooks", json={"target": target})
        assert accepted.status_code == 202, accepted.text
        ids[target] = accepted.json()["job_id"]
    await run_workers(["webhooks"])

    healthy = await settled(settings, "webhooks", ids["acme"])
    assert (healthy.state, healthy.attempts_made) == (JobState.COMPLETED, 1)
    flaky = await settled(settings, "webhooks", ids["flaky-globex"])
    assert (flaky.state, flaky.attempts_made) == (JobState.COMPLETED, 3)
    assert flaky.return_value == {"status": 200, "attempt": 3}
    gone = await settled(settings, "webhooks", ids["gone-umbrella"])
    assert (gone.state, gone.attempts_made, gone.error_type) == (
        JobState.FAILED,
        1,
        "WebhookRejectedError",
    )
    assert gone.failed_reason == "the receiver answered 410: permanent, not retried"
    down = await settled(settings, "webhooks", ids["down-vandelay"])
    assert (down.state, down.attempts_made, down.error_type) == (
        JobState.FAILED,
        4,
        "WebhookDeliveryError",
    )
    stats = (await client.get("/hooks/stats")).json()
    assert stats == {
        "acme": {"200": 1},
        "down-vandelay": {"503": 4},
        "flaky-globex": {"200": 1, "503": 2},
        "gone-umbrella": {"410": 1},
    }
    view = (await client.get(f"/jobs/webhooks/{ids['down-vandelay']}")).json()
    assert view["state"] == "failed"
    assert view["attempts_made"] == view["max_attempts"] == 4


async def test_the_receiver_acknowledges_a_repeated_delivery_once(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    headers = {"Idempotency-Key": f"delivery-{uuid.uuid4().hex}"}
    first = await client.post("/hooks/receive/acme", json={}, headers=headers)
    second = await client.post("/hooks/receive/acme", json={}, headers=headers)
    assert (first.status_code, first.json()["result"]) == (200, "accepted")
    assert (second.status_code, second.json()["result"]) == (200, "duplicate")


async def test_images_and_reports_are_processed(
    client: httpx.AsyncClient, settings: Settings, run_workers: Any
) -> None:
    image = await client.post(
        "/images", json={"width": 640, "height": 480, "sizes": [[320, 240], [50, 50]]}
    )
    assert image.status_code == 202, image.text
    low = await client.post("/reports", json={"kind": "revenue", "days": 12})
    urgent = await client.post("/reports", json={"days": 3, "urgent": True})
    await run_workers(["images", "reports"])

    resized = await settled(settings, "images", image.json()["job_id"])
    assert resized.state is JobState.COMPLETED, resized.failed_reason
    assert resized.return_value["source"] == [640, 480]
    assert [(v["width"], v["height"]) for v in resized.return_value["variants"]] == [
        (320, 240),
        (50, 38),
    ]
    first = await settled(settings, "reports", urgent.json()["job_id"])
    second = await settled(settings, "reports", low.json()["job_id"])
    for report in (first, second):
        assert report.state is JobState.COMPLETED, report.failed_reason
        assert report.progress == 100
    assert second.return_value["events"] == 12 * 4000
    assert (first.options.priority, second.options.priority) == (10, -10)


async def test_bad_requests_are_refused_before_anything_is_enqueued(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    assert (await client.post("/users", json={"email": "not-an-email"})).status_code == 422
    assert (await client.post("/images", json={"width": 99999})).status_code == 422
    assert (await client.post("/webhooks", json={"target": "a/b"})).status_code == 422
    assert (await client.get("/jobs/nope/1")).status_code == 404
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    async with Queue("images", redis=settings.redis_url) as images:
        assert sum((await images.get_counts()).values()) == 0


async def test_the_reports_workers_upsert_the_schedules_at_each_start(settings: Settings) -> None:
    """What ``python -m examples.app.worker`` does before its workers start."""
    settings = replace(settings, weekly_report_tz="Europe/Paris")
    await start_schedules(["emails", "webhooks"], settings)  # not a reports worker
    async with Queue("reports", redis=settings.redis_url) as reports:
        assert await reports.get_schedulers() == []
        await start_schedules(["emails", "reports"], settings)
        cleanup, weekly = await reports.get_schedulers()  # sorted by id
        assert (cleanup.id, weekly.id) == ("cleanup", "weekly-report")
        assert (weekly.name, weekly.cron, weekly.tz, weekly.every) == (
            "weekly_report",
            "0 7 * * MON",
            "Europe/Paris",
            None,
        )
        assert weekly.next_run_at is not None
        assert timedelta(0) < weekly.next_run_at - datetime.now(UTC) <= timedelta(days=7)
        paris = weekly.next_run_at.astimezone(ZoneInfo("Europe/Paris"))
        assert (paris.weekday(), paris.hour, paris.minute) == (0, 7, 0)
        assert (cleanup.name, cleanup.every, cleanup.cron) == ("cleanup", timedelta(hours=1), None)
        assert cleanup.data == {"grace_s": 7 * 86400.0}

        # Another worker process, or a restart: the same runs, no extra one.
        await start_schedules(["reports"], settings)
        again = {info.id: info for info in await reports.get_schedulers()}
        assert again["weekly-report"].pending_job_id == weekly.pending_job_id
        assert again["weekly-report"].count == weekly.count == 1
        assert again["cleanup"].next_run_at == cleanup.next_run_at
        assert again["cleanup"].count == cleanup.count == 1
        counts = await reports.get_counts()
        assert counts["waiting"] + counts["delayed"] == 2, counts

        # A changed setting replaces the schedule at the next start.
        await start_schedules(["reports"], replace(settings, cleanup_every=60.0))
        changed = await reports.get_scheduler("cleanup")
        assert changed is not None
        assert changed.every == timedelta(minutes=1)


async def test_a_cleanup_run_removes_the_old_finished_jobs_of_every_queue(
    settings: Settings, run_workers: Any
) -> None:
    async def reject(job: Job) -> None:
        raise UnrecoverableError("rejected")

    async with contextlib.AsyncExitStack() as stack:
        queues = {
            name: await stack.enter_async_context(Queue(name, redis=settings.redis_url))
            for name in ("images", "webhooks", "reports")
        }
        for _ in range(3):
            await queues["images"].add("noop")
        for _ in range(2):
            await queues["webhooks"].add("reject")
        async with (
            Worker("images", {"noop": lambda job: None}, redis=settings.redis_url),
            Worker("webhooks", {"reject": reject}, redis=settings.redis_url),
        ):
            await wait_counts(queues["images"], completed=3)
            await wait_counts(queues["webhooks"], failed=2)
        await run_workers(["reports"])

        # Nothing finished an hour ago: nothing removed.
        young = await queues["reports"].add("cleanup", {"grace_s": 3600})
        kept = await settled(settings, "reports", young.id)
        assert kept.return_value == {"removed": 0, "grace_s": 3600.0, "by_queue": {}}

        # A grace of 0: every finished job is old, the earlier cleanup run included.
        old = await queues["reports"].add("cleanup", {"grace_s": 0})
        cleaned = await settled(settings, "reports", old.id)
        assert cleaned.state is JobState.COMPLETED, cleaned.failed_reason
        assert cleaned.return_value == {
            "removed": 6,
            "grace_s": 0.0,
            "by_queue": {
                "images": {"completed": 3},
                "reports": {"completed": 1},
                "webhooks": {"failed": 2},
            },
        }
        assert (await queues["images"].get_counts())["completed"] == 0
        assert (await queues["webhooks"].get_counts())["failed"] == 0
        assert await queues["reports"].get_job(young.id) is None
        assert (await queues["reports"].get_counts())["completed"] == 1  # this run


async def test_the_weekly_report_covers_the_week_before_its_tick(
    settings: Settings, run_workers: Any
) -> None:
    """A run of a scheduler (a period, so that it runs now) with the weekly report's job;
    the same tick makes the same report when it runs again."""
    await run_workers(["reports"])
    async with Queue("reports", redis=settings.redis_url) as reports:
        info = await reports.upsert_scheduler(
            "weekly-now", every=3600, name="weekly_report", data={"kind": "weekly", "days": 7}
        )
        assert info.pending_job_id is not None
        job = await settled(settings, "reports", info.pending_job_id)
        assert job.state is JobState.COMPLETED, job.failed_reason
        assert job.scheduler_id == "weekly-now"
        assert job.scheduled_for is not None
        report = job.return_value
        assert report["kind"] == "weekly"
        assert report["days"] == 7
        assert report["events"] == 7 * 4000
        assert report["period_end"] == job.scheduled_for.isoformat()
        assert job.progress == 100
        await reports.retry_job(job.id)
        again = await settled(settings, "reports", job.id)
        assert again.return_value == report
        await reports.remove_scheduler("weekly-now")


def test_settings_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {"REDIS_URL": "redis://r:6379/0", "METRICS_PORT": "0", "WEBHOOK_ATTEMPTS": "6"}
    )
    assert settings == replace(
        Settings(), redis_url="redis://r:6379/0", metrics_port=0, webhook_attempts=6
    )
    with pytest.raises(ValueError, match="HOOKS_FAILURE_RATE must be between 0 and 1"):
        Settings.from_env({"HOOKS_FAILURE_RATE": "2"})
    schedules = Settings.from_env(
        {
            "WEEKLY_REPORT_CRON": " 30 6  * * 1-5 ",
            "WEEKLY_REPORT_TZ": "America/New_York",
            "CLEANUP_EVERY_S": "10",
            "CLEANUP_GRACE_S": "300",
        }
    )
    assert (schedules.weekly_report_cron, schedules.weekly_report_tz) == (
        "30 6 * * 1-5",
        "America/New_York",
    )
    assert (schedules.cleanup_every, schedules.cleanup_grace) == (10.0, 300.0)
    with pytest.raises(ValueError, match="WEEKLY_REPORT_TZ must be an IANA time zone"):
        Settings.from_env({"WEEKLY_REPORT_TZ": "Mars/Olympus"})
    with pytest.raises(ValueError, match="WEEKLY_REPORT_CRON must be a 5-field cron"):
        Settings.from_env({"WEEKLY_REPORT_CRON": "0 7 * *"})
    with pytest.raises(ValueError, match="CLEANUP_EVERY_S must be between"):
        Settings.from_env({"CLEANUP_EVERY_S": "0"})


def test_a_worker_process_takes_its_queues_and_concurrency_from_the_environment() -> None:
    assert ProcessSettings.from_env({}) == ProcessSettings(QUEUES, None, 30.0)
    assert ProcessSettings.from_env(
        {
            "WORKER_QUEUES": " images, emails,images ",
            "WORKER_CONCURRENCY": "3",
            "WORKER_SHUTDOWN_TIMEOUT_S": "5",
        }
    ) == ProcessSettings(("images", "emails"), 3, 5.0)
    for bad in (
        {"WORKER_QUEUES": "emails,nope"},
        {"WORKER_QUEUES": ","},
        {"WORKER_CONCURRENCY": "0"},
        {"WORKER_CONCURRENCY": "many"},
        {"WORKER_SHUTDOWN_TIMEOUT_S": "-1"},
    ):
        with pytest.raises(SettingsError):
            ProcessSettings.from_env(bad)


def test_the_compose_commands_export_over_otlp(settings: Settings, tmp_path: Path) -> None:
    """The API and a worker started as compose.yaml starts them (the worker:
    ``queue-core worker examples.app.worker:workers``), with
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` set: traces, metrics and logs arrive over OTLP/HTTP,
    each process still serves /metrics, and the worker's probe answers /livez."""
    api_port, api_metrics, worker_metrics = free_port(), free_port(), free_port()
    health_port = free_port()
    with OtlpReceiver() as receiver:
        env = clean_env(
            REDIS_URL=settings.redis_url,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.http_endpoint,
            OTEL_METRIC_EXPORT_INTERVAL="500",
            METRICS_HOST="127.0.0.1",
        )
        api = Process(
            [sys.executable, "-m", "uvicorn", "examples.app.api:app",
             "--host", "127.0.0.1", "--port", str(api_port)],
            {**env, "OTEL_SERVICE_NAME": "api", "METRICS_PORT": str(api_metrics)},
            tmp_path,
            "api",
        )  # fmt: skip
        worker = Process(
            [sys.executable, "-m", "queue_core", "worker", "examples.app.worker:workers",
             "--health-port", str(health_port), "--health-host", "127.0.0.1"],
            {**env, "OTEL_SERVICE_NAME": "worker", "METRICS_PORT": str(worker_metrics),
             "WORKER_QUEUES": "emails"},
            tmp_path,
            "worker",
        )  # fmt: skip
        processes = (api, worker)

        def check() -> None:
            for process in processes:
                process.check_alive()

        try:
            worker.wait_for_output("worker_process_started")

            def api_up() -> bool:
                check()
                return port_open(api_port)

            wait_until(api_up, timeout=20, what="the API")
            created = httpx.post(
                f"http://127.0.0.1:{api_port}/users", json={"email": "otlp@example.com"}
            )
            assert created.status_code == 201, created.text

            def processed() -> list[ReceivedSpan]:
                return [
                    s
                    for s in receiver.spans_named("process emails")
                    if s.resource.get("service.name") == "worker"
                ]

            attempt = receiver.wait_for(
                processed, timeout=20, what="the worker's span", check=check
            )[0]
            assert attempt.attributes["messaging.system"] == "queue_core"

            def served() -> list[ReceivedSpan]:
                return [
                    s
                    for s in receiver.spans_named("POST /users")
                    if s.resource["service.name"] == "api"
                ]

            # Each process exports on its own batch timer: the worker's span can arrive
            # before the API's.
            server = receiver.wait_for(served, timeout=20, what="the API's span", check=check)
            assert [s.trace_id for s in server] == [attempt.trace_id]

            def sent_lines() -> list[ReceivedLog]:
                return [log for log in receiver.logs() if log.body == "email_sent"]

            line = receiver.wait_for(sent_lines, timeout=20, what="the job's log line")[0]
            assert line.trace_id == attempt.trace_id
            assert line.resource["service.name"] == "worker"
            receiver.wait_for(
                lambda: receiver.metric_points("messaging.process.duration"),
                timeout=20,
                what="the worker's metrics",
            )
            depth = receiver.wait_for(
                lambda: receiver.metric_points("queue_core.queue.depth"),
                timeout=20,
                what="the API's queue depth gauge",
            )
            assert {p.attributes["messaging.destination.name"] for p in depth} == set(QUEUES)
            scraped = httpx.get(f"http://127.0.0.1:{worker_metrics}/metrics").text
            assert "messaging_process_duration_seconds_bucket" in scraped
            live = httpx.get(f"http://127.0.0.1:{health_port}/livez")
            assert live.status_code == 200, live.text
            assert [w["queue"] for w in live.json()["workers"]] == ["emails"]
        finally:
            # Each one is stopped before any exit status is judged.
            exits = [(process.terminate(), process) for process in processes]
            for code, process in exits:
                assert code in (0, -signal.SIGTERM), process.describe()
