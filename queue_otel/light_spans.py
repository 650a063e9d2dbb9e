"""A live span that stays out of the SDK while only queue_otel uses it.

An attempt's ``process`` span is the current span while the job's code runs, so unlike
the ``job`` and ``send`` spans (``finished_spans.py``) it may be read or changed by code
that queue_otel does not know. Yet almost always the job's code only starts child spans
(which need its context, nothing more) or writes logs (the same), and the SDK's live span
then costs several times what the span is worth to anyone: cleaning every attribute into
a locked mapping, a lock, the processors' start and end steps, a copy at the end
(measured: 25-35 us of a no-op job's 290 us of worker CPU, on a slow 2-core machine).

``LightSpan`` carries the span's context and what queue_otel knows of it (name, parent,
kind, attributes, links, start time). Ended untouched, it is handed to the processors in
one step, as a ``FinishedSpans.record`` (the same span the SDK's path gives, with the
plain processors that ``record`` requires). The first time anything else touches it
(sets an attribute, adds an event, records an exception, reads a field a ``ReadableSpan``
has), it makes its SDK twin, a live span with the same ids, parent, start time,
attributes and links (``make_twin``, supplied by the tracing hook), and forwards every
call to it from then on: from that moment it is the SDK's span, exactly.

Only a span whose sampler's decision is known to be "record" (``Tracers.by_parent``) is
made light, so the twin, which asks the sampler again, is recorded too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Link, Status, StatusCode
from opentelemetry.util import types

from queue_otel.finished_spans import UNSET_STATUS, FinishedSpans, child_context

__all__ = ["LightSpan", "MakeTwin", "start_light_span"]

_logger = logging.getLogger(__name__)


class MakeTwin(Protocol):
    """Makes the SDK's live span named ``name``, with the ids of ``ids``."""

    def __call__(
        self,
        name: str,
        ids: trace.SpanContext,
        *,
        parent: trace.SpanContext | None,
        kind: trace.SpanKind,
        attributes: Mapping[str, Any],
        links: Sequence[Link],
        start_time: int | None,
    ) -> trace.Span: ...


# Taken only where a twin may be made or the span ends: a job's threads may touch the
# span while the worker ends it.
_LOCK = threading.Lock()


class LightSpan(trace.Span):
    """A recorded span kept out of the SDK until something beside queue_otel touches it."""

    __slots__ = (
        "_attributes",
        "_context",
        "_kind",
        "_links",
        "_make_twin",
        "_name",
        "_parent",
        "_recorded",
        "_recorder",
        "_start_time",
        "_twin",
    )

    def __init__(
        self,
        recorder: FinishedSpans,
        make_twin: MakeTwin,
        name: str,
        *,
        context: trace.SpanContext,
        parent: trace.SpanContext,
        kind: trace.SpanKind,
        attributes: dict[str, Any],
        links: Sequence[Link],
    ) -> None:
        self._recorder = recorder
        self._make_twin = make_twin
        self._name = name
        self._context = context
        self._parent = parent
        self._kind = kind
        self._attributes = attributes
        self._links = links
        self._start_time = time.time_ns()
        self._twin: trace.Span | None = None
        self._recorded: ReadableSpan | None = None  # set when ended without a twin

    # ------------------------------------------------------------ queue_otel's own use

    def add_known_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Attributes queue_otel sets (strings and numbers: nothing for the SDK to clean),
        kept without making a twin."""
        with _LOCK:  # not while a job's thread makes the twin from these attributes
            twin = self._twin
            if twin is None:
                if self._recorded is None:
                    self._attributes.update(attributes)
                return
        twin.set_attributes(attributes)

    @property
    def has_twin(self) -> bool:
        return self._twin is not None

    # ------------------------------------------------------------ the Span API

    def get_span_context(self) -> trace.SpanContext:
        return self._context

    def is_recording(self) -> bool:
        twin = self._twin
        if twin is not None:
            return twin.is_recording()
        return self._recorded is None

    def end(self, end_time: int | None = None) -> None:
        with _LOCK:
            twin = self._twin
            if twin is None:
                if self._recorded is not None:
                    _logger.warning("Calling end() on an ended span.")
                    return
                self._recorded = self._recorder.record(
                    self._name,
                    self._context,
                    parent=self._parent,
                    kind=self._kind,
                    attributes=self._attributes,
                    links=self._links,
                    status=UNSET_STATUS,
                    start_time=self._start_time,
                    end_time=end_time if end_time is not None else time.time_ns(),
                )
                if self._recorded is not None:
                    return
                # The set-up changed while the span ran: the SDK's path records it.
                twin = self._twin = self._new_twin()
        twin.end(end_time)

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        self._forward("set_attributes", attributes)

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        self._forward("set_attribute", key, value)

    def add_event(
        self,
        name: str,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
    ) -> None:
        self._forward("add_event", name, attributes, timestamp)

    def add_link(self, context: trace.SpanContext, attributes: types.Attributes = None) -> None:
        self._forward("add_link", context, attributes)

    def update_name(self, name: str) -> None:
        self._forward("update_name", name)

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        self._forward("set_status", status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        self._forward("record_exception", exception, attributes, timestamp, escaped)

    def __getattr__(self, name: str) -> Any:
        """Whatever else an SDK span has (``events``, ``status``, ``resource``,
        ``to_json``...): the twin's, or once ended untouched, the recorded span's."""
        if name.startswith("_"):
            raise AttributeError(name)
        if self._twin is None and self._recorded is None:
            self._get_twin()
        return getattr(self._twin or self._recorded, name)

    def __repr__(self) -> str:
        return f'LightSpan(name="{self._name}", context={self._context})'

    def _forward(self, method: str, *args: Any) -> None:
        """Call the twin's ``method`` (making the twin first); nothing once ended."""
        twin = self._get_twin()
        if twin is not None:
            getattr(twin, method)(*args)

    def _get_twin(self) -> trace.Span | None:
        """The SDK twin, made now if need be; None once the span ended without one (the
        SDK ignores changes to an ended span alike)."""
        twin = self._twin
        if twin is not None:
            return twin
        with _LOCK:
            if self._twin is None:
                if self._recorded is not None:
                    _logger.warning("Changing or reading a span that has ended.")
                    return None
                self._twin = self._new_twin()
            return self._twin

    def _new_twin(self) -> trace.Span:
        return self._make_twin(
            self._name,
            self._context,
            parent=self._parent,
            kind=self._kind,
            attributes=self._attributes,
            links=self._links,
            start_time=self._start_time,
        )


def start_light_span(
    recorder: FinishedSpans,
    make_twin: MakeTwin,
    name: str,
    *,
    parent: trace.SpanContext,
    kind: trace.SpanKind,
    attributes: dict[str, Any],
    links: Sequence[Link],
) -> LightSpan | None:
    """A light span, the child of the remote ``parent``, with the context the SDK gives a
    child its sampler records (the parent's trace id, trace state and random-trace-id
    flag, sampled); None when the SDK's path must make it."""
    span_id = recorder.new_span_id(attributes, links)
    if span_id is None:
        return None
    return LightSpan(
        recorder,
        make_twin,
        name,
        context=child_context(parent, span_id, sampled=True),
        parent=parent,
        kind=kind,
        attributes=attributes,
        links=links,
    )
