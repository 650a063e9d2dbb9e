"""Trace context in a job's ``headers``: written at enqueue, read by the worker.

The active context goes in with the globally configured propagator (W3C ``traceparent``
and ``tracestate`` by default, B3 or others when configured), so any consumer can read
it. Baggage is left out unless enabled. The worker treats headers as untrusted input:
values that are not strings, too long, or too many are dropped before the propagator
sees them, and a malformed context simply means "no parent".

With the W3C trace context propagator (the default, with or without W3C baggage), the
common case, a ``traceparent`` without ``tracestate`` or baggage, is read and written here
directly: the generic path costs several microseconds per job. Whether the global
propagator is W3C is checked by behaviour (it must write and read a probe exactly as
this module does), once per propagator object; anything else takes the generic path.

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

__all__ = [
    "JOB_HEADER",
    "decode_span_context",
    "encode_ids",
    "encode_span_context",
    "extract",
    "extract_span_context",
    "flags_of",
    "inject",
    "inject_span",
    "plain_traceparent",
    "w3c_fast_path",
]

JOB_HEADER: Final = "queue-core-job"
MAX_HEADERS: Final = 32
MAX_VALUE_CHARS: Final = 8192  # the W3C baggage limit; traceparent is 55 characters
_SPAN_CONTEXT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE_ID: Final = "0" * 32
_ZERO_SPAN_ID: Final = "0" * 16
TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"

_log = get_logger("queue_otel")

# Every trace-flags value, made once: a span's flags are then shared, not a new object per
# span. TraceFlags is an int subclass the garbage collector tracks, and finished spans
# wait in the batch processor long enough to be promoted, so each one made per span
# adds to the collections a traced worker runs (bench: 130 young collections per 5,000
# jobs, where the bare worker runs 5).
_FLAGS: Final = tuple(trace.TraceFlags(value) for value in range(256))


def flags_of(value: int) -> trace.TraceFlags:
    """The shared ``TraceFlags`` of ``value`` (0 to 255)."""
    return _FLAGS[value]


def inject(headers: dict[str, str], context: Context, *, with_baggage: bool) -> None:
    if not with_baggage and _written_directly(
        headers, trace.get_current_span(context).get_span_context()
    ):
        return
    if not with_baggage:
        context = baggage.clear(context)
    propagate.inject(headers, context=context)


def inject_span(headers: dict[str, str], span: trace.Span, *, with_baggage: bool) -> None:
    """``inject`` of the current context with ``span`` in it, its common case written
    straight from the span's context (a new context would be built and read back)."""
    if not with_baggage and _written_directly(headers, span.get_span_context()):
        return
    inject(headers, trace.set_span_in_context(span), with_baggage=with_baggage)


def _written_directly(headers: dict[str, str], span_context: trace.SpanContext) -> bool:
    """Write the common case (a W3C propagator, no trace state; baggage left out by the
    caller) straight from the span context; False when the generic path must write it."""
    if span_context.trace_state or not _w3c_propagator():
        return False
    if span_context.is_valid:
        headers[TRACEPARENT] = _traceparent(span_context)
    return True


def extract(headers: Mapping[str, object], *, with_baggage: bool) -> Context:
    """The producer's context from untrusted headers; an empty context when unusable."""
    if not with_baggage:
        span_context = _fast_span_context(headers)
        if span_context is not None:
            if not span_context.is_valid:
                return Context()
            return trace.set_span_in_context(trace.NonRecordingSpan(span_context), Context())
    return _extract(headers, with_baggage=with_baggage)


def extract_span_context(headers: Mapping[str, object]) -> trace.SpanContext:
    """Only the producer's span context (invalid when there is none or it is unusable)."""
    span_context = _fast_span_context(headers)
    if span_context is None:
        context = _extract(headers, with_baggage=False)
        span_context = trace.get_current_span(context).get_span_context()
    return span_context


def _fast_span_context(headers: Mapping[str, object]) -> trace.SpanContext | None:
    """The common case read directly: a lone W3C ``traceparent`` (the invalid context
    when it is absent); None when the generic path must decide."""
    if not w3c_fast_path(headers):
        return None
    value = headers.get(TRACEPARENT)
    if value is None:
        return trace.INVALID_SPAN_CONTEXT
    return _parse_traceparent(value) if isinstance(value, str) else None


def w3c_fast_path(headers: Mapping[str, object]) -> bool:
    """Whether the producer's context in ``headers`` is its ``traceparent`` alone, read as
    this module reads it: no trace state, not too many headers, a W3C propagator."""
    return TRACESTATE not in headers and len(headers) <= MAX_HEADERS and _w3c_propagator()


def plain_traceparent(value: str) -> bool:
    """Whether ``value`` is a traceparent that this module reads (version 00, ids not
    zero), without building its span context."""
    return (
        _SPAN_CONTEXT.match(value) is not None
        and value[3:35] != _ZERO_TRACE_ID
        and value[36:52] != _ZERO_SPAN_ID
    )


def _extract(headers: Mapping[str, object], *, with_baggage: bool) -> Context:
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
    return _traceparent(span_context)


def encode_ids(trace_id: int, span_id: int, flags: int) -> str:
    """``encode_span_context`` of the context with these ids and flags, not built."""
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


def decode_span_context(value: object) -> trace.SpanContext | None:
    """A span context from queue_core's own header, which keeps only the sampled flag."""
    return _parse_traceparent(value, trace.TraceFlags.SAMPLED) if isinstance(value, str) else None


def _traceparent(span_context: trace.SpanContext) -> str:
    return encode_ids(span_context.trace_id, span_context.span_id, span_context.trace_flags)


def _parse_traceparent(value: str, flags_mask: int = 0xFF) -> trace.SpanContext | None:
    """A version-00 ``traceparent`` exactly as the W3C propagator would read it (flags
    kept whole unless masked); None for anything else (then the generic path decides)."""
    match = _SPAN_CONTEXT.match(value)
    if match is None:
        return None
    trace_hex, span_hex, flags_hex = match.groups()
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    if trace_id == 0 or span_id == 0:
        return None
    flags = _FLAGS[int(flags_hex, 16) & flags_mask]
    return trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)


_PROBE: Final = trace.SpanContext(
    0x0AF7651916CD43DD8448EB211C80319C,
    0xB7AD6B7169203331,
    is_remote=True,
    trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
)
# The last propagator checked, and the verdict (one entry: set_global_textmap is rare).
_w3c_checked: dict[str, tuple[object, bool]] = {}


def _w3c_propagator() -> bool:
    """Whether the global propagator writes and reads a ``traceparent`` exactly as this
    module does, and nothing else for a context without trace state or baggage."""
    textmap = propagate.get_global_textmap()
    checked = _w3c_checked.get("last")
    if checked is not None and checked[0] is textmap:
        return checked[1]
    expected = {TRACEPARENT: _traceparent(_PROBE)}
    try:
        written: dict[str, str] = {}
        textmap.inject(
            written, context=trace.set_span_in_context(trace.NonRecordingSpan(_PROBE), Context())
        )
        read = trace.get_current_span(textmap.extract(expected, context=Context()))
        same = written == expected and read.get_span_context() == _PROBE
        # A propagator that reads more than the traceparent would see what we skip.
        same = same and "traceparent" in textmap.fields and textmap.fields <= _W3C_FIELDS
    except Exception:
        same = False
    _w3c_checked["last"] = (textmap, same)
    return same


_W3C_FIELDS: Final = frozenset({TRACEPARENT, TRACESTATE, "baggage"})
