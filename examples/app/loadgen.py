"""Steady traffic against the example API, a fixed mix of requests.

    python -m examples.app.loadgen [--api http://127.0.0.1:8000] [--rate 5]
                                   [--duration SECONDS] [--image-burst 5]

``--rate`` requests a second, on a fixed schedule (a slow answer does not slow the
schedule). Every 20 slots hold 8 signups (one in ten repeats an earlier email, which the
API answers with the first user), 9 webhook deliveries, 2 reports (one in four urgent)
and one burst of ``--image-burst`` image resizes at once: bursts are what a rate limiter
is for. Webhook targets cycle through healthy, ``flaky-*``, ``down-*`` and ``gone-*``
receivers, so retries, exhausted attempts and unrecoverable failures all happen.

It waits for ``GET /healthz`` first, logs its progress every 10 s, and stops on SIGTERM,
SIGINT or after ``--duration``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

import httpx
import structlog

from queue_core import configure_logging

log = structlog.get_logger("examples.app.loadgen")

PATTERN: Final = (
    "signup", "webhook", "signup", "webhook", "report", "signup", "webhook", "images",
    "signup", "webhook", "signup", "webhook", "report", "signup", "webhook", "signup",
    "webhook", "webhook", "signup", "webhook",
)  # fmt: skip
WEBHOOK_TARGETS: Final = (
    "acme", "flaky-globex", "initech", "gone-umbrella", "acme", "flaky-hooli",
    "down-vandelay", "initech", "acme",
)  # fmt: skip
REPORT_KINDS: Final = ("signups", "revenue", "retention")
IMAGE_SIZES: Final = ((1600, 1200), (1200, 1600), (2000, 1000), (800, 800))
MAX_IN_FLIGHT: Final = 100
PROGRESS_EVERY_S: Final = 10.0
READY_TIMEOUT_S: Final = 60.0


class LoadGenerator:
    def __init__(self, client: httpx.AsyncClient, *, image_burst: int, seed: int | None) -> None:
        self.client = client
        self.image_burst = image_burst
        self.rng = random.Random(seed)
        self.run_id = uuid.uuid4().hex[:6]
        self.sent: Counter[str] = Counter()  # "signup 201", "webhook error", ...
        self.in_flight: set[asyncio.Task[None]] = set()
        self._signups = 0
        self._webhooks = 0
        self._reports = 0

    async def _post(self, kind: str, path: str, body: dict[str, Any]) -> None:
        try:
            response = await self.client.post(path, json=body)
            self.sent[f"{kind} {response.status_code}"] += 1
        except httpx.HTTPError as exc:
            self.sent[f"{kind} {type(exc).__name__}"] += 1

    def _requests(self, kind: str) -> list[tuple[str, str, dict[str, Any]]]:
        if kind == "signup":
            self._signups += 1
            n = self._signups
            if n % 10 == 0:  # the same person signing up again
                n = self.rng.randrange(1, n)
            email = f"user-{self.run_id}-{n}@example.com"
            return [("signup", "/users", {"email": email, "name": f"User {n}"})]
        if kind == "webhook":
            target = WEBHOOK_TARGETS[self._webhooks % len(WEBHOOK_TARGETS)]
            self._webhooks += 1
            body: dict[str, Any] = {
                "target": target,
                "event": "user.created",
                "payload": {"n": self._webhooks},
            }
            return [("webhook", "/webhooks", body)]
        if kind == "report":
            self._reports += 1
            body = {
                "kind": self.rng.choice(REPORT_KINDS),
                "days": self.rng.choice((7, 30, 90)),
                "urgent": self._reports % 4 == 0,
            }
            return [("report", "/reports", body)]
        requests: list[tuple[str, str, dict[str, Any]]] = []
        for _ in range(self.image_burst):
            width, height = self.rng.choice(IMAGE_SIZES)
            body = {"width": width, "height": height, "sizes": [[800, 600], [320, 240], [64, 64]]}
            requests.append(("image", "/images", body))
        return requests

    def _fire(self, kind: str) -> None:
        for name, path, body in self._requests(kind):
            if len(self.in_flight) >= MAX_IN_FLIGHT:
                self.sent[f"{name} skipped"] += 1  # the API is too slow: shed, do not pile up
                continue
            task = asyncio.create_task(self._post(name, path, body))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    async def wait_ready(self, stop: asyncio.Event) -> bool:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await self.client.get("/healthz")).status_code == 200:
                    return True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
        return False

    async def run(self, rate: float, stop: asyncio.Event, duration: float | None) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        interval = 1.0 / rate
        next_progress = start + PROGRESS_EVERY_S
        slot = 0
        while not stop.is_set():
            now = loop.time()
            if duration is not None and now - start >= duration:
                break
            self._fire(PATTERN[slot % len(PATTERN)])
            slot += 1
            if now >= next_progress:
                log.info("loadgen_progress", slots=slot, sent=dict(sorted(self.sent.items())))
                next_progress += PROGRESS_EVERY_S
            delay = start + slot * interval - loop.time()  # on schedule, no drift
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        if self.in_flight:
            await asyncio.wait(set(self.in_flight), timeout=10)


async def run(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with httpx.AsyncClient(base_url=args.api, timeout=10.0) as client:
        generator = LoadGenerator(client, image_burst=args.image_burst, seed=args.seed)
        if not await generator.wait_ready(stop):
            log.error("api_not_ready", api=args.api, waited_s=READY_TIMEOUT_S)
            return 0 if stop.is_set() else 1
        log.info("loadgen_started", api=args.api, rate=args.rate, image_burst=args.image_burst)
        await generator.run(args.rate, stop, args.duration)
        log.info("loadgen_stopped", sent=dict(sorted(generator.sent.items())))
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.app.loadgen", description="Steady traffic for the example API."
    )
    parser.add_argument(
        "--api",
        default=os.environ.get("API_URL", "http://127.0.0.1:8000"),
        help="the API's base URL (default $API_URL, else http://127.0.0.1:8000)",
    )
    parser.add_argument("--rate", type=float, default=5.0, help="requests a second (5)")
    parser.add_argument("--duration", type=float, default=None, help="stop after SECONDS")
    parser.add_argument("--image-burst", type=int, default=5, help="images per burst (5)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random choices")
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be more than 0")
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be more than 0")
    if args.image_burst < 0:
        parser.error("--image-burst must be 0 or more")
    args.api = args.api.rstrip("/")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
