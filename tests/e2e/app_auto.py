"""A producer and a worker in one process, with no instrumentation code: the tests run it
under ``opentelemetry-instrument python -m tests.e2e.app_auto``.

It starts a worker on ``$E2E_QUEUE`` (Redis at ``$REDIS_URL``), then enqueues
``E2E_JOBS`` jobs (2 by default), each delayed a little so that the worker first waits
idle in Redis. The processor logs one line with structlog and writes a key through its own
Redis client. Once every job has run, the worker closes (the last job settles first) and
the process prints a JSON summary on stdout and exits; the OpenTelemetry SDK flushes at
exit.
"""

from __future__ import annotations

import asyncio
import json
import os

import redis.asyncio
import structlog

from queue_core import Job, Queue, Worker, configure_logging

JOB_LOG_LINE = "auto_job_running"


def touched_key(queue: str, job_id: str) -> str:
    return f"e2e:{queue}:touched:{job_id}"


async def main() -> None:
    configure_logging("json")
    log = structlog.get_logger("e2e.auto")
    queue_name = os.environ["E2E_QUEUE"]
    redis_url = os.environ["REDIS_URL"]
    expected = int(os.environ.get("E2E_JOBS", "2"))

    side = redis.asyncio.Redis.from_url(redis_url)
    seen: set[str] = set()
    all_ran = asyncio.Event()

    async def touch(job: Job) -> dict[str, bool]:
        log.info(JOB_LOG_LINE)
        await side.set(touched_key(queue_name, job.id), "1")
        seen.add(job.id)
        if len(seen) >= expected:
            all_ran.set()
        return {"touched": True}

    worker = Worker(queue_name, touch, redis=redis_url, drain_delay=0.2, shutdown_timeout=10.0)
    async with Queue(queue_name, redis=redis_url) as queue, worker:
        jobs = [await queue.add("touch", {"n": n}, delay=0.3) for n in range(expected)]
        await asyncio.wait_for(all_ran.wait(), timeout=20)
    # Leaving the block closed the worker once the running job had settled.
    await side.aclose()
    print(json.dumps({"jobs": [job.id for job in jobs], "ran": sorted(seen)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
