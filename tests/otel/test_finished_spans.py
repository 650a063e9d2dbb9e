"""The job span handed to the processors in one step is the span the SDK's path records.

Each job span is recorded twice from the same job, once directly and once through the
SDK's tracer (the direct path refused), and the two exported spans are compared field
by field; then each set-up that must take the SDK's path is shown to take it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from queue_core import Job, Queue, Worker
from queue_otel.finished_spans import UNSET_STATUS, FinishedSpans
from queue_otel.propagation import flags_of
from queue_otel.tracing import TracingHook
from tests.conftest import wait_counts
from tests.otel.conftest import Telemetry


def _fields(span: ReadableSpan) -> dict[str, Any]:
    return {
        "name": span.name,
        "context": span.context,
        "parent": span.parent,
        "kind": span.kind,
        "attributes": dict(span.attributes or {}),
        "links": [(link.context, dict(link.attributes or {})) for link in span.links],
        "events": list(span.events),
        "status": (span.status.status_code, span.status.description),
        "start_time": span.start_time,
        "resource": span.resource.attributes,
        "scope": span.instrumentation_scope,
        "dropped": (span.dropped_attributes, span.dropped_links, span.dropped_events),
    }


async def _finished_job(queue: Queue, make_worker: Callable[..., Worker]) -> Job:
    done: list[Job] = []

    async def processor(job: Job) -> str:
        done.append(job)
        return "ok"

    await queue.add("report", {"n": 1})
    async with make_worker(processor):
        await wait_counts(queue, completed=1)
    fetched = await queue.get_job(done[0].id)
    assert fetched is not None
    return fetched


def _both_ways(
    hook: TracingHook,
    telemetry: Telemetry,
    monkeypatch: pytest.MonkeyPatch,
    record: Callable[[], None],
) -> tuple[ReadableSpan, ReadableSpan]:
    telemetry.exporter.clear()
    record()
    direct = telemetry.spans()
    with monkeypatch.context() as patch:
        patch.setattr(FinishedSpans, "record", lambda *a, **k: False)
        record()
    through_sdk = telemetry.spans()[len(direct) :]
    assert len(direct) == len(through_sdk) == 1
    return direct[0], through_sdk[0]


def _spy_on_record(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Each direct recording's span name and whether it was taken (recorded in one step)."""
    results: list[tuple[str, bool]] = []
    original = FinishedSpans.record

    def spying(self: FinishedSpans, name: str, *args: Any, **kwargs: Any) -> Any:
        recorded = original(self, name, *args, **kwargs)
        results.append((name, recorded is not None))
        return recorded

    monkeypatch.setattr(FinishedSpans, "record", spying)
    return results


def _tracing_hook(telemetry: Telemetry) -> TracingHook:
    hooks = [h for h in telemetry.instrumentor._hooks if isinstance(h, TracingHook)]
    return hooks[0]


@pytest.mark.parametrize("failed", [False, True])
async def test_a_job_span_is_the_same_either_way(
    telemetry: Telemetry,
    queue: Queue,
    make_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
    failed: bool,
) -> None:
    job = await _finished_job(queue, make_worker)
    hook = _tracing_hook(telemetry)
    error = ("ValueError", "bad input") if failed else (None, None)
    direct, through_sdk = _both_ways(
        hook, telemetry, monkeypatch, lambda: hook._record_job_span(queue.name, job, *error)
    )
    assert _fields(direct) == _fields(through_sdk)
    assert direct.end_time is not None and through_sdk.end_time is not None
    assert abs(direct.end_time - through_sdk.end_time) < 1_000_000_000
    assert direct.status.status_code is (StatusCode.ERROR if failed else StatusCode.UNSET)
    assert direct.attributes is not None and direct.attributes["queue_core.job.name"] == "report"


