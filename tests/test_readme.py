"""The README's first example runs as written and prints what the README says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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
