"""The stored form of a job: an envelope written once at enqueue, and a record of its runs.

Envelope (``jobs`` hash): one JSON header line, a newline, then the serialized data::

    {"v":1,"name":"welcome","opts":{...},"headers":{"traceparent":"00-..."}}\\n<data bytes>

The header keeps ``headers`` (trace context, metadata written by hooks) apart from the
user's data, which the serializer alone encodes. Lua never parses the envelope.

Record (``state`` hash): JSON written by the Lua scripts, small scalars only: ``ts``
(enqueued, ms), ``pon`` / ``fon`` (latest start and finish, ms), ``ats`` / ``atm`` /
``stc`` (attempts started, attempts made, stalls), ``tok`` (lock token), ``p`` (priority),
and retention limits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from queue_core.errors import SerializationError

__all__ = ["ENVELOPE_VERSION", "Envelope", "decode_envelope", "decode_record", "encode_envelope"]

ENVELOPE_VERSION = 1


@dataclass(frozen=True, slots=True)
class Envelope:
    name: str
    options: dict[str, Any]
    headers: dict[str, str]
    payload: bytes


def encode_envelope(
    name: str, options: dict[str, Any], headers: dict[str, str], payload: bytes
) -> bytes:
    header: dict[str, Any] = {"v": ENVELOPE_VERSION, "name": name, "opts": options}
    if headers:
        header["headers"] = headers
    # Header and record are read for every job a worker runs: orjson parses them about
    # four times as fast as the json module (measured: 0.5 us against 2 us). It escapes
    # newlines inside strings and writes no other, so the first b"\n" ends the header.
    try:
        return orjson.dumps(header) + b"\n" + payload
    except TypeError as exc:  # options and headers are built by queue_core: a bug if so
        raise SerializationError(f"job header is not JSON-serializable: {exc}") from exc


def decode_envelope(raw: bytes) -> Envelope:
    line, newline, payload = raw.partition(b"\n")
    try:
        if not newline:
            raise ValueError("no header line")
        header = orjson.loads(line)
        version = header.get("v")
        if version != ENVELOPE_VERSION:
            raise ValueError(f"unsupported envelope version {version!r}")
        headers = header.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError("headers must map strings to strings")
        return Envelope(header["name"], header["opts"], headers, payload)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SerializationError(f"malformed job envelope: {exc}") from exc


def decode_record(raw: bytes) -> dict[str, Any]:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SerializationError(f"malformed job record: {exc}") from exc
    if not isinstance(record, dict):
        raise SerializationError("malformed job record")
    return record
