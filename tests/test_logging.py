"""Logging: queue_core's lines are ``logging`` records of loggers named ``queue_core.*``, so
the host application's logging set-up decides; ``configure_logging()`` gives JSON lines in
production, readable lines in a terminal; every line logged inside a job carries the job
id, queue and attempt."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio
import structlog

from queue_core import (
    Job,
    Queue,
    Worker,
    configure_logging,
    get_logger,
    register_log_processor,
    unregister_log_processor,
)
from tests.conftest import wait_counts
from tests.log_capture import restored_logging

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
    assert (failed[0]["level"], failed[0]["logger"]) == ("warning", "queue_core.worker")
    started = next(line for line in lines if line["event"] == "worker_started")
    assert started["queue"] == queue_name and "job_id" not in started


def test_console_lines_are_readable(redis_url: str, queue_name: str) -> None:
    _, stderr = run(redis_url, queue_name, "console")
    for event in ("sending email", "job_attempt_failed"):
        line = next(line for line in stderr.splitlines() if event in line)
        assert not line.lstrip().startswith("{")
        assert "job_id=" in line and f"queue={queue_name}" in line and "attempt=1" in line


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging("xml")  # type: ignore[arg-type]


def test_configuring_twice_replaces_the_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    with restored_logging():
        configure_logging("json")
        configure_logging("json", level="WARNING")
        get_logger("queue_core.tests").info("hidden")
        get_logger("queue_core.tests").warning("shown", n=1)
    (line,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert (line["event"], line["n"], line["logger"]) == ("shown", 1, "queue_core.tests")


# ------------------------------------------------------------ the host's logging set-up

HOST = textwrap.dedent(
    """
    import asyncio, logging, sys

    logging.basicConfig(level=logging.WARNING)  # the host's only logging set-up
    if sys.argv[3] == "quiet":
        logging.getLogger("queue_core").setLevel(logging.ERROR)

    from queue_core import Queue, Worker

    async def process(job):
        logging.getLogger("app").info("sending email")
        if job.attempts_started == 1:
            raise RuntimeError("smtp down")
        return "sent"

    async def main():
        async with Queue(sys.argv[2], redis=sys.argv[1]) as queue:
            job = await queue.add("welcome", {"to": "ada@example.com"}, attempts=2)
            async with Worker(queue.name, process, redis=sys.argv[1], drain_delay=0.5):
                while (await queue.get_counts())["completed"] < 1:
                    await asyncio.sleep(0.02)
            print("JOB", job.id)

    asyncio.run(main())
    """
)


def run_host(redis_url: str, queue_name: str, mode: str) -> tuple[str, list[str]]:
    """Run the host in a fresh interpreter (a clean logging state): the job id, and its
    stderr lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_CORE_")}
    done = subprocess.run(
        [sys.executable, "-c", HOST, redis_url, queue_name, mode],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (job_line,) = done.stdout.splitlines()  # nothing of queue_core's on stdout
    return job_line.split()[1], done.stderr.splitlines()


def test_a_host_with_basic_config_gets_the_warnings_only(redis_url: str, queue_name: str) -> None:
    job_id, lines = run_host(redis_url, queue_name, "basic")
    # basicConfig's format, "LEVEL:logger:message", the message reads "event key=value".
    (warning,) = [line for line in lines if line.startswith("WARNING:queue_core.")]
    assert warning.startswith("WARNING:queue_core.worker:job_attempt_failed ")
    assert "error='RuntimeError: smtp down'" in warning
    assert f"job_id={job_id}" in warning and f"queue={queue_name}" in warning
    assert "attempt=1" in warning
    # INFO lines (worker_started, the app's own) are below the host's level.
    assert not [line for line in lines if "worker_started" in line or "sending email" in line]
    assert lines == [warning]


def test_the_host_silences_queue_core(redis_url: str, queue_name: str) -> None:
    _, lines = run_host(redis_url, queue_name, "quiet")
    assert lines == []


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """queue_core's records at INFO and above, as a host's handler receives them."""

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            kept.append(record)

    kept: list[logging.LogRecord] = []
    logger, handler = logging.getLogger("queue_core"), Keep()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield kept
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_records_carry_the_fields(
    records: list[logging.LogRecord], queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    async def process(job: Job) -> None:
        if job.attempts_started == 1:
            raise RuntimeError("smtp down")

    jobs = [await queue.add("welcome", attempts=2) for _ in range(2)]
    async with make_worker(process):
        await wait_counts(queue, completed=2)
    failed = [r for r in records if getattr(r, "event", None) == "job_attempt_failed"]
    assert sorted(vars(r)["job_id"] for r in failed) == sorted(j.id for j in jobs)
    for record in failed:
        assert record.name == "queue_core.worker" and record.levelno == logging.WARNING
        fields = vars(record)
        assert (fields["queue"], fields["job_name"], fields["attempt"]) == (
            queue.name,
            "welcome",
            1,
        )
        assert fields["error"] == "RuntimeError: smtp down"
        # The caller in queue_core, not a structlog frame.
        assert record.pathname.endswith(os.path.join("queue_core", "attempts.py"))
    # One message template for every job (Sentry groups by it), the values as arguments.
    assert len({r.msg for r in failed}) == 1
    assert "%s" in str(failed[0].msg)
    assert vars(failed[0])["job_id"] in tuple(failed[0].args or ())


def test_a_disabled_line_runs_no_processor() -> None:
    calls: list[str] = []

    def count(
        _: object, __: str, event_dict: structlog.typing.EventDict
    ) -> structlog.typing.EventDict:
        calls.append(event_dict["event"])
        return event_dict

    logger = logging.getLogger("queue_core.tests")
    logger.setLevel(logging.WARNING)
    register_log_processor(count)
    try:
        log = get_logger("queue_core.tests")
        log.debug("below")
        log.info("below")
        log.warning("above")
    finally:
        unregister_log_processor(count)
        logger.setLevel(logging.NOTSET)
    assert calls == ["above"]


def test_a_field_named_like_a_record_attribute(records: list[logging.LogRecord]) -> None:
    get_logger("queue_core.tests").warning("dropped", message="1-0", name="x")
    (record,) = [r for r in records if r.name == "queue_core.tests"]
    assert record.getMessage() == "dropped message=1-0 name=x"
    assert (vars(record)["message_"], vars(record)["name_"]) == ("1-0", "x")


def test_the_readme_example_does_what_it_says() -> None:
    section = (ROOT / "README.md").read_text().split("## Logging\n", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    check = (
        "from queue_core import get_logger\n"
        "get_logger('queue_core.worker').info('hidden')\n"
        "get_logger('queue_core.worker').warning('shown', queue='emails')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", example + check],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
        check=True,
    )
    assert done.stderr == "WARNING:queue_core.worker:shown queue=emails\n"


async def test_each_job_of_a_slot_logs_with_its_own_context(
    records: list[logging.LogRecord],
    queue: Queue,
    raw: redis.asyncio.Redis,
    make_worker: Callable[..., Worker],
) -> None:
    """One slot runs one job after another: a job's lines carry that job's context, never
    the previous one's, and the worker's own lines carry none."""
    log = get_logger("queue_core.tests")

    async def process(job: Job) -> None:
        log.info("inside")

    first = await queue.add("first")
    second = await queue.add("second")
    corrupt = await queue.add("third")  # its envelope is not JSON: quarantined, never run
    await raw.hset(queue.keys["jobs"], corrupt.id, b"not json\n{}")
    async with make_worker(process, concurrency=1):
        await wait_counts(queue, completed=2, failed=1)
    fields = [vars(r) for r in records]
    inside = [(f["job_id"], f["job_name"], f["attempt"]) for f in fields if f["event"] == "inside"]
    assert inside == [(first.id, "first", 1), (second.id, "second", 1)]
    (quarantined,) = [f for f in fields if f["event"] == "job_quarantined"]
    assert quarantined["job_id"] == corrupt.id
    assert quarantined["job_name"] == ""  # its name could not be read; not "second"
    lifecycle = [f for f in fields if f["event"] in ("worker_started", "worker_stopped")]
    assert len(lifecycle) == 2
    assert not [f for f in lifecycle if "job_id" in f or "job_name" in f]
