"""The short cuts on the job's path give what the SDK's generic paths give.

queue_otel reads and writes a lone W3C ``traceparent`` itself, and builds a dropped span
itself when the SDK's sampler is known to drop it (by the parent alone); each result is
compared here with what the SDK's own propagator, tracer and sampler make.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import CarrierT, Getter, Setter, TextMapPropagator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from queue_otel.propagation import extract, extract_span_context, inject
from queue_otel.tracing import Tracers

W3C = TraceContextTextMapPropagator()


def sdk_read(headers: dict[str, Any]) -> trace.SpanContext:
    carrier = {k: v for k, v in headers.items() if isinstance(v, str)}
    return trace.get_current_span(W3C.extract(carrier, context=Context())).get_span_context()


HEADERS = [
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03"},
    {"traceparent": "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01"},
    {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"},
    {"traceparent": "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra"},
    {"traceparent": "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    {"traceparent": " 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01 "},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x"},
    {"traceparent": "garbage"},
    {"traceparent": 42},
    {},
    {
        "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "tracestate": "vendor=abc,other=1",
    },
]


@pytest.mark.parametrize("headers", HEADERS)
def test_reading_a_traceparent_matches_the_w3c_propagator(headers: dict[str, Any]) -> None:
    expected = sdk_read(headers)
    assert extract_span_context(headers) == expected
    assert trace.get_current_span(extract(headers, with_baggage=False)).get_span_context() == (
        expected
    )


@given(
    trace_id=st.integers(0, 2**128 - 1),
    span_id=st.integers(0, 2**64 - 1),
    flags=st.integers(0, 255),
)
def test_any_traceparent_reads_as_the_w3c_propagator_reads_it(
    trace_id: int, span_id: int, flags: int
) -> None:
    headers = {"traceparent": f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"}
    assert extract_span_context(headers) == sdk_read(headers)


@pytest.mark.parametrize(
    "span_context",
    [
        trace.SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=trace.TraceFlags(1)),
        trace.SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=trace.TraceFlags(0)),
        trace.SpanContext(
            0xABC,
            0xDEF,
            is_remote=False,
            trace_flags=trace.TraceFlags(1),
            trace_state=trace.TraceState([("vendor", "abc")]),
        ),
        trace.INVALID_SPAN_CONTEXT,
    ],
)
def test_writing_matches_the_global_propagator(span_context: trace.SpanContext) -> None:
    ctx = trace.set_span_in_context(trace.NonRecordingSpan(span_context), Context())
    ours: dict[str, str] = {}
    inject(ours, ctx, with_baggage=False)
    theirs: dict[str, str] = {}
    propagate.inject(theirs, context=ctx)
    assert ours == theirs


class VendorPropagator(TextMapPropagator):
    """A propagator of another format: the short cuts must step aside for it."""

    def inject(
        self, carrier: CarrierT, context: Context | None = None, setter: Setter[CarrierT] = ...
    ) -> None:  # type: ignore[assignment]
        span_context = trace.get_current_span(context).get_span_context()
        if span_context.is_valid:
            carrier["x-vendor-trace"] = f"{span_context.trace_id:x}:{span_context.span_id:x}"  # type: ignore[index]

    def extract(
        self, carrier: CarrierT, context: Context | None = None, getter: Getter[CarrierT] = ...
    ) -> Context:  # type: ignore[assignment]
        value = carrier.get("x-vendor-trace") if isinstance(carrier, dict) else None
        if not value:
            return context or Context()
        trace_id, span_id = (int(part, 16) for part in value.split(":"))
        remote = trace.SpanContext(trace_id, span_id, True, trace.TraceFlags(1))
        return trace.set_span_in_context(trace.NonRecordingSpan(remote), context or Context())

    @property
    def fields(self) -> set[str]:
        return {"x-vendor-trace"}


@pytest.fixture
def vendor_propagator() -> Iterator[None]:
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(CompositePropagator([VendorPropagator()]))
    try:
        yield
    finally:
        propagate.set_global_textmap(previous)


@pytest.mark.usefixtures("vendor_propagator")
def test_another_propagator_takes_the_generic_path() -> None:
    span_context = trace.SpanContext(0xABC, 0xDEF, False, trace.TraceFlags(1))
    headers: dict[str, str] = {}
    inject(
        headers, trace.set_span_in_context(trace.NonRecordingSpan(span_context)), with_baggage=False
    )
    assert headers == {"x-vendor-trace": "abc:def"}
    read = extract_span_context(
        {**headers, "traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}
    )
    assert (read.trace_id, read.span_id) == (0xABC, 0xDEF)  # not the traceparent


class AttributeSampler(Sampler):
    """Decides by an attribute: must be asked for every span."""

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE)

    def get_description(self) -> str:
        return "AlwaysOnSampler"  # claims a known description: its type still rules it out


class RatioByParent(ParentBased):
    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.DROP)


@pytest.mark.parametrize(
    ("sampler", "expected"),
    [
        (ALWAYS_ON, (True, True)),
        (ALWAYS_OFF, (False, False)),
        (ParentBased(ALWAYS_ON), (True, False)),
        (ParentBased(TraceIdRatioBased(0.01)), (True, False)),
        (ParentBasedTraceIdRatio(0.5), (True, False)),
        (ParentBased(ALWAYS_OFF, remote_parent_not_sampled=ALWAYS_ON), (True, True)),
        (ParentBased(ALWAYS_ON, remote_parent_sampled=ALWAYS_OFF), (False, False)),
        (ParentBased(ALWAYS_ON, remote_parent_sampled=AttributeSampler()), (None, False)),
        (AttributeSampler(), (None, None)),
        (RatioByParent(ALWAYS_ON), (None, None)),
    ],
)
def test_decisions_known_by_the_parent_are_the_samplers_own(
    sampler: Sampler, expected: tuple[bool | None, bool | None]
) -> None:
    tracer = TracerProvider(sampler=sampler).get_tracer("test")
    tracers = Tracers(None, "0")
    known = (tracers.by_parent(tracer, True), tracers.by_parent(tracer, False))
    assert known == expected
    for parent_sampled, decision in zip((True, False), known, strict=True):
        if decision is None:
            continue
        flags = trace.TraceFlags(1 if parent_sampled else 0)
        remote = trace.SpanContext(0xABC, 0xDEF, is_remote=True, trace_flags=flags)
        parent = trace.set_span_in_context(trace.NonRecordingSpan(remote), Context())
        span = tracer.start_span("process q", context=parent, kind=trace.SpanKind.CONSUMER)
        assert span.is_recording() is decision  # what the SDK itself decides
        span.end()


def test_a_dropped_span_is_the_one_the_sdk_makes() -> None:
    tracer = TracerProvider(sampler=ParentBased(ALWAYS_ON)).get_tracer("test")
    remote = trace.SpanContext(
        0xABC,
        0xDEF,
        is_remote=True,
        trace_flags=trace.TraceFlags(0x02),
        trace_state=trace.TraceState([("vendor", "abc")]),
    )
    parent = trace.set_span_in_context(trace.NonRecordingSpan(remote), Context())
    theirs = tracer.start_span("process q", context=parent).get_span_context()
    ours_span = Tracers(None, "0").dropped(tracer, remote)
    ours = ours_span.get_span_context()
    assert not ours_span.is_recording()
    assert (ours.trace_id, ours.is_remote, ours.trace_flags, ours.trace_state) == (
        theirs.trace_id,
        theirs.is_remote,
        theirs.trace_flags,
        theirs.trace_state,
    )
    assert ours.span_id not in (0, remote.span_id)


def test_with_the_sdks_own_span_metrics_every_span_asks_the_sampler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Those metrics count dropped spans too: only the SDK's path counts them.
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    tracer = TracerProvider(sampler=ParentBased(ALWAYS_ON)).get_tracer("test")
    tracers = Tracers(None, "0")
    assert (tracers.by_parent(tracer, True), tracers.by_parent(tracer, False)) == (None, None)
