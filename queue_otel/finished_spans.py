"""Spans that no one but queue_otel touches while they run, handed to the span processors
in one step when they are over, when that gives exactly what the SDK's own path gives.

Two spans qualify: the ``job`` span (enqueue to outcome, recorded after the fact) and a
single add's ``send`` span (user code never runs inside it). The SDK's path for them is a
live span: created, started (the processors' ``on_start``), filled, ended (``on_end``
with a ``ReadableSpan`` copy). With the SDK's batch or simple processors ``on_start``
does nothing, so the same ``ReadableSpan`` built directly is the same span for a fraction
of the CPU. A send span is begun as the SDK would begin it (the same sampler call, ids
and flags) and carried meanwhile by a non-recording span with its context, so that its
trace context goes into the job and anything started inside is its child. An attempt's
``process`` span, which the job's code may touch, is recorded here too as long as it is
not touched (``light_spans.py``).

This reads a few of the SDK tracer's private fields (its scope, limits and processors);
where a field is missing or the set-up is anything else (another processor, limits that
would drop or cut an attribute, a disabled tracer, the SDK's own span metrics on), the
SDK's path is taken: slower, never different. ``tests/otel/test_finished_spans.py``
compares both paths field by field.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SynchronousMultiSpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import Status

from queue_otel.propagation import flags_of

__all__ = [
    "RANDOM_TRACE_ID",
    "UNSET_STATUS",
    "Deferred",
    "FinishedSpans",
    "child_context",
    "sdk_span_metrics_on",
]

# Processors whose on_start (and on-ending step) do nothing: a span they never saw start
# is the same span to them.
_PLAIN_PROCESSORS: Final = (BatchSpanProcessor, SimpleSpanProcessor)
# W3C Trace Context level 2's random-trace-id flag: the SDK keeps a parent's on a child.
RANDOM_TRACE_ID: Final = 0x02
# The status of a span that ended without one set, shared like the SDK's own default
# (a Status cannot be changed once made).
UNSET_STATUS: Final = Status()


def child_context(parent: trace.SpanContext, span_id: int, *, sampled: bool) -> trace.SpanContext:
    """The context the SDK gives a span whose parent is the remote ``parent``: the
    parent's trace id and trace state, its random-trace-id flag (W3C level 2), and the
    sampled flag as the sampler decided."""
    flags = (trace.TraceFlags.SAMPLED if sampled else 0) | (parent.trace_flags & RANDOM_TRACE_ID)
    return trace.SpanContext(
        parent.trace_id,
        span_id,
        is_remote=False,
        trace_flags=flags_of(flags),
        trace_state=parent.trace_state,
    )


def sdk_span_metrics_on() -> bool:
    """Whether the SDK's own span metrics (opt-in) are on: they count every span the SDK
    starts, dropped ones too, so with them every span must go through the SDK."""
    return os.environ.get("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "").strip().lower() == "true"


@dataclass(slots=True)
class Deferred:
    """A span begun without the SDK's live span: ``span`` (non-recording) carries its
    context while it runs, so that anything started inside is its child; ``finish``
    records it, if the sampler chose to record it."""

    span: trace.Span
    recording: bool
    name: str
    kind: trace.SpanKind
    parent: trace.SpanContext | None
    attributes: Mapping[str, Any]
    start_time: int


class FinishedSpans:
    """Records finished spans for one SDK tracer, directly when that is equivalent."""

    def __init__(self, tracer: Any) -> None:
        self._tracer = tracer
        self._checked: object = None  # the processor tuple last found plain
        self._sdk_metrics = sdk_span_metrics_on()

    def record(
        self,
        name: str,
        span_context: trace.SpanContext,
        *,
        parent: trace.SpanContext | None,
        kind: trace.SpanKind,
        attributes: Mapping[str, Any],
        links: Sequence[trace.Link],
        status: Status,
        start_time: int,
        end_time: int,
    ) -> ReadableSpan | None:
        """Hand the span to the processors and return it; None (nothing done) when the
        SDK's path must record it instead."""
        tracer = self._tracer
        if not self._plain(attributes, links):
            return None
        span = ReadableSpan(
            name=name,
            context=span_context,
            parent=parent,
            resource=tracer.resource,
            attributes=attributes,
            links=tuple(links),
            kind=kind,
            status=status,
            start_time=start_time,
            end_time=end_time,
            instrumentation_info=tracer.instrumentation_info,
            instrumentation_scope=tracer._instrumentation_scope,
        )
        tracer.span_processor.on_end(span)
        return span

    def new_span_id(self, attributes: Mapping[str, Any], links: Sequence[trace.Link]) -> int | None:
        """A span id from the tracer's generator for a span that ``record`` will take
        (as far as can be told at its start); None when the SDK's path must make it."""
        generator = getattr(self._tracer, "id_generator", None)
        if generator is None or not self._plain(attributes, links):
            return None
        return int(generator.generate_span_id())

    def begin(
        self, name: str, kind: trace.SpanKind, attributes: Mapping[str, Any]
    ) -> Deferred | None:
        """Begin a span under the current context, as the SDK's ``start_span`` would
        (the same sampler call, ids and flags), to be recorded by ``finish`` when it is
        over; None when the SDK's path must make it. Only for a span that nothing but
        queue_otel reads or changes while it runs (a producer's send span)."""
        tracer = self._tracer
        if not self._plain(attributes, ()):
            return None
        generator = getattr(tracer, "id_generator", None)
        sampler = getattr(tracer, "sampler", None)
        if generator is None or sampler is None:
            return None
        parent: trace.SpanContext | None = trace.get_current_span().get_span_context()
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = generator.generate_trace_id()
            random_id = generator.is_trace_id_random()
        else:
            trace_id = parent.trace_id
            random_id = bool(parent.trace_flags & RANDOM_TRACE_ID)
        result = sampler.should_sample(None, trace_id, name, kind, attributes, ())
        flags = trace.TraceFlags.SAMPLED if result.decision.is_sampled() else 0
        span_context = trace.SpanContext(
            trace_id,
            generator.generate_span_id(),
            is_remote=False,
            trace_flags=flags_of(flags | (RANDOM_TRACE_ID if random_id else 0)),
            trace_state=result.trace_state,
        )
        return Deferred(
            span=trace.NonRecordingSpan(span_context),
            recording=result.decision.is_recording(),
            name=name,
            kind=kind,
            parent=parent,
            attributes=result.attributes or {},
            start_time=time.time_ns(),
        )

    def finish(self, deferred: Deferred, attributes: Mapping[str, Any]) -> bool:
        """Record a deferred span that ended now, with more ``attributes``; False (nothing
        done) when the set-up changed meanwhile and the SDK's path must record it."""
        recorded = self.record(
            deferred.name,
            deferred.span.get_span_context(),
            parent=deferred.parent,
            kind=deferred.kind,
            attributes={**deferred.attributes, **attributes},
            links=(),
            status=UNSET_STATUS,
            start_time=deferred.start_time,
            end_time=time.time_ns(),
        )
        return recorded is not None

    def _plain(self, attributes: Mapping[str, Any], links: Sequence[trace.Link]) -> bool:
        tracer = self._tracer
        if self._sdk_metrics:
            return False
        enabled = getattr(tracer, "_is_enabled", None)
        if enabled is None or not enabled():
            return False
        if not hasattr(tracer, "_instrumentation_scope"):
            return False
        processor = getattr(tracer, "span_processor", None)
        if type(processor) is not SynchronousMultiSpanProcessor:
            return False
        processors = getattr(processor, "_span_processors", None)
        if processors is None:
            return False
        if processors is not self._checked:
            if not all(type(p) in _PLAIN_PROCESSORS for p in processors):
                return False
            self._checked = processors
        limits = getattr(tracer, "_span_limits", None)
        return isinstance(limits, SpanLimits) and _within(limits, attributes, links)


def _within(limits: SpanLimits, attributes: Mapping[str, Any], links: Sequence[trace.Link]) -> bool:
    """Whether the SDK would keep every attribute and link whole (nothing dropped or cut)."""
    most_attributes, most_links = limits.max_span_attributes, limits.max_links
    if (most_attributes is not None and len(attributes) > most_attributes) or (
        most_links is not None and len(links) > most_links
    ):
        return False
    span_length = limits.max_span_attribute_length
    if span_length is not None and not _short(attributes.values(), span_length):
        return False
    if links:  # only a flow parent's links to its children carry attributes
        link_length, most_link_attributes = limits.max_attribute_length, limits.max_link_attributes
        for link in links:
            link_attributes = link.attributes or {}
            if most_link_attributes is not None and len(link_attributes) > most_link_attributes:
                return False
            if link_length is not None and not _short(link_attributes.values(), link_length):
                return False
    return True


def _short(values: Any, limit: int) -> bool:
    return all(not isinstance(v, str) or len(v) <= limit for v in values)
