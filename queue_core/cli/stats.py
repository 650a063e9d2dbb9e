"""``queue-core stats``: a table of queues, once or refreshed in place.

Per queue, read only and a few calls each: the counts per state and the oldest waiting
job's age (``get_stats``, one script), the pause flag, and from the completed and failed
sets (scored by finish time) the finish rates and the wait p95:

- **Rates** count the jobs kept in each set that finished in the last minute (and five
  minutes: ``--json``), ``ZCOUNT`` by score: exact when the set still holds a job that
  finished before the window. Otherwise (retention removed older jobs, or the queue is
  younger than the window) a count of ``EXTRAPOLATE_FROM`` jobs or more is extrapolated
  over the span it covers (marked ``~``), and a smaller one is shown as a lower bound
  (marked ``>=``). Jobs removed as they finish (``remove_on_complete=True``) are not
  counted.
- **Wait p95**: over the 200 newest jobs that finished in the last five minutes, the time
  from ready (enqueued, due, or sent back) to the start of their last attempt.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Final, Literal

import orjson
import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from queue_core.cli.app import app
from queue_core.cli.common import (
    DEFAULT_PREFIX,
    DEFAULT_URL,
    Admin,
    JsonOpt,
    PrefixOpt,
    RedisOpt,
    out,
    print_json,
    seconds,
)
from queue_core.connection import DEFAULT_REDIS_TIMEOUT, redis_errors
from queue_core.errors import QueueError, RedisUnavailableError
from queue_core.keys import QueueKeys

__all__ = ["QueueSnapshot", "snapshot"]

WINDOWS: Final = (60, 300)  # seconds: the rates' windows
WAIT_SAMPLE: Final = 200  # newest finished jobs the wait p95 looks at
EXTRAPOLATE_FROM: Final = 100  # jobs: fewer are too thin a sample to extrapolate from


Basis = Literal["exact", "extrapolated", "at_least"]
_MARKS: Final = {"exact": "", "extrapolated": "~", "at_least": ">="}


@dataclass
class Rate:
    """Jobs per minute that finished in a window, ``count`` of them kept in the set; the
    ``basis`` says how far to trust it (see the module docstring)."""

    per_minute: float
    count: int
    basis: Basis

    def cell(self) -> str:
        value = self.per_minute
        text = f"{value:.0f}" if value >= 10 or value.is_integer() else f"{value:.1f}"
        return _MARKS[self.basis] + text


@dataclass
class QueueSnapshot:
    name: str
    paused: bool
    counts: dict[str, int]
    oldest_waiting_age: float | None
    measured_at: datetime
    rates: dict[str, dict[int, Rate]] = field(default_factory=dict)  # set -> window -> rate
    wait_p95: float | None = None
    wait_sample: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "queue": self.name,
            "paused": self.paused,
            "counts": self.counts,
            "oldest_waiting_age": self.oldest_waiting_age,
            "rates": {
                state: {
                    f"{window // 60}m": {
                        "per_minute": round(rate.per_minute, 3),
                        "count": rate.count,
                        "basis": rate.basis,
                    }
                    for window, rate in rates.items()
                }
                for state, rates in self.rates.items()
            },
            "wait_p95": self.wait_p95,
            "wait_sample": self.wait_sample,
            "measured_at": self.measured_at,
        }


def snapshot(admin: Admin, name: str) -> QueueSnapshot:
    """One queue's figures (see the module docstring for how each is measured)."""
    queue = admin.queue(name, check=False)
    stats = queue.get_stats()
    paused = queue.is_paused()
    now = stats.measured_at.timestamp() * 1000  # Redis's clock, as the scores are
    keys = QueueKeys(name, admin.prefix)
    pipe = admin.client.pipeline(transaction=False)
    for state in ("completed", "failed"):
        for window in WINDOWS:
            pipe.zcount(keys[state], now - window * 1000, "+inf")
        pipe.zrange(keys[state], 0, 0, withscores=True)
        pipe.zrevrangebyscore(
            keys[state], "+inf", now - WINDOWS[-1] * 1000, 0, WAIT_SAMPLE, withscores=True
        )
    with redis_errors("stats", DEFAULT_REDIS_TIMEOUT):
        replies = pipe.execute()
    snap = QueueSnapshot(name, paused, stats.counts, stats.oldest_waiting_age, stats.measured_at)
    recent: list[tuple[bytes, float]] = []
    for i, state in enumerate(("completed", "failed")):
        *counts, oldest, newest = replies[i * 4 : i * 4 + 4]
        oldest_ms = oldest[0][1] if oldest else None
        snap.rates[state] = {
            window: _rate(count, window, now, oldest_ms)
            for window, count in zip(WINDOWS, counts, strict=True)
        }
        recent += newest
    recent = sorted(recent, key=lambda item: item[1], reverse=True)[:WAIT_SAMPLE]
    waits = _waits(admin, keys, [job_id for job_id, _ in recent])
    snap.wait_sample = len(waits)
    snap.wait_p95 = _percentile(waits, 0.95)
    return snap


