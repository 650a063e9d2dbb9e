"""Jobs whose trace is sampled out, told from their headers' text without decoding them.

With a parent-based ratio sampler (1 %, say) nearly every job arrives in a trace that is
not sampled: its attempt's ``process`` span and its ``job`` span are both dropped,
whatever the job does. That shows in the headers' text: the producer's ``traceparent``
and the job span's ``queue-core-job`` header, both plain W3C values, in the same trace,
neither with the sampled flag. Reading it there spares such a job the decoding of two
span contexts and the building of a third, more than all the rest of its tracing.

The attempt still runs inside a span, the one the SDK makes for a dropped span: a
non-recording span with the job span's trace id and a fresh span id, not sampled. Its
context is built when something first reads it (a child span, a log line), and is the
same then as it would have been at the start.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan

from queue_otel.propagation import (
    JOB_HEADER,
    TRACEPARENT,
    decode_span_context,
    plain_traceparent,
    w3c_fast_path,
)

__all__ = ["DroppedSpan", "sampled_out_header"]

_TRACE_ID = slice(3, 35)  # in a version-00 traceparent: 00-<trace id>-<span id>-<flags>
# The flags' second hex digit holds the sampled bit (0x01): even digits leave it unset.
_LAST_FLAGS_DIGIT = slice(54, 55)
_NOT_SAMPLED = frozenset("02468ace")
_LOCK = threading.Lock()  # taken once per span, when its context is first built


def sampled_out_header(headers: Mapping[str, object]) -> str | None:
    """The job span's header when the job's producer and job span share one trace that
    is not sampled, both read as plain W3C values would be; None when they must be decoded
    (anything else: no such headers, another propagator, trace state, a sampled flag, a
    job span in a trace of its own)."""
    job_value = headers.get(JOB_HEADER)
    parent_value = headers.get(TRACEPARENT)
    if not (
        isinstance(job_value, str)
        and isinstance(parent_value, str)
        and job_value[_TRACE_ID] == parent_value[_TRACE_ID]
        # A sampled trace is told by one character of each, before any full check.
        and job_value[_LAST_FLAGS_DIGIT] in _NOT_SAMPLED
        and parent_value[_LAST_FLAGS_DIGIT] in _NOT_SAMPLED
        and plain_traceparent(job_value)
        and plain_traceparent(parent_value)
        and w3c_fast_path(headers)
    ):
        return None
    return job_value


class DroppedSpan(NonRecordingSpan):
    """The span the SDK makes when its sampler drops a child of the job span: its context
    (``build`` of the span context decoded from ``header``) is built on first read."""

    def __init__(
        self, header: str, build: Callable[[trace.SpanContext], trace.SpanContext]
    ) -> None:
        # NonRecordingSpan's own __init__ would need the context now.
        self._header = header
        self._build = build
        self._built: trace.SpanContext | None = None

    def get_span_context(self) -> trace.SpanContext:
        built = self._built
        if built is None:
            with _LOCK:  # two threads reading it first must see one span id
                if self._built is None:
                    parent = decode_span_context(self._header)  # valid: sampled_out_header
                    self._built = (
                        trace.INVALID_SPAN_CONTEXT if parent is None else self._build(parent)
                    )
                built = self._built
        return built

    def __repr__(self) -> str:
        return f"DroppedSpan({self.get_span_context()!r})"
