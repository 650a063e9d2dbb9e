"""A worker with no telemetry code at all, for ``opentelemetry-instrument``:

    OTEL_METRICS_EXPORTER=queue_core_prometheus opentelemetry-instrument \\
        python -m tests.e2e.prom_plain_worker REDIS_URL QUEUE

It completes every job and runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import sys

from queue_core import Job, Worker


async def process(job: Job) -> str:
    await asyncio.sleep(0.01)
    return "done"


async def main(redis_url: str, queue_name: str) -> None:
    worker = Worker(queue_name, process, redis=redis_url, drain_delay=1.0, shutdown_timeout=5.0)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
