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

import json
from dataclasses import dataclass
from typing import Any

from queue_core.errors import SerializationError

__all__ = ["ENVELOPE_VERSION", "Envelope", "decode_envelope", "decode_record", "encode_envelope"]

ENVELOPE_VERSION = 1
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# json.loads(bytes) sniffs the encoding on every call; ours is always UTF-8.
_decode = json.JSONDecoder().decode


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
    # json never writes a raw newline outside indentation, so the first b"\n" ends the header.
    return _encoder.encode(header).encode() + b"\n" + payload


def decode_envelope(raw: bytes) -> Envelope:
    line, newline, payload = raw.partition(b"\n")
    try:
        if not newline:
            raise ValueError("no header line")
        header = _decode(line.decode())
        version = header.get("v")
        if version != ENVELOPE_VERSION:
            raise ValueError(f"unsupported envelope version {version!r}")
        headers = header.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError("headers must map strings to strings")
        return Envelope(header["name"], header["opts"], headers, payload)
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise SerializationError(f"malformed job envelope: {exc}") from exc


def decode_record(raw: bytes) -> dict[str, Any]:
    record = _decode(raw.decode())
    if not isinstance(record, dict):
        raise SerializationError("malformed job record")
    return record
