"""A worker module that fails on import (the worker command's tests)."""

from __future__ import annotations


def settings() -> dict[str, str]:
    return {"a": "b"}["missing"]  # the line the traceback must show


SETTINGS = settings()
