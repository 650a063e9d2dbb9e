"""A custom serializer replaces JSON for data and results; the envelope stays JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import redis.asyncio

from queue_core import Job, JsonSerializer, Queue, SerializationError, Serializer, Worker
from tests.conftest import wait_counts


class TaggedJson:
    """JSON that round-trips datetimes and decimals (an example of a custom codec)."""

    def dumps(self, value: Any) -> bytes:
        def default(obj: object) -> object:
            if isinstance(obj, datetime):
                return {"$dt": obj.isoformat()}
            if isinstance(obj, Decimal):
                return {"$dec": str(obj)}
            raise SerializationError(f"cannot encode {type(obj).__name__}")

        return json.dumps(value, default=default).encode()

    def loads(self, data: bytes) -> Any:
        def hook(obj: dict[str, Any]) -> object:
            if "$dt" in obj:
                return datetime.fromisoformat(obj["$dt"])
            if "$dec" in obj:
                return Decimal(obj["$dec"])
            return obj

        return json.loads(data, object_hook=hook)


def test_protocol() -> None:
    assert isinstance(TaggedJson(), Serializer)
    assert isinstance(JsonSerializer(), Serializer)


async def test_custom_serializer_end_to_end(
    queue_name: str,
    redis_url: str,
    make_worker: Callable[..., Worker],
    raw: redis.asyncio.Redis,
) -> None:
    when = datetime(2026, 11, 27, 9, 30, tzinfo=UTC)
    seen: list[Any] = []

    async def process(job: Job) -> dict[str, Any]:
        seen.append(job.data)
        return {"charged": job.data["amount"] * 2, "at": job.data["at"]}

    async with Queue(queue_name, redis=redis_url, serializer=TaggedJson()) as queue:
        job = await queue.add("charge", {"amount": Decimal("9.99"), "at": when})
        async with make_worker(process, serializer=TaggedJson()):
            await wait_counts(queue, completed=1)
        done = await queue.get_job(job.id)
        envelope = await raw.hget(queue.keys["jobs"], job.id)
    assert seen == [{"amount": Decimal("9.99"), "at": when}]
    assert done is not None
    assert done.return_value == {"charged": Decimal("19.98"), "at": when}
    header, payload = envelope.split(b"\n", 1)
    assert json.loads(header)["name"] == "charge"  # the envelope header is always JSON
    assert b'"$dec"' in payload
