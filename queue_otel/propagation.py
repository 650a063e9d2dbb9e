"""Trace context in a job's ``headers``: written at enqueue, read by the worker.

The active context goes in with the globally configured propagator (W3C ``traceparent``
and ``tracestate`` by default, B3 or others when configured), so any consumer can read
it. Baggage is left out unless enabled. The worker treats headers as untrusted input:
values that are not strings, too long, or too many are dropped before the propagator
sees them, and a malformed context simply means "no parent".

One header is queue_core's own: ``queue-core-job`` holds the span context of the job's
enqueue-to-completion span, chosen at enqueue so that every attempt can be its child.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from opentelemetry import baggage, propagate, trace
from opentelemetry.context import Context

from queue_core import get_logger

__all__ = ["JOB_HEADER", "decode_span_context", "encode_span_context", "extract", "inject"]

JOB_HEADER: Final = "queue-core-job"
MAX_HEADERS: Final = 32
MAX_VALUE_CHARS: Final = 8192  # the W3C baggage limit; traceparent is 55 characters
_SPAN_CONTEXT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

_log = get_logger("queue_otel")


def inject(headers: dict[str, str], context: Context, *, with_baggage: bool) -> None:
    if not with_baggage:
        context = baggage.clear(context)
    propagate.inject(headers, context=context)


def extract(headers: Mapping[str, object], *, with_baggage: bool) -> Context:
    """The producer's context from untrusted headers; an empty context when unusable."""
    carrier: dict[str, str] = {}
    for key, value in list(headers.items())[:MAX_HEADERS]:
        if isinstance(key, str) and isinstance(value, str) and len(value) <= MAX_VALUE_CHARS:
            carrier[key] = value
    try:
        context = propagate.extract(carrier, context=Context())
    except Exception:  # a propagator must never break a job
        _log.debug("trace_context_unreadable", exc_info=True)
        return Context()
    return context if with_baggage else baggage.clear(context)


def encode_span_context(span_context: trace.SpanContext) -> str:
    return (
        f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-"
        f"{int(span_context.trace_flags):02x}"
    )


def decode_span_context(value: object) -> trace.SpanContext | None:
    if not isinstance(value, str):
        return None
    match = _SPAN_CONTEXT.match(value)
    if match is None:
        return None
    trace_id, span_id = int(match.group(1), 16), int(match.group(2), 16)
    if trace_id == 0 or span_id == 0:
        return None
    flags = trace.TraceFlags(int(match.group(3), 16) & trace.TraceFlags.SAMPLED)
    return trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
