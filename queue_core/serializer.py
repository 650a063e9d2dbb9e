"""Payload serializers. JSON by default; never pickle by default.

A serializer turns job data and return values into bytes and back. Anyone who can write
to Redis can write a payload, so the default must not execute code when it decodes.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol, runtime_checkable

import orjson

from queue_core.errors import SerializationError

__all__ = ["JsonSerializer", "Serializer"]

_LONG_DIGITS = re.compile(rb"\d{19}")


@runtime_checkable
class Serializer(Protocol):
    """Encodes job data and return values. Raise ``SerializationError`` on bad input."""

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class JsonSerializer:
    """Strict JSON: no NaN or Infinity, UTF-8, compact separators."""

    __slots__ = ("_decoder", "_encoder")

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        self._decoder = json.JSONDecoder()

    def dumps(self, value: Any) -> bytes:
        if value is None:  # what most processors return: skips building an encoder
            return b"null"
        try:
            return self._encoder.encode(value).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"value is not JSON-serializable: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        # orjson first (a few times faster); whatever it refuses (NaN, deep nesting,
        # invalid UTF-8) goes to the json module, and so does any run of 19 digits or more
        # (orjson reads an integer past 64 bits as a float), so that what is accepted, and
        # the values it gives, are the json module's.
        if not _LONG_DIGITS.search(data):
            try:
                return orjson.loads(data)
            except orjson.JSONDecodeError:
                pass
        try:
            return self._decoder.decode(data.decode())
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"payload is not valid JSON: {exc}") from exc
