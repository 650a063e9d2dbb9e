"""Headers: the global propagator, baggage off by default, untrusted input dropped."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from opentelemetry import baggage, context, propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import CarrierT, Getter, Setter, TextMapPropagator

from queue_core import Job, Queue, Worker
from queue_otel.propagation import (
    JOB_HEADER,
    MAX_VALUE_CHARS,
    decode_span_context,
    encode_ids,
    encode_span_context,
    extract,
    inject,
    inject_span,
)
from tests.conftest import wait_counts
from tests.otel.conftest import Telemetry

SPAN = trace.SpanContext(0xABC, 0xDEF, is_remote=False, trace_flags=trace.TraceFlags(1))
WITH_STATE = trace.SpanContext(
    0xABC, 0xDEF, is_remote=False, trace_state=trace.TraceState([("vendor", "v1")])
)


def with_span_and_baggage() -> Context:
    ctx = trace.set_span_in_context(trace.NonRecordingSpan(SPAN))
    return baggage.set_baggage("user.tier", "gold", ctx)


def test_round_trip_without_baggage_by_default() -> None:
    headers: dict[str, str] = {}
    inject(headers, with_span_and_baggage(), with_baggage=False)
    assert set(headers) == {"traceparent"}
    extracted = extract(headers, with_baggage=False)
    assert trace.get_current_span(extracted).get_span_context().span_id == 0xDEF


def test_baggage_when_enabled_on_both_sides() -> None:
    headers: dict[str, str] = {}
    inject(headers, with_span_and_baggage(), with_baggage=True)
    assert headers["baggage"] == "user.tier=gold"
    assert baggage.get_all(extract(headers, with_baggage=True)) == {"user.tier": "gold"}
    assert baggage.get_all(extract(headers, with_baggage=False)) == {}


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": "garbage"},
        {"traceparent": 42},
        {"traceparent": "00-" + "f" * 32 + "-" + "e" * 16 + "-01" + " " * MAX_VALUE_CHARS},
        {f"h{i}": "x" for i in range(100)},
        {},
    ],
)
def test_untrusted_headers_give_an_empty_context(headers: Mapping[str, Any]) -> None:
    extracted = extract(headers, with_baggage=True)
    assert not trace.get_current_span(extracted).get_span_context().is_valid


def test_job_span_context_codec_is_strict() -> None:
    encoded = encode_span_context(SPAN)
    assert encoded == f"00-{0xABC:032x}-{0xDEF:016x}-01"
    decoded = decode_span_context(encoded)
    assert decoded is not None and (decoded.trace_id, decoded.span_id) == (0xABC, 0xDEF)
    assert decoded.is_remote
    for bad in (None, 5, "", encoded.upper(), encoded + "0", "01" + encoded[2:],
                f"00-{0:032x}-{1:016x}-01", f"00-{1:032x}-{0:016x}-01"):  # fmt: skip
        assert decode_span_context(bad) is None, bad


@pytest.mark.parametrize("with_baggage", [False, True])
@pytest.mark.parametrize("span_context", [SPAN, WITH_STATE, trace.INVALID_SPAN_CONTEXT])
@pytest.mark.parametrize("propagator", ["w3c", "custom"])
def test_inject_span_writes_what_inject_writes(
    span_context: trace.SpanContext, with_baggage: bool, propagator: str
) -> None:
    """The direct path (a W3C propagator, no trace state, no baggage) and the generic one
    give the same headers as ``inject`` of the current context with the span in it."""
    previous = propagate.get_global_textmap()
    if propagator == "custom":
        propagate.set_global_textmap(HeaderPropagator())
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        span = trace.NonRecordingSpan(span_context)
        direct: dict[str, str] = {}
        inject_span(direct, span, with_baggage=with_baggage)
        generic: dict[str, str] = {}
        inject(generic, trace.set_span_in_context(span), with_baggage=with_baggage)
    finally:
        context.detach(token)
        propagate.set_global_textmap(previous)
    assert direct == generic
    if propagator == "w3c" and span_context is SPAN:
        assert direct["traceparent"] == encode_span_context(SPAN)


def test_encode_ids_is_the_codec_of_the_same_context() -> None:
    for trace_id, span_id, flags in ((0xABC, 0xDEF, 1), (2**128 - 1, 2**64 - 1, 0), (1, 1, 3)):
        built = trace.SpanContext(trace_id, span_id, is_remote=True,
                                  trace_flags=trace.TraceFlags(flags))  # fmt: skip
        assert encode_ids(trace_id, span_id, flags) == encode_span_context(built)


class HeaderPropagator(TextMapPropagator):
    """A made-up propagator (think B3 or a vendor's) to show the global one is used."""

    def inject(self, carrier: CarrierT, context: Context | None = None,
               setter: Setter[CarrierT] | None = None) -> None:  # fmt: skip
        span_context = trace.get_current_span(context).get_span_context()
        if span_context.is_valid:
            carrier["x-trace"] = f"{span_context.trace_id:x}:{span_context.span_id:x}"  # type: ignore[index]

    def extract(self, carrier: CarrierT, context: Context | None = None,
                getter: Getter[CarrierT] | None = None) -> Context:  # fmt: skip
        value = carrier.get("x-trace") if isinstance(carrier, dict) else None
        if not value:
            return context or Context()
        trace_id, span_id = (int(x, 16) for x in value.split(":"))
        parent = trace.SpanContext(trace_id, span_id, is_remote=True,
                                   trace_flags=trace.TraceFlags(1))  # fmt: skip
        return trace.set_span_in_context(trace.NonRecordingSpan(parent), context)

    @property
    def fields(self) -> set[str]:
        return {"x-trace"}


@pytest.fixture
def custom_propagator() -> Iterator[None]:
    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(HeaderPropagator())
    yield
    propagate.set_global_textmap(previous)


async def test_the_globally_configured_propagator_is_used(
    custom_propagator: None,
    telemetry: Telemetry,
    queue: Queue,
    make_worker: Callable[..., Worker],
) -> None:
    seen: list[dict[str, str]] = []

    async def process(job: Job) -> None:
        seen.append(dict(job.headers))

    job = await queue.add("x")
    async with make_worker(process):
        await wait_counts(queue, completed=1)
    assert "traceparent" not in job.headers and "x-trace" in job.headers
    assert JOB_HEADER in job.headers
    (send,) = telemetry.spans(f"send {queue.name}")
    (attempt,) = telemetry.spans(f"process {queue.name}")
    assert seen[0]["x-trace"] == f"{send.context.trace_id:x}:{send.context.span_id:x}"
    assert {link.context.span_id for link in attempt.links} == {send.context.span_id}


async def test_baggage_reaches_the_processor_only_when_enabled(
    instrument: Callable[..., Telemetry],
    queue: Queue,
    make_worker: Callable[..., Worker],
) -> None:
    instrument(propagate_baggage=True)
    seen: list[dict[str, object]] = []

    async def process(job: Job) -> None:
        seen.append(dict(baggage.get_all()))

    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        job = await queue.add("x")
    finally:
        context.detach(token)
    async with make_worker(process):
        await wait_counts(queue, completed=1)
    assert job.headers["baggage"] == "tenant=acme"
    assert seen == [{"tenant": "acme"}]


async def test_baggage_stays_home_by_default(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    seen: list[dict[str, object]] = []
    token = context.attach(baggage.set_baggage("tenant", "acme"))
    try:
        job = await queue.add("x")
    finally:
        context.detach(token)
    async with make_worker(lambda j: seen.append(dict(baggage.get_all()))):
        await wait_counts(queue, completed=1)
    assert "baggage" not in job.headers
    assert seen == [{}]
