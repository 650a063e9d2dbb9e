"""Queue discovery: every queue under a key prefix, found by SCAN (read only).

A queue's keys are ``<prefix>:{<queue>}:<suffix>`` (keys.py), about 30 at most: its jobs
are fields of them, so a SCAN of a big queue stays short. A key whose suffix is not one of
a queue's (another application's key under the same prefix) is ignored. The admin CLI
(blocking client) and the job browser (asyncio client) share the parsing here.
"""

from __future__ import annotations

import re

import redis

from queue_core.connection import AsyncClient
from queue_core.keys import KEY_NAMES

__all__ = ["discover_queues", "discover_queues_sync", "queue_of_key", "scan_pattern"]

_SCAN_COUNT = 1000


def scan_pattern(prefix: str) -> str:
    """The SCAN MATCH pattern of every queue key under ``prefix`` (its glob characters
    escaped)."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + ":{*}:*"


def queue_of_key(key: bytes | str, prefix: str) -> str | None:
    """The queue that ``key`` belongs to, or None if it is not a queue key under ``prefix``.

    The queue is what sits between the first ``{`` and the last ``}:``, so a name may hold
    ``:``; the suffix must be a queue key's name."""
    text = key.decode(errors="replace") if isinstance(key, bytes) else key
    head = prefix + ":{"
    if not text.startswith(head):
        return None
    queue, sep, suffix = text[len(head) :].rpartition("}:")
    if not sep or not queue or suffix not in KEY_NAMES or "{" in queue or "}" in queue:
        return None
    return queue


def discover_queues_sync(client: redis.Redis, prefix: str) -> list[str]:
    """Every queue under ``prefix``, sorted by name (a blocking client)."""
    names = set()
    for key in client.scan_iter(match=scan_pattern(prefix), count=_SCAN_COUNT):
        queue = queue_of_key(key, prefix)
        if queue is not None:
            names.add(queue)
    return sorted(names)


async def discover_queues(client: AsyncClient, prefix: str) -> list[str]:
    """Every queue under ``prefix``, sorted by name (an asyncio client; a cluster client
    scans every primary)."""
    names = set()
    async for key in client.scan_iter(match=scan_pattern(prefix), count=_SCAN_COUNT):
        queue = queue_of_key(key, prefix)
        if queue is not None:
            names.add(queue)
    return sorted(names)
