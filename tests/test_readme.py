"""The README's first example runs as written and prints what the README says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent


def example_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## A first example", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def run(code: str, redis_url: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "REDIS_URL": redis_url, "QUEUE_CORE_LOG_FORMAT": "json"},
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_readme_examples_run_as_written(redis_url: str) -> None:
    first, sync_producer = example_blocks()
    assert run(first, redis_url).strip() == "completed {'delivered': True} 1"
    # Run again: the same job_id returns the completed job and enqueues nothing.
    assert run(first, redis_url).strip() == "completed {'delivered': True} 1"
    run(sync_producer, redis_url)
    readme = (ROOT / "README.md").read_text()
    assert "It prints `completed {'delivered': True} 1`" in readme


def section_blocks(heading: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


# What each example of "Operating a queue" prints (its own lines, among log lines).
OPERATING_OUTPUT = [
    ["paused True 1", "limits 3 RateLimit(max=100, duration=60.0)"],
    ["failed: RuntimeError payment provider down", "charged order 42", "retried 0"],
    [
        "cancelling",
        "cancelling",
        "cancelled",
        "cancelled: user closed the tab",
        "cancelled: replaced by a new upload",
    ],
    [
        "drained 5",
        "cleaned []",
        "left {'waiting': 0, 'active': 0, 'delayed': 0, 'completed': 0, 'failed': 0, "
        "'waiting_children': 0}",
    ],
    ["1 True {'doc': 9, 'revision': 5}", "delayed 1"],
    ["added 1", "active 1", "completed 1", "worker True 4"],
    ["cancelled", "failed 1"],
]


LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")


def test_the_operating_examples_run_as_written() -> None:
    blocks = section_blocks("Operating a queue")
    assert len(blocks) == len(OPERATING_OUTPUT)
    server = RedisServer().start()  # its own: each example starts from an empty Redis
    client = server.client()
    try:
        for code, expected in zip(blocks, OPERATING_OUTPUT, strict=True):
            client.flushall()
            lines = run(code, server.url).splitlines()
            assert [line for line in lines if not LOG_LINE.match(line)] == expected, code
    finally:
        client.close()
        server.cleanup()


def run_section(name: str) -> list[str]:
    """The output lines (log lines left out) of a section's one block, on its own Redis."""
    (code,) = section_blocks(name)
    server = RedisServer().start()
    try:
        lines = run(code, server.url).splitlines()
    finally:
        server.cleanup()
    return [line for line in lines if not LOG_LINE.match(line)]


def test_the_flows_example_runs_as_written() -> None:
    assert run_section("Flows") == [
        "waiting_children waiting waiting",
        "album of 2: tiles at 800px, tram at 800px",
        "albums album completed",
        "images resize completed",
        "images resize completed",
    ]


def test_the_recurring_jobs_example_runs_as_written() -> None:
    assert run_section("Recurring jobs") == [
        "cleanup 0:00:00.500000 UTC",
        "weekly-report 0 8 * * MON Europe/Paris",
        "runs 3 next None",
        "removed True",
    ]


def test_the_testing_example_passes_under_pytest(tmp_path: Path) -> None:
    """The block of "Testing your jobs" is a test file: pytest runs it, with queue_core's
    plugin (by its entry point, else -p), in a project of its own (strict asyncio mode)."""
    (code,) = section_blocks("Testing your jobs")
    (tmp_path / "test_emails.py").write_text(code)
    installed = any(ep.value == "queue_core.pytest_plugin" for ep in entry_points(group="pytest11"))
    plugin = [] if installed else ["-p", "queue_core.pytest_plugin"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *plugin, "-p", "no:hypothesispytest", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "REDIS_URL"},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
