"""Structured logs: JSON lines in production, readable lines in a terminal, and every line
logged inside a job carries the job id, queue and attempt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from queue_core import configure_logging

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    import structlog
    from queue_core import Queue, Worker, configure_logging

    configure_logging()
    log = structlog.get_logger("app")

    async def process(job):
        log.info("sending email", to=job.data["to"])
        if job.attempts_started == 1:
            raise RuntimeError("smtp down")
        return "sent"

    async def main():
        async with Queue(sys.argv[2], redis=sys.argv[1]) as queue:
            job = await queue.add("welcome", {"to": "ada@example.com"}, attempts=2)
            async with Worker(queue.name, process, redis=sys.argv[1], drain_delay=0.5):
                while (await queue.get_counts())["completed"] < 1:
                    await asyncio.sleep(0.02)
            print("JOB", job.id, file=sys.stdout)

    asyncio.run(main())
    """
)


def run(redis_url: str, queue_name: str, fmt: str) -> tuple[str, str]:
    env = {**os.environ, "QUEUE_CORE_LOG_FORMAT": fmt, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, redis_url, queue_name],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout, done.stderr


def test_json_lines_carry_the_job_context(redis_url: str, queue_name: str) -> None:
    stdout, stderr = run(redis_url, queue_name, "json")
    job_id = stdout.split()[1]
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    sending = [line for line in lines if line["event"] == "sending email"]
    assert [(e["job_id"], e["queue"], e["job_name"], e["attempt"]) for e in sending] == [
        (job_id, queue_name, "welcome", 1),
        (job_id, queue_name, "welcome", 2),
    ]
    assert all(e["level"] == "info" and "timestamp" in e for e in sending)
    failed = [line for line in lines if line["event"] == "job_attempt_failed"]
    assert len(failed) == 1
    assert failed[0]["error"] == "RuntimeError: smtp down"
    assert failed[0]["job_id"] == job_id and failed[0]["attempt"] == 1
    started = next(line for line in lines if line["event"] == "worker_started")
    assert started["queue"] == queue_name and "job_id" not in started


def test_console_lines_are_readable(redis_url: str, queue_name: str) -> None:
    _, stderr = run(redis_url, queue_name, "console")
    line = next(line for line in stderr.splitlines() if "sending email" in line)
    assert not line.lstrip().startswith("{")
    assert "job_id=" in line and f"queue={queue_name}" in line and "attempt=1" in line


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging("xml")  # type: ignore[arg-type]
