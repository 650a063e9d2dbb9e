"""The job browser's server time: the overview of 50 queues, and the page of a queue that
holds 100,000 jobs (its first page and a deep one), on a private redis-server.

    python -m bench.ui_render [--queues 50] [--big 100000] [--requests 30]

The fill: ``--queues`` - 1 small queues (``--small`` jobs each, worked through by a real
worker so that they have completed and failed jobs, sparklines and wait samples), and one
big queue of ``--big`` waiting jobs (``add_bulk`` in chunks) plus a few thousand finished
ones. Then each case runs ``--requests`` times after a warm-up: the data layer's calls
(queue_core/ui/data.py) alone, and full HTML renders through the ASGI app
(``queue_ui``, in process, through ``httpx.ASGITransport``: no network, so the time is the
server's plus the in-process client's, well under a millisecond). Printed: median and p95
per case, in milliseconds. The goal is under 200 ms for each.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import quote

import redis.asyncio
import structlog

from queue_core import Job, JobSpec, Queue, Worker
from queue_core.testing import RedisServer
from queue_core.ui import data

PREFIX = "qc"
BIG = "bench:big"
CHUNK = 1000
COMMAND = "python -m bench.ui_render"


async def _finish(job: Job) -> str:
    if job.name == "fail":
        raise RuntimeError("planned failure")
    return "done"


async def _work_through(url: str, name: str) -> None:
    """Run a real worker until every job of ``name`` has finished (retention keeps the
    latest 1,000 completed ones)."""
    async with Queue(name, redis=url) as queue, Worker(name, _finish, redis=url, concurrency=20):
        while True:
            counts = await queue.get_counts()
            if counts["waiting"] + counts["active"] == 0:
                return
            await asyncio.sleep(0.05)


async def fill(url: str, queues: int, small: int, big: int) -> list[str]:
    names = [f"bench:q{i:02d}" for i in range(queues - 1)] + [BIG]
    async with Queue(BIG, redis=url) as queue:
        finished = min(big // 20, 5000)
        mix = [JobSpec("fail" if i % 10 == 0 else "render") for i in range(finished)]
        await queue.add_bulk(mix)
        await _work_through(url, BIG)
        for start in range(0, big, CHUNK):
            count = min(CHUNK, big - start)
            await queue.add_bulk(
                [JobSpec(f"export-{start + i}", {"n": start + i}) for i in range(count)]
            )
    for name in names[:-1]:
        async with Queue(name, redis=url) as queue:
            await queue.add_bulk([JobSpec("fail" if i % 7 == 0 else "mail") for i in range(small)])
    await asyncio.gather(*(_work_through(url, name) for name in names[:-1]))
    for name in names[:-1]:  # and some left waiting
        async with Queue(name, redis=url) as queue:
            await queue.add_bulk([JobSpec("mail") for _ in range(small // 2)])
    return names


async def timed(call: Callable[[], Awaitable[Any]], requests: int) -> list[float]:
    await call()  # warm-up: scripts loaded, connections open, templates compiled
    times = []
    for _ in range(requests):
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-95 * len(ordered) // 100) - 1)]


async def measure(
    url: str, names: list[str], requests: int, waiting: int
) -> list[tuple[str, list[float]]]:
    client = redis.asyncio.Redis.from_url(url)
    big = Queue(BIG, redis=client)
    deep = max(1, min(1000, waiting // 50))  # page 1000 of 50 jobs: offset 49,950

    async def overview() -> None:
        found = await data.discover_queues(client, PREFIX)
        assert len(found) == len(names)
        await data.queue_summaries(client, PREFIX, found)

    async def queue_page(page: int, order: str) -> None:
        await data.queue_summaries(client, PREFIX, [BIG])
        listed = await data.list_jobs(big, "waiting", page=page, order=order)
        assert len(listed.jobs) == 50

    async def search() -> None:
        await data.search_jobs(big, "waiting", "no-such-name")  # scans the whole bound

    rows = [
        (f"data: overview, {len(names)} queues", await timed(overview, requests)),
        ("data: queue page 1 (newest)", await timed(lambda: queue_page(1, "newest"), requests)),
        ("data: queue page 1 (oldest)", await timed(lambda: queue_page(1, "oldest"), requests)),
        (f"data: queue page {deep}", await timed(lambda: queue_page(deep, "newest"), requests)),
        ("data: search by name (scan bound 10k)", await timed(search, requests)),
    ]
    rows += await _http(client, requests, deep)
    await big.close()
    await client.aclose()
    return rows


async def _http(
    client: redis.asyncio.Redis, requests: int, deep: int
) -> list[tuple[str, list[float]]]:
    try:
        import httpx  # noqa: PLC0415 - the ui extra's test client

        from queue_core.ui import queue_ui  # noqa: PLC0415
    except ImportError as exc:
        print(f"HTTP renders not measured: {exc}")
        return []
    app = queue_ui(redis=client)
    transport = httpx.ASGITransport(app=app)
    rows = []
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        big = quote(BIG, safe=":")
        paths = [
            ("/", "http: GET /"),
            (f"/q/{big}?state=waiting&page=1", "http: GET /q/<big>?state=waiting&page=1"),
            (f"/q/{big}?state=waiting&page={deep}", f"http: GET /q/<big>?...&page={deep}"),
        ]
        for path, label in paths:

            async def get(path: str = path) -> None:
                response = await http.get(path)
                assert response.status_code == 200, (path, response.status_code)

            rows.append((label, await timed(get, requests)))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--queues", type=int, default=50)
    parser.add_argument("--small", type=int, default=300, help="jobs per small queue")
    parser.add_argument("--big", type=int, default=100_000, help="waiting jobs, big queue")
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args(argv)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    logging.disable(logging.CRITICAL)  # the planned failures of the fill
    with RedisServer() as server:
        start = time.perf_counter()
        names = asyncio.run(fill(server.url, args.queues, args.small, args.big))
        print(
            f"filled {len(names)} queues ({args.big:,} waiting jobs in {BIG}) "
            f"in {time.perf_counter() - start:.1f}s"
        )
        rows = asyncio.run(measure(server.url, names, args.requests, args.big))
    width = max(len(label) for label, _ in rows)
    print(f"\n{'case':<{width}}  median ms  p95 ms   ({args.requests} requests each)")
    for label, times in rows:
        print(f"{label:<{width}}  {statistics.median(times):9.1f}  {p95(times):6.1f}")
    print(
        f"\nreproduce: {COMMAND} --queues {args.queues} --big {args.big} --requests {args.requests}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