def _rate(count: int, window: int, now: float, oldest_ms: float | None) -> Rate:
    covered = oldest_ms is None or now - oldest_ms >= window * 1000
    if covered:
        return Rate(count / window * 60, count, "exact")
    assert oldest_ms is not None
    span = (now - oldest_ms) / 1000
    if count >= EXTRAPOLATE_FROM and span > 0:
        return Rate(count / span * 60, count, "extrapolated")
    return Rate(count / window * 60, count, "at_least")


def _waits(admin: Admin, keys: QueueKeys, ids: list[bytes]) -> list[float]:
    if not ids:
        return []
    with redis_errors("stats", DEFAULT_REDIS_TIMEOUT):
        records = admin.client.hmget(keys["state"], ids)
    waits = []
    for raw in records:
        if raw is None:
            continue  # gone since (retention)
        try:
            record = orjson.loads(raw)
            started, ready = record.get("pon"), record.get("rdy") or record["ts"]
        except (TypeError, KeyError, AttributeError, orjson.JSONDecodeError):
            continue  # gone since (retention) or unreadable: not part of the sample
        if isinstance(started, int | float) and isinstance(ready, int | float):
            waits.append(max(0.0, (started - ready) / 1000))
    return waits


def _percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def table(snaps: list[QueueSnapshot], prefix: str) -> Table:
    grid = Table(title=f"queues under prefix {prefix!r}", title_justify="left")
    grid.add_column("queue", no_wrap=True)
    grid.add_column("paused")
    for label in ("waiting", "active", "delayed", "children", "completed", "failed"):
        grid.add_column(label, justify="right")
    for label in ("done/min", "fail/min", "wait p95", "oldest"):
        grid.add_column(label, justify="right")
    for s in snaps:
        c = s.counts
        grid.add_row(
            Text(s.name, style="bold"),
            Text("paused", style="yellow") if s.paused else "-",
            str(c["waiting"]),
            str(c["active"]),
            str(c["delayed"]),
            str(c["waiting_children"]),
            str(c["completed"]),
            Text(str(c["failed"]), style="red" if c["failed"] else ""),
            s.rates["completed"][60].cell(),
            s.rates["failed"][60].cell(),
            seconds(s.wait_p95),
            seconds(s.oldest_waiting_age),
        )
    if not snaps:
        grid.caption = "no queues"
    return grid


def gather(admin: Admin, names: list[str], check: bool = True) -> list[QueueSnapshot]:
    """The named queues (with ``check``, each must exist), or every queue found."""
    if check:
        for name in names:
            admin.queue(name)  # exits 4 for an unknown one
    return [snapshot(admin, name) for name in names or admin.discover()]


@app.command()
def stats(
    *,
    queues: Annotated[
        list[str] | None,
        typer.Argument(metavar="[QUEUE...]", help="Queues to show; default: every queue found."),
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh in place.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", "-n", min=0.1, help="Seconds between refreshes.")
    ] = 2.0,
    json: JsonOpt = False,
    redis: RedisOpt = DEFAULT_URL,
    prefix: PrefixOpt = DEFAULT_PREFIX,
) -> None:
    """Counts per state, finish rates, wait p95 and oldest wait of queues.

    Rates count the jobs kept in the completed and failed sets that finished in the last
    minute. When retention kept less than a minute of jobs (or the queue is younger), "~"
    marks a rate extrapolated from the span kept, ">=" a lower bound. Wait p95: the newest
    200 jobs finished in the last 5 minutes, from ready to started. With --watch --json,
    one JSON line per refresh.
    """
    names = list(queues or [])
    with Admin(redis, prefix) as admin:
        if not watch:
            snaps = gather(admin, names)
            if json:
                print_json({"prefix": prefix, "queues": [s.as_json() for s in snaps]})
            else:
                out.print(table(snaps, prefix))
            return
        gather(admin, names)  # unknown queues and an unreachable Redis fail at once
        if json:
            _watch_json(admin, names, prefix, interval)
        else:
            _watch_table(admin, names, prefix, interval)


def _watch_json(admin: Admin, names: list[str], prefix: str, interval: float) -> None:
    try:
        while True:
            snaps = gather(admin, names, check=False)
            print_json({"prefix": prefix, "queues": [s.as_json() for s in snaps]})
            time.sleep(interval)
    except KeyboardInterrupt:
        return


def _watch_table(admin: Admin, names: list[str], prefix: str, interval: float) -> None:
    def render() -> RenderableType:
        stamp = time.strftime("%H:%M:%S")
        try:
            body: RenderableType = table(gather(admin, names, check=False), prefix)
        except RedisUnavailableError as exc:  # keep watching: Redis may come back
            body = Text(f"Redis unavailable: {exc}", style="red")
        except QueueError as exc:
            body = Text(f"{type(exc).__name__}: {exc}", style="red")
        hint = f"{stamp}, every {interval:g}s; Ctrl-C to stop"
        return Group(body, Text(hint, style="dim"))

    try:
        if not out.is_terminal:  # piped or redirected: one table after the other
            while True:
                out.print(render())
                time.sleep(interval)
        with Live(render(), console=out, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(render(), refresh=True)
    except KeyboardInterrupt:
        return
