"""Helpers of the chaos tests: worker subprocesses, polling with deadlines, tracking reads."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from tests.chaos.worker_process import COMPLETED, tracking_key
from tests.processes import Process
from tests.waiting import wait_until

TEST_CLIENT_NAME = "chaos-test"


class WorkerProcess(Process):
    """One ``tests.chaos.worker_process`` subprocess, its output in files; ``start()``
    starts it."""

    def __init__(self, workdir: Path, redis_url: str, queue: str, tag: str, **options: Any):
        command = [
            sys.executable,
            "-m",
            "tests.chaos.worker_process",
            "--redis-url",
            redis_url,
            "--queue",
            queue,
            "--tag",
            tag,
        ]
        for name, value in options.items():
            command += [f"--{name.replace('_', '-')}", str(value)]
        env = {**os.environ, "QUEUE_CORE_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}
        env.pop("REDIS_URL", None)
        super().__init__(command, env, workdir, f"worker-{tag}", start=False)

    def wait_ready(self, timeout: float = 20.0) -> None:
        def ready() -> bool:
            if not self.alive():
                raise AssertionError(f"worker exited before it was ready\n{self.describe()}")
            return any(line.startswith("ready") for line in self.stdout().splitlines())

        wait_until(ready, timeout=timeout, what=f"worker {self.tag} to be ready")

    def log_events(self) -> list[dict[str, Any]]:
        """The worker's structlog JSON lines (other stderr lines are skipped)."""
        events: list[dict[str, Any]] = []
        for line in self.stderr().splitlines():
            try:
                item = json.loads(line)
            except ValueError:
                continue
            if isinstance(item, dict) and "event" in item:
                events.append(item)
        return events

    def events(self, name: str) -> list[dict[str, Any]]:
        return [item for item in self.log_events() if item["event"] == name]

    def signal(self, sig: signal.Signals) -> None:
        self.popen.send_signal(sig)

    def cleanup(self) -> None:
        if self.started:
            self.kill()


def event_time(event: dict[str, Any]) -> datetime:
    """When a worker logged ``event`` (structlog's ISO timestamp, UTC)."""
    return datetime.fromisoformat(event["timestamp"])


def plain_client(url: str) -> redis.Redis:
    """The tests' own plain client, named so that other clients can be told apart."""
    return redis.Redis.from_url(url, client_name=TEST_CLIENT_NAME)


def wait_until_disconnected(client: redis.Redis, timeout: float = 10.0) -> None:
    """Wait until Redis has dropped every connection but the tests' own (a killed worker's)."""

    def others() -> list[dict[str, Any]]:
        return [c for c in client.client_list() if c.get("name") != TEST_CLIENT_NAME]

    wait_until(
        lambda: not others(),
        timeout=timeout,
        what="Redis to drop the killed worker's connections",
        context=lambda: repr(others()),
    )


def tracked(client: redis.Redis, queue: str, kind: str) -> list[tuple[str, str]]:
    """Events of ``kind`` recorded by the worker processes, as (job id, worker tag)."""
    events = []
    for field, who in client.hgetall(tracking_key(queue, kind)).items():
        job_id, _, _ = _text(field).rpartition("|")
        events.append((job_id, _text(who).partition(":")[0]))
    return events


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def count_by_job(
    client: redis.Redis, queue: str, kind: str, tag: str | None = None
) -> Counter[str]:
    """How many events of ``kind`` each job has (only those of worker ``tag`` if given)."""
    return Counter(
        job_id for job_id, who in tracked(client, queue, kind) if tag is None or who == tag
    )


def wait_for_hooks(
    client: redis.Redis, queue: str, job_ids: Iterable[str], timeout: float = 10.0
) -> None:
    """Wait until the ``on_completed`` hook has recorded each of ``job_ids``: the hook
    runs just after the job is settled, so a job can be completed a moment before."""
    expected = set(job_ids)

    def missing() -> set[str]:
        return expected - count_by_job(client, queue, COMPLETED).keys()

    wait_until(
        lambda: not missing(),
        timeout=timeout,
        what="the on_completed hooks of the completed jobs",
        context=lambda: f"no on_completed record for jobs {sorted(missing())}",
    )