async def test_send_and_job_spans_are_recorded_directly(
    telemetry: Telemetry,
    queue: Queue,
    make_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recorded = _spy_on_record(monkeypatch)
    await _finished_job(queue, make_worker)
    # The send span at the add, the attempt's process span (untouched by the job's code)
    # at its end, then the job span.
    assert recorded == [
        (f"send {queue.name}", True),
        (f"process {queue.name}", True),
        (f"job {queue.name}", True),
    ]
    for kind in ("send", "process", "job"):
        assert len(telemetry.spans(f"{kind} {queue.name}")) == 1


async def test_spans_share_their_flags_and_unset_status(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    # Finished spans wait in a batch processor long enough to be promoted by the garbage
    # collector: a TraceFlags or Status made per span is one more tracked object each.
    for _ in range(2):
        await _finished_job(queue, make_worker)
    spans = telemetry.spans()
    assert len(spans) == 6  # send, process, job: twice
    contexts = [span.context for span in spans] + [s.parent for s in spans if s.parent]
    contexts += [link.context for span in spans for link in span.links]
    assert len(contexts) == 14  # 6 spans, 4 parents (process and job), 4 links
    assert [c for c in contexts if c.trace_flags is not flags_of(c.trace_flags)] == []
    assert all(span.status is UNSET_STATUS for span in spans)


class Counting(SpanProcessor):
    """A processor that sees spans start: the direct path must step aside for it."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append(span.name)


@pytest.mark.parametrize(
    "setup",
    ["another processor", "attribute limit", "value length limit", "sdk metrics"],
)
async def test_other_set_ups_take_the_sdks_path(
    instrument: Callable[..., Telemetry],
    queue: Queue,
    make_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
    setup: str,
) -> None:
    if setup == "sdk metrics":
        monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    telemetry = instrument()
    counting = Counting()
    if setup == "another processor":
        telemetry.tracer_provider.add_span_processor(counting)
    if setup == "attribute limit":
        monkeypatch.setattr(
            telemetry.tracer_provider, "_span_limits", SpanLimits(max_span_attributes=3)
        )
    if setup == "value length limit":
        monkeypatch.setattr(
            telemetry.tracer_provider, "_span_limits", SpanLimits(max_span_attribute_length=3)
        )
    results = _spy_on_record(monkeypatch)
    await _finished_job(queue, make_worker)
    assert not any(taken for _, taken in results)  # refused, or (SDK metrics) never tried
    spans = telemetry.spans("job " + queue.name)
    assert len(spans) == 1  # recorded all the same, by the SDK
    if setup == "another processor":
        assert counting.started == ["send " + queue.name, "process " + queue.name,
                                    "job " + queue.name]  # fmt: skip
    if setup == "attribute limit":
        assert len(spans[0].attributes or {}) == 3


def test_a_disabled_tracer_is_never_bypassed() -> None:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    tracer = provider.get_tracer("test")
    finished = FinishedSpans(tracer)
    assert finished._plain({}, [])
    tracer._is_enabled = lambda: False  # type: ignore[method-assign]
    assert not finished._plain({}, [])


async def _send_span(telemetry: Telemetry, queue: Queue, job_id: str) -> tuple[ReadableSpan, Job]:
    tracer = telemetry.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("POST /reports"):
        job = await queue.add("report", {"n": 1}, job_id=job_id)
    sends = [s for s in telemetry.spans("send " + queue.name) if s.attributes
             and s.attributes.get("messaging.message.id") == job.id]  # fmt: skip
    assert len(sends) == 1
    return sends[0], job


async def test_a_send_span_is_the_same_either_way(
    telemetry: Telemetry, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    direct, direct_job = await _send_span(telemetry, queue, "a")
    with monkeypatch.context() as patch:
        patch.setattr(FinishedSpans, "begin", lambda *a, **k: None)
        through_sdk, sdk_job = await _send_span(telemetry, queue, "b")
    ours, theirs = _fields(direct), _fields(through_sdk)
    for fields in (ours, theirs):
        fields["attributes"].pop("messaging.message.id")
        fields.pop("context")
        fields.pop("start_time")
        fields.pop("parent")
    assert ours == theirs
    assert direct.parent is not None and through_sdk.parent is not None
    assert (direct.context.trace_flags, direct.context.trace_state) == (
        through_sdk.context.trace_flags,
        through_sdk.context.trace_state,
    )
    # Each job carries its own send span's context, whichever path made it.
    for span, job in ((direct, direct_job), (through_sdk, sdk_job)):
        assert job.headers["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"


async def test_a_send_span_falls_back_to_the_sdk_with_the_same_ids(
    telemetry: Telemetry, queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FinishedSpans, "finish", lambda *a, **k: False)  # set-up changed
    span, job = await _send_span(telemetry, queue, "c")
    trace_hex, span_hex = job.headers["traceparent"].split("-")[1:3]
    assert (f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}") == (
        trace_hex,
        span_hex,
    )
    request = telemetry.spans("POST /reports")[0]
    assert span.parent is not None and span.parent.span_id == request.context.span_id
