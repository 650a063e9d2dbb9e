"""A custom serializer replaces JSON for data and results; the envelope stays JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

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


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (NaN equal to NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # unbounded: integers past 64 bits too
    | st.floats()  # NaN and infinities too: the json module reads them
    | st.text(),  # lone surrogates too
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(value=_JSON_VALUES, ascii_only=st.booleans())
def test_loads_reads_what_the_json_module_reads(value: Any, ascii_only: bool) -> None:
    """JsonSerializer reads with orjson where it can; whatever the text, the value it
    gives is the json module's, of the same types."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    data = text.encode(errors="surrogatepass")
    try:
        expected = json.loads(data.decode())
    except UnicodeDecodeError:
        with pytest.raises(SerializationError):
            JsonSerializer().loads(data)
        return
    assert _same(JsonSerializer().loads(data), expected)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"123456789012345678901234567890", 123456789012345678901234567890),  # orjson: float
        (b"[18446744073709551616]", [18446744073709551616]),
        (b'{"a":NaN}', {"a": float("nan")}),
        (b"[-Infinity]", [float("-inf")]),
        (b'"\\ud800"', "\ud800"),
    ],
)
def test_loads_where_orjson_differs(data: bytes, expected: Any) -> None:
    assert _same(JsonSerializer().loads(data), expected)


@pytest.mark.parametrize(
    "data",
    [b"[1,]", b"\xff", b"[" * 100_000 + b"]" * 100_000, b"", b'{"a":1'],
    ids=["trailing comma", "invalid UTF-8", "deep nesting", "empty", "unterminated"],
)
def test_loads_refuses_bad_json_with_a_typed_error(data: bytes) -> None:
    with pytest.raises(SerializationError):
        JsonSerializer().loads(data)


def test_dumps_none_as_the_encoder_would() -> None:
    serializer = JsonSerializer()
    assert serializer.dumps(None) == b"null"
    assert serializer.dumps([None]) == b"[null]"
    with pytest.raises(SerializationError):
        serializer.dumps(float("nan"))
