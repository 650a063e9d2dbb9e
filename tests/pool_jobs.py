"""Processors for tests/test_process_pool.py: module-level, so a child process imports them."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from queue_core import DelayedError, ProcessPoolJob, UnrecoverableError

_log = logging.getLogger("tests.pool_jobs")


def cpu(job: ProcessPoolJob) -> dict[str, Any]:
    """CPU-bound: a sum of squares, with the pid that computed it."""
    total = sum(i * i for i in range(job.data["n"]))
    return {"pid": os.getpid(), "total": total}


def crash(job: ProcessPoolJob) -> int:
    """Dies mid-job on the attempts listed in data["crash_on"], else returns its pid."""
    job.log(f"pid {os.getpid()}")
    if job.attempt in job.data["crash_on"]:
        time.sleep(job.data.get("sleep", 0.0))
        os._exit(3)
    return os.getpid()


def sleep(job: ProcessPoolJob) -> int:
    """Sleeps data["seconds"], its pid logged first."""
    job.log(f"pid {os.getpid()}")
    time.sleep(job.data["seconds"])
    return os.getpid()


def report(job: ProcessPoolJob) -> str:
    """Progress, job log lines and a stdlib log record, all from the child."""
    job.update_progress(50)
    kept = job.log("half way")
    _log.warning("from the child %s", os.getpid())
    job.update_progress({"done": True})
    return f"kept {kept}"


def steer(job: ProcessPoolJob) -> str:
    """Raises the processor-facing errors: they must keep their meaning across the pipe."""
    kind = job.data["kind"]
    if kind == "value":
        raise ValueError("bad input")
    if kind == "unrecoverable":
        raise UnrecoverableError("give up")
    if kind == "delayed" and job.attempt == 1:
        raise DelayedError(0.1)
    return f"{kind} on attempt {job.attempt}"


def unpicklable(job: ProcessPoolJob) -> Any:
    return lambda: None
