"""Delivering what one queue owes another: flow children's outcomes and cancels.

A script that ends a flow child writes the outcome into the child queue's outbox, and a
script that cancels or removes a parent writes cancels for its unfinished children there
(scripts/includes/flow.lua): no script touches two queues, which on a Redis Cluster may
live in different slots. ``deliver`` then takes each message to the queue it is for
(resolve_dependency.lua, cancel_job.lua) and deletes it (ack_outbox.lua). It runs right
after the script that wrote the messages (a worker's settle, an operator's cancel or
removal), and every worker sweeps its queue's outbox every ``SWEEP_INTERVAL_S`` for
messages older than ``SWEEP_MIN_AGE_MS``: those whose delivery a crash cut short. Each
delivery is idempotent, so two deliveries of one message (a sweep racing a worker) are
harmless, and a message is deleted only once delivered.

``deliver`` is an I/O-free generator of ``Call``s: ``Queue``, ``SyncQueue`` and the worker
drive it with ``run_async`` / ``run_sync``.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, Final

import orjson

from queue_core.job import JobRef
from queue_core.keys import QueueKeys
from queue_core.log import get_logger
from queue_core.scripts import LuaScript, load_script, run_script, run_script_sync

__all__ = ["SWEEP_INTERVAL_S", "SWEEP_MIN_AGE_MS", "Call", "deliver", "run_async", "run_sync"]

SWEEP_INTERVAL_S: Final = 5.0
SWEEP_MIN_AGE_MS: Final = 5000  # a live worker delivers its messages within milliseconds
_BATCH: Final = 100
_MAX_ROUNDS: Final = 1000  # a bound on one delivery's cascade (a deep tree, many batches)

_READ = load_script("read_outbox")
_ACK = load_script("ack_outbox")
_RESOLVE = load_script("resolve_dependency")
_CANCEL = load_script("cancel_job")

_PARENT_FAILED = 3  # resolve_dependency's status when the child failed its parent

Call = tuple[str, LuaScript, list[Any]]  # (queue, script, ARGV)

_log = get_logger("queue_core.flows")


def deliver(queue: str, min_age_ms: int = 0) -> Generator[Call, Any, int]:
    """Deliver ``queue``'s outbox messages written at least ``min_age_ms`` ago, and those
    that the deliveries cause in turn (a parent failed by its child tells its own parent;
    a cancelled parent cancels its children). Returns the number delivered."""
    todo = [(queue, min_age_ms)]
    delivered = 0
    for _ in range(_MAX_ROUNDS):
        if not todo:
            break
        source, age = todo.pop(0)
        reply = yield (source, _READ, [age, _BATCH])
        acks: list[Any] = []
        for message, body in zip(reply[::2], reply[1::2], strict=True):
            try:
                target, call = _delivery(body)
            except (ValueError, KeyError, TypeError) as exc:  # not written by these scripts
                _log.error("outbox_message_dropped", queue=source, message=message, error=repr(exc))
                acks += [message, body]
                continue
            result = yield call
            if call[1] is _CANCEL or (int(result[0]) == _PARENT_FAILED):
                todo.append((target.queue, 0))
            acks += [message, body]
            delivered += 1
        if acks:
            yield (source, _ACK, acks)
        if len(reply) // 2 == _BATCH:
            todo.append((source, age))
    return delivered


def _delivery(body: bytes) -> tuple[JobRef, Call]:
    line, _, value = body.partition(b"\n")
    head = orjson.loads(line)
    target = JobRef.from_wire(head["to"])
    kind = head["k"]
    if kind == "cancel":
        return target, (target.queue, _CANCEL, [target.id, head.get("e") or ""])
    args = [target.id, head["from"], kind, head.get("pol") or "", head.get("t") or "",
            head.get("e") or "", value, orjson.dumps(head.get("h") or {})]  # fmt: skip
    return target, (target.queue, _RESOLVE, args)


async def run_async(client: Any, prefix: str, steps: Generator[Call, Any, int]) -> int:
    result: Any = None
    while True:
        try:
            queue, script, args = steps.send(result)
        except StopIteration as done:
            return int(done.value)
        result = await run_script(client, script, QueueKeys(queue, prefix), args)


def run_sync(client: Any, prefix: str, steps: Generator[Call, Any, int]) -> int:
    result: Any = None
    while True:
        try:
            queue, script, args = steps.send(result)
        except StopIteration as done:
            return int(done.value)
        result = run_script_sync(client, script, QueueKeys(queue, prefix), args)
