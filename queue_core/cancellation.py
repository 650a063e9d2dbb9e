"""Cancelling jobs: what ``queue.cancel()`` sends, and how a worker hears it.

``cancel_job`` builds the operator's action (scripts/cancel_job.lua): a waiting or delayed
job ends at once as failed with ``JobCancelledError``; a running one gets the request in
its record and its id is published on the queue's cancel channel. Each worker's
``CancelListener`` is subscribed to that channel and hands the id to the ``JobRunner``,
which stops the attempt if it runs there (attempts.py). Pub/sub delivers at most once:
a message sent while a listener reconnects is lost, so lock renewal reports pending
requests as well (extend_locks.lua), and whichever script settles the job honours the
request (scripts/includes/cancel.lua).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from typing import TYPE_CHECKING, Any, Final, Literal

from redis.asyncio import ConnectionPool
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

from queue_core.admin import Operation, job_reply
from queue_core.errors import InvalidOptionError, JobStateError
from queue_core.hooks import OperationEvent
from queue_core.keys import QueueKeys
from queue_core.log import get_logger
from queue_core.options import MAX_ID_LENGTH
from queue_core.scripts import load_script
from queue_core.supervision import Backoff, is_redis_fault

if TYPE_CHECKING:
    from queue_core.worker_context import WorkerContext

__all__ = ["MAX_REASON_CHARS", "CancelListener", "CancelResult", "cancel_job"]

_CANCEL = load_script("cancel_job")

CancelResult = Literal["cancelled", "cancelling"]
# The reason is stored in the job's record, which must stay small (MAX_RECORD_BYTES).
MAX_REASON_CHARS: Final = 1000
# A subscription that has heard nothing for this long is pinged; without a reply by the
# next period it is taken as dead (a half-open connection raises no error by itself).
_SILENCE_S: Final = 5.0

_log = get_logger("queue_core.worker")


def cancel_job(job_id: str, reason: str, keys: QueueKeys) -> Operation[CancelResult]:
    """The ``cancel`` action: "cancelled" (the job was waiting or delayed and is failed
    now) or "cancelling" (it runs: its worker is told). ``JobNotFoundError`` for an
    unknown job, ``JobStateError`` for a finished one."""
    if not isinstance(job_id, str) or not job_id or len(job_id) > MAX_ID_LENGTH:
        raise InvalidOptionError(f"a job id is a string of 1 to {MAX_ID_LENGTH} characters")
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise InvalidOptionError(f"reason must be a str of at most {MAX_REASON_CHARS} characters")
    found = job_reply("cancel", job_id, keys.queue)

    def parse(reply: Any, event: OperationEvent | None) -> CancelResult:
        try:
            state = found(reply, event).state
        except JobStateError as exc:
            if len(reply) < 4:  # refused in its state: the error says so
                raise
            message = f"cannot cancel job {job_id!r}: {reply[3].decode()}"
            raise JobStateError(job_id, exc.state, "cancel", message) from None
        return "cancelling" if state == "active" else "cancelled"

    return Operation("cancel", _CANCEL, [job_id, reason], parse, job_id)


class CancelListener:
    """Subscribed to the queue's cancel channel while the worker runs; hands each job id
    it hears to ``on_cancel`` (which ignores the ids of jobs not running here). After a
    Redis fault it subscribes again, with backoff."""

    def __init__(self, ctx: WorkerContext, on_cancel: Callable[[str], None]) -> None:
        self.ctx = ctx
        self.on_cancel = on_cancel
        self.channel = ctx.keys["cancel"]
        self.errors = ctx.supervisor("cancel_listener")
        self._backoff = Backoff()
        self.subscribed = asyncio.Event()  # the first subscription is confirmed

    async def run(self) -> None:
        """Listen until cancelled at shutdown."""
        while True:
            await self.errors.guard(self._session, asyncio.sleep)

    async def _session(self) -> None:
        """One subscription, until a Redis fault ends it; then back off."""
        try:
            await self._subscribe_and_listen()
        except Exception as exc:
            if not is_redis_fault(exc, self.ctx.client):
                raise
            delay = self._backoff.next()
            _log.warning(
                "cancel_listener_disconnected",
                queue=self.ctx.name,
                worker_id=self.ctx.id,
                error=f"{type(exc).__name__}: {exc}",
                retry_in=round(delay, 3),
                hint="cancel requests sent meanwhile reach this worker with its next lock renewal",
            )
            await asyncio.sleep(delay)

    async def _subscribe_and_listen(self) -> None:
        subscriber = self._subscriber()
        pubsub = subscriber.pubsub()
        try:
            await self._listen(pubsub)
        finally:
            # Closed at once: after a fault, redis-py has already subscribed its connection
            # again, and a message read by nobody would be lost there.
            with suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call, unused-ignore]  # typed in redis-py 8
            if subscriber is not self.ctx.client:
                with suppress(Exception):
                    await subscriber.aclose(close_connection_pool=True)

    def _subscriber(self) -> AsyncRedis:
        client = self.ctx.client
        if not isinstance(client, AsyncRedisCluster):
            return client
        # A cluster client has no pub/sub of its own; a PUBLISH reaches every node of a
        # cluster, so listen on the node that serves the queue, as the cluster would.
        node = client.get_node_from_key(self.ctx.keys["meta"])
        assert node is not None  # only a replica lookup may find none
        pool = ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
        return AsyncRedis(connection_pool=pool)

    async def _listen(self, pubsub: PubSub) -> None:
        await pubsub.subscribe(self.channel)
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=_SILENCE_S)
            if message is None:
                if pinged:
                    raise RedisConnectionError("the cancel subscription got no reply to PING")
                await pubsub.ping()
                pinged = True
                continue
            pinged = False
            kind = message["type"]
            if kind == "subscribe":
                self.subscribed.set()
            if kind == "message":
                data = message["data"]
                self.on_cancel(data.decode() if isinstance(data, bytes) else str(data))
            elif kind == "subscribe" and self._backoff.reset():
                _log.info("cancel_listener_resubscribed", queue=self.ctx.name,
                          worker_id=self.ctx.id)  # fmt: skip
