"""The Redis keys of one queue.

Every key of a queue shares the hash tag ``{queue}``, so a queue lives in one Redis Cluster
slot. Jobs are fields of a few per-queue hashes rather than keys of their own: that way
every script knows every key it touches before it runs and can declare it in KEYS, even
the scripts that discover job ids as they go (fetching, trimming, stalled recovery).
"""

from __future__ import annotations

from typing import Final

from queue_core.errors import InvalidOptionError
from queue_core.options import check_name

__all__ = ["KEY_NAMES", "QueueKeys"]

KEY_NAMES: Final = (
    # HASH counters: id (job ids), fifo and lifo (ordering within a priority), fmt (newest
    # job format); settings: paused, gcc (global concurrency), rlm and rld (rate limit max
    # and window ms), evl (events stream length, 0: off)
    "meta",
    "jobs",  # HASH   id -> envelope: JSON header line, then the serialized data
    "state",  # HASH  id -> JSON record of timestamps, counters, lock token, retention
    "results",  # HASH  id -> serialized return value
    # HASH id -> JSON {type, message, stack, a, t, prev}: the latest failure's error, its
    # attempt and time (ms), and up to 9 earlier errors (scripts/includes/error_history)
    "errors",
    "progress",  # HASH id -> JSON progress value
    "logs",  # HASH   id -> JSON list of log lines
    "wait",  # ZSET   ready jobs, score = priority band + sequence
    "active",  # ZSET running jobs, score = lock deadline (ms)
    "delayed",  # ZSET  score = due time (ms)
    "completed",  # ZSET score = finish time (ms)
    "failed",  # ZSET   score = finish time (ms); the dead-letter set
    "marker",  # ZSET   wake-up signal that idle workers block on with BZPOPMIN
    "limiter",  # STRING rate-limit counter with the window as its TTL
    "corrupt",  # HASH  id -> the unreadable record of a quarantined job, kept as it was
    "events",  # STREAM every transition: {event, id, ...}, capped (meta field "evl")
    "workers",  # ZSET  live workers, score = heartbeat expiry (ms)
    "workerinfo",  # HASH worker id -> JSON {host, pid, concurrency, started, beat, jobs}
    "dedup",  # HASH   dedup key -> JSON {id, exp}: the job that holds it, until when (ms)
    "dedupexp",  # ZSET dedup keys held for a ttl, score = exp: expired ones are dropped
    # HASH   "c:<scheduler id>" -> JSON config, "e:<scheduler id>" -> its runs' envelope
    "schedulers",
    # Flows (flows.py): a parent waits in "children" until its children have finished.
    "children",  # ZSET parents waiting for their children, score = time added (ms)
    "deps",  # HASH   parent id -> JSON array of its children's refs ([queue, id] as JSON)
    # HASH JSON [parent id, child ref] -> the child's outcome: a JSON header line
    # ({s: completed|failed|ignored|removed, e: error message, h: headers}), then its value
    "depout",
    # HASH   message -> JSON header line, then a value: what this queue owes another one
    # (a child's outcome for its parent, a cancel for a child), until it is delivered
    "outbox",
    "outboxat",  # ZSET outbox messages, score = when written (ms): the sweep's order
    "cancel",  # CHANNEL pub/sub: ids of running jobs to cancel (a name only, never stored)
)


class QueueKeys:
    """Key names of one queue: ``<prefix>:{<queue>}:<suffix>``."""

    __slots__ = ("_keys", "_selected", "prefix", "queue")

    def __init__(self, queue: str, prefix: str = "qc") -> None:
        self.queue = check_name(queue, "queue name")
        if not isinstance(prefix, str) or not prefix or len(prefix) > 64 or "{" in prefix:
            raise InvalidOptionError(
                f"prefix must be 1 to 64 characters without braces: {prefix!r}"
            )
        self.prefix = prefix
        base = f"{prefix}:{{{queue}}}:"
        self._keys = {name: base + name for name in KEY_NAMES}
        # A script's key list, by its names: built once, since a worker asks per call.
        self._selected: dict[tuple[str, ...], tuple[str, ...]] = {}

    def __getitem__(self, name: str) -> str:
        return self._keys[name]

    def select(self, names: tuple[str, ...]) -> tuple[str, ...]:
        selected = self._selected.get(names)
        if selected is None:
            selected = self._selected[names] = tuple([self._keys[name] for name in names])
        return selected

    def all(self) -> list[str]:
        return list(self._keys.values())
