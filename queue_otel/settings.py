"""Options of the instrumentation: from ``instrument()`` keywords, else environment
variables (``opentelemetry-instrument`` calls ``instrument()`` without arguments), else
defaults. A bad keyword raises; a bad environment value is logged and ignored, so a typo
in a deployment never stops the application from starting."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from queue_core import get_logger

__all__ = ["ENV", "Settings", "TraceMode"]

TraceMode = Literal["parent", "link"]

ENV: Final = {
    "trace_mode": "OTEL_PYTHON_QUEUE_CORE_TRACE_MODE",
    "propagate_baggage": "OTEL_PYTHON_QUEUE_CORE_PROPAGATE_BAGGAGE",
    "new_trace_after": "OTEL_PYTHON_QUEUE_CORE_NEW_TRACE_AFTER",
    "export_logs": "OTEL_PYTHON_QUEUE_CORE_EXPORT_LOGS",
    "observe_queues": "OTEL_PYTHON_QUEUE_CORE_OBSERVE_QUEUES",
    "observe_redis_url": "OTEL_PYTHON_QUEUE_CORE_OBSERVE_REDIS_URL",
    "observe_prefix": "OTEL_PYTHON_QUEUE_CORE_OBSERVE_PREFIX",
    "suppress_internal": "OTEL_PYTHON_QUEUE_CORE_SUPPRESS_INTERNAL",
}

_log = get_logger("queue_otel")


@dataclass(frozen=True, slots=True)
class Settings:
    """``trace_mode``: ``parent`` (default) makes each job part of the trace that enqueued
    it, one trace from the HTTP request to the job's outcome; ``link`` starts a new trace
    per job, linked to the producer. Either way the producer context is also a span link.
    ``new_trace_after``: a job delayed longer than this (seconds), or an attempt that
    starts longer than this after the enqueue, starts a new trace with links instead of
    growing the producer's trace without end. ``propagate_baggage``: also carry W3C
    baggage into jobs (off: baggage often holds data that should not reach workers).
    ``observe_queues``: report depth and oldest-job age for these queues from this process
    (do it in one process, not in every worker), on ``observe_redis_url`` under the key
    prefix ``observe_prefix`` (``qc``, the queues' default). ``suppress_internal``: keep
    the worker's own Redis calls (idle waiting, lock renewal) out of traces made by a
    Redis instrumentation."""

    trace_mode: TraceMode = "parent"
    propagate_baggage: bool = False
    new_trace_after: float = 900.0
    export_logs: bool = True
    observe_queues: tuple[str, ...] = ()
    observe_redis_url: str | None = None
    observe_prefix: str = "qc"
    suppress_internal: bool = True

    @classmethod
    def load(cls, kwargs: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, variable in ENV.items():
            if name in kwargs and kwargs[name] is not None:
                values[name] = _check(name, kwargs[name])
            elif env.get(variable, "").strip():
                raw = env[variable].strip()
                try:
                    values[name] = _check(name, _parse(name, raw))
                except ValueError as exc:
                    _log.warning(
                        "invalid_setting_ignored", variable=variable, value=raw, error=str(exc)
                    )
        return cls(**values)


def _parse(name: str, raw: str) -> Any:
    if name in ("propagate_baggage", "export_logs", "suppress_internal"):
        lowered = raw.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if name == "new_trace_after":
        return float(raw)
    if name == "observe_queues":
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw


def _check(name: str, value: Any) -> Any:
    if name == "trace_mode" and value not in ("parent", "link"):
        raise ValueError(f"trace_mode must be 'parent' or 'link', not {value!r}")
    if name in ("propagate_baggage", "export_logs", "suppress_internal") and not isinstance(
        value, bool
    ):
        raise ValueError(f"{name} must be a bool")
    if name == "new_trace_after":
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ValueError("new_trace_after must be a positive number of seconds")
        return float(value)
    if name == "observe_queues":
        if isinstance(value, str):
            raise ValueError("observe_queues must be a list of queue names")
        return tuple(value)
    return value
