"""``FlowProducer``: adds a flow (a tree of jobs in any queues) and reads one back.

Atomicity. On a single Redis the whole tree is one MULTI/EXEC transaction of add_flow
calls, one per queue and depth: no client sees part of it, and a dropped connection or a
crash adds all of it or none. The transaction loads the script first (SCRIPT LOAD inside
MULTI), so that no EVALSHA in it can fail alone with NOSCRIPT while the others run.

A Redis Cluster cannot run one transaction across slots, and each queue has its own
slot. There the calls run one after the other, parents before children and the leaves
last, so that no job of the tree can run before every parent exists. If a call fails, the
jobs already added are removed (leaves still running are cancelled) and the error is
raised: nothing of the tree stays. Only if that undo fails as well (Redis away for both)
does ``PartialFlowError`` list the jobs left behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from contextlib import ExitStack
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster

from queue_core.connection import (
    DEFAULT_REDIS_TIMEOUT,
    AsyncClient,
    byte_client,
    check_server,
    create_async_client,
    redis_errors,
    server_address,
    to_deadline,
)
from queue_core.errors import JobStateError, PartialFlowError
from queue_core.flows import FlowJob, FlowNode, FlowPlan
from queue_core.hooks import GLOBAL_HOOKS, Around, Hook, HookRegistry
from queue_core.keys import QueueKeys
from queue_core.queue import DEFAULT_MAX_PAYLOAD_BYTES, Queue
from queue_core.scripts import load_script, run_script
from queue_core.serializer import JsonSerializer, Serializer

__all__ = ["FlowProducer"]

_ADD_FLOW = load_script("add_flow")


class FlowProducer:
    """Add flows: trees of jobs whose parents wait for their children (``FlowNode``).

    ``redis``, ``prefix``, ``serializer`` and ``redis_timeout`` are as for ``Queue``; every
    queue of a flow shares them (a child's return value is read back by its parent with
    the same serializer).
    """

    def __init__(
        self,
        *,
        redis: str | AsyncClient | None = None,
        prefix: str = "qc",
        serializer: Serializer | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        hooks: Iterable[Hook] = (),
        redis_timeout: float | timedelta | None = DEFAULT_REDIS_TIMEOUT,
    ) -> None:
        if redis is None or isinstance(redis, str):
            self.client: AsyncClient = create_async_client(redis)
            self._owns_client = True
        else:
            self.client, self._owns_client = byte_client(redis)
        QueueKeys("flow", prefix)  # checks the prefix
        self.prefix = prefix
        self.serializer = serializer or JsonSerializer()
        self.max_payload_bytes = max_payload_bytes
        self._hook_list = tuple(hooks)
        self.hooks = HookRegistry(GLOBAL_HOOKS)
        for hook in self._hook_list:
            self.hooks.add(hook)
        self.redis_timeout = to_deadline(redis_timeout)
        self._queues: dict[str, Queue] = {}
        self._checked = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        for queue in self._queues.values():
            await queue.close()
        if self._owns_client:
            await self.client.aclose()

    def queue(self, name: str) -> Queue:
        """A ``Queue`` of this producer's connection (kept: call ``close()`` once)."""
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = Queue(
                name,
                redis=self.client,
                prefix=self.prefix,
                serializer=self.serializer,
                max_payload_bytes=self.max_payload_bytes,
                hooks=self._hook_list,
                redis_timeout=self.redis_timeout,
            )
        return queue

    async def add(self, flow: FlowNode) -> FlowJob:
        """Add the tree atomically (see the module's notes for Redis Cluster) and return
        its jobs. A job whose ``job_id`` exists is left as it is (``deduplicated``).

        Every job gets the ``around_enqueue`` hooks of its queue's add, one event per
        queue, all open while the tree is sent (so instrumentation puts the whole flow in
        one trace). Raises ``InvalidOptionError``, ``SerializationError`` or
        ``PayloadTooLargeError`` before anything is sent."""
        plan = FlowPlan(flow)
        hooks = self.hooks.snapshot().around_enqueue
        address, port = server_address(self.client)
        with ExitStack() as stack:
            for event in plan.events.values():
                event.server_address, event.server_port = address, port
                if hooks:
                    stack.enter_context(Around(hooks, event))
            calls = plan.calls(self.serializer, self.max_payload_bytes)
            with redis_errors("add_flow", self.redis_timeout):
                if not self._checked:
                    await check_server(self.client)
                    self._checked = True
                if isinstance(self.client, AsyncRedisCluster):
                    replies = await self._add_in_order(calls)
                else:
                    replies = await self._add_in_transaction(calls)
            return plan.result(replies, self.queue)

    async def _add_in_transaction(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        async with asyncio.timeout(self.redis_timeout), self.client.pipeline() as pipe:
            pipe.script_load(_ADD_FLOW.source)
            for queue, args in calls:
                keys = QueueKeys(queue, self.prefix).select(_ADD_FLOW.keys)
                pipe.evalsha(_ADD_FLOW.sha, len(keys), *keys, *args)
            return list(await pipe.execute())[1:]

    async def _add_in_order(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        replies: list[Any] = []
        try:
            for queue, args in calls:
                async with asyncio.timeout(self.redis_timeout):
                    replies.append(
                        await run_script(
                            self.client, _ADD_FLOW, QueueKeys(queue, self.prefix), args
                        )
                    )
        except BaseException as exc:
            added = [
                (queue, item[0].decode())
                for (queue, _), reply in zip(calls, replies, strict=False)
                for item in reply[1:]
                if int(item[1]) == 1
            ]
            left = await self._undo(added)
            if left:
                raise PartialFlowError([f"{q}:{i}" for q, i in left], exc) from exc
            raise
        return replies

    async def _undo(self, added: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Remove the jobs of a half-added flow, children first; cancel those that run
        (each action delivers its own outbox). Returns those it could not remove."""
        left: list[tuple[str, str]] = []
        for queue_name, job_id in reversed(added):
            queue = self.queue(queue_name)
            try:
                async with asyncio.timeout(self.redis_timeout):
                    try:
                        await queue.remove_job(job_id)
                    except JobStateError:  # a leaf that started already
                        await queue.cancel(job_id, "its flow could not be added")
            except Exception:
                left.append((queue_name, job_id))
        return left  # remove_job and cancel delivered what they wrote to the outbox

    async def get_flow(self, queue: str, job_id: str) -> FlowJob | None:
        """The tree below a job, each job with its state (see ``Queue.get_flow``)."""
        return await self.queue(queue).get_flow(job_id)
