"""The templates and the filters they use. Autoescaping is on for every template: job
data, names, errors and logs are anyone's text and are only ever shown as text."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request

__all__ = ["FOLD_CHARS", "base_of", "digest", "environment", "pretty"]

FOLD_CHARS = 2000  # a value longer than this is folded: its start shown, the rest on demand
TEMPLATES = Path(__file__).parent / "templates"


def pretty(value: Any) -> str:
    """A value as indented JSON (text that JSON cannot hold as its ``repr``)."""
    if isinstance(value, bytes):
        return repr(value)
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=repr)
    except (TypeError, ValueError):
        return repr(value)


def when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def seconds(value: float | None) -> str:
    """A duration for people: 850 ms, 12.3 s, 4m 05s, 3h 20m, 2d 4h."""
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s"
    minutes, secs = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def between(start: datetime | None, end: datetime | None) -> str:
    if start is None or end is None:
        return "—"
    return seconds(max(0.0, (end - start).total_seconds()))


def age(value: datetime | None) -> str:
    if value is None:
        return "—"
    return seconds(max(0.0, time.time() - value.timestamp())) + " ago"


def spark(values: list[int], width: int = 120, height: int = 24) -> str:
    """The points of an SVG polyline for ``values`` (scaled to the largest)."""
    if not values:
        return ""
    top = max(values) or 1
    step = width / max(1, len(values) - 1)
    return " ".join(
        f"{i * step:.1f},{height - 1 - (v / top) * (height - 2):.1f}" for i, v in enumerate(values)
    )


def percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f}%"


def base_of(request: Request) -> str:
    """The mount point's path ("" when served at the root): every link starts with it."""
    return str(request.scope.get("root_path", "")).rstrip("/")


def digest(html: str) -> str:
    """A short fingerprint of a rendered fragment."""
    return hashlib.blake2b(html.encode(), digest_size=8).hexdigest()


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        pretty=pretty,
        when=when,
        seconds=seconds,
        age=age,
        spark=spark,
        percent=percent,
        dict=dict,
    )
    env.globals.update(between=between, FOLD_CHARS=FOLD_CHARS)
    return env
