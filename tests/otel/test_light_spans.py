"""An attempt's process span stays out of the SDK while only queue_otel uses it, and is the
SDK's own span, exactly, the moment the job's code touches it.

Each test runs real jobs through a real worker and reads what the exporter received.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from queue_core import Job, Queue, Worker
from queue_otel.finished_spans import FinishedSpans
from queue_otel.light_spans import LightSpan
from tests.conftest import wait_counts
from tests.otel.conftest import Telemetry
from tests.otel.test_finished_spans import _fields, _spy_on_record

Processor = Callable[[Job], Awaitable[Any]]


async def _run(
    queue: Queue,
    make_worker: Callable[..., Worker],
    processor: Processor,
    *,
    outcome: str = "completed",
) -> None:
    await queue.add("report", {"n": 1})
    async with make_worker(processor):
        await wait_counts(queue, **{outcome: 1})


def _process_span(telemetry: Telemetry, queue: Queue) -> ReadableSpan:
    spans = telemetry.spans("process " + queue.name)
    assert len(spans) == 1
    return spans[0]


def _comparable(span: ReadableSpan) -> dict[str, Any]:
    """A span's fields, less those that differ from run to run (ids, times, the job's id
    and wait, the worker's id, the parent and links, which point at each job's own
    producer)."""
    fields = _fields(span)
    for varying in ("context", "parent", "start_time", "links"):
        fields.pop(varying)
    for varying in ("messaging.message.id", "messaging.client.id", "queue_core.job.wait_time"):
        fields["attributes"].pop(varying)
    fields["events"] = [(e.name, dict(e.attributes or {})) for e in fields["events"]]
    for event in fields["events"]:
        event[1].pop("exception.stacktrace", None)
    return fields


def _refuse_light_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every process span take the SDK's path from its start."""
    monkeypatch.setattr(FinishedSpans, "new_span_id", lambda *a, **k: None)


@pytest.mark.parametrize("fails", [False, True])
async def test_a_process_span_is_the_same_either_way(
    telemetry: Telemetry,
    queue: Queue,
    make_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
    fails: bool,
) -> None:
    seen: list[trace.Span] = []

    async def processor(job: Job) -> str:
        seen.append(trace.get_current_span())
        if fails:
            raise ValueError("bad input")
        return "ok"

    outcome = "failed" if fails else "completed"
    await _run(queue, make_worker, processor, outcome=outcome)
    light = _process_span(telemetry, queue)
    assert isinstance(seen[0], LightSpan)
    telemetry.exporter.clear()
    await queue.obliterate(force=True)
    with monkeypatch.context() as patch:
        _refuse_light_spans(patch)
        await _run(queue, make_worker, processor, outcome=outcome)
    through_sdk = _process_span(telemetry, queue)
    assert not isinstance(seen[1], LightSpan)

    assert _comparable(light) == _comparable(through_sdk)
    assert [link.context.span_id for link in light.links] != []
    assert len(light.links) == len(through_sdk.links)
    assert light.context.trace_flags == through_sdk.context.trace_flags
    assert light.context.span_id == seen[0].get_span_context().span_id
    assert light.status.status_code is (StatusCode.ERROR if fails else StatusCode.UNSET)
    if fails:
        assert [e.name for e in light.events] == ["exception"]
        assert light.attributes is not None
        assert light.attributes["error.type"] == "ValueError"


async def test_an_untouched_span_never_becomes_the_sdks(
    telemetry: Telemetry,
    queue: Queue,
    make_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Starting child spans and logging read only the span's context: no twin is made,
    the span is recorded in one step, and the children hang under it."""
    recorded = _spy_on_record(monkeypatch)
    spans: list[trace.Span] = []
    tracer = telemetry.tracer_provider.get_tracer("app")

    async def processor(job: Job) -> None:
        spans.append(trace.get_current_span())
        with tracer.start_as_current_span("render"):
            logging.getLogger("app").warning("rendering %s", job.id)
        await asyncio.to_thread(lambda: tracer.start_span("upload").end())

    await _run(queue, make_worker, processor)
    span = spans[0]
    assert isinstance(span, LightSpan) and not span.has_twin
    assert (f"process {queue.name}", True) in recorded
    process = _process_span(telemetry, queue)
    for child in ("render", "upload"):
        (found,) = telemetry.spans(child)
        assert found.parent is not None and found.parent.span_id == process.context.span_id
        assert found.context.trace_id == process.context.trace_id
    # Read after the end, the span answers from what was recorded.
    assert not span.is_recording()
    assert span.name == process.name
    assert dict(span.attributes or {}) == dict(process.attributes or {})


async def test_the_jobs_changes_go_into_the_sdks_twin(
    telemetry: Telemetry, queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    """The job's code sets attributes (one from a thread), adds an event, a link and a
    status, reads the span's attributes: the exported span has all of it, once, with the
    ids, start and attributes the span began with."""
    contexts: list[trace.SpanContext] = []
    read: list[dict[str, Any]] = []
    other = trace.SpanContext(0xABC, 0xDEF, is_remote=True)

    async def processor(job: Job) -> None:
        span = trace.get_current_span()
        contexts.append(span.get_span_context())
        await asyncio.to_thread(span.set_attribute, "app.tenant", "acme")
        span.set_attributes({"app.rows": 3, "app.tags": ["a", "b"]})
        span.add_event("cache miss", {"app.key": "k1"})
        span.add_link(other, {"app.why": "batch"})
        span.set_status(StatusCode.OK)
        read.append(dict(span.attributes))  # type: ignore[attr-defined]
        with pytest.raises(AttributeError):
            span._no_such_field  # type: ignore[attr-defined]  # noqa: B018

    await _run(queue, make_worker, processor)
    process = _process_span(telemetry, queue)
    attributes = dict(process.attributes or {})
    assert process.context == contexts[0]
    assert attributes["app.tenant"] == "acme"
    assert attributes["app.rows"] == 3
    assert attributes["app.tags"] == ("a", "b")  # cleaned by the SDK, as on its path
    assert attributes["queue_core.job.outcome"] == "completed"  # queue_otel's, at the end
    assert attributes["messaging.operation.name"] == "process"  # the start's
    assert read[0]["app.tenant"] == "acme" and "queue_core.job.outcome" not in read[0]
    assert [(e.name, dict(e.attributes or {})) for e in process.events] == [
        ("cache miss", {"app.key": "k1"})
    ]
    assert [link.context for link in process.links][-1] == other
    assert process.status.status_code is StatusCode.OK
    (job_span,) = telemetry.spans("job " + queue.name)
    assert process.parent is not None and process.parent.span_id == job_span.context.span_id
    assert process.start_time is not None and job_span.start_time is not None
    assert process.start_time >= job_span.start_time


async def test_changes_after_the_end_change_nothing(
    telemetry: Telemetry,
    queue: Queue,
    make_worker: Callable[..., Worker],
    caplog: pytest.LogCaptureFixture,
) -> None:
    kept: list[trace.Span] = []

    async def processor(job: Job) -> None:
        kept.append(trace.get_current_span())

    await _run(queue, make_worker, processor)
    span = kept[0]
    with caplog.at_level(logging.WARNING, logger="queue_otel.light_spans"):
        span.set_attribute("late", True)
        span.add_event("late")
        span.end()
    assert len(telemetry.spans("process " + queue.name)) == 1
    process = _process_span(telemetry, queue)
    assert "late" not in (process.attributes or {}) and not process.events
    assert isinstance(span, LightSpan) and not span.has_twin
    assert len([r for r in caplog.records if "ended" in r.getMessage()]) == 3


async def test_a_set_up_changed_mid_attempt_records_through_the_sdk(
    telemetry: Telemetry,
    queue: Queue,
    make_worker: Callable[..., Worker],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The span began light but the direct path refuses it at the end (a processor was
    added meanwhile, say): the SDK records it, with the ids the job's code saw."""
    contexts: list[trace.SpanContext] = []

    async def processor(job: Job) -> None:
        contexts.append(trace.get_current_span().get_span_context())
        monkeypatch.setattr(FinishedSpans, "record", lambda *a, **k: None)

    await _run(queue, make_worker, processor)
    monkeypatch.undo()
    process = _process_span(telemetry, queue)
    assert process.context == contexts[0]
    assert (process.attributes or {})["queue_core.job.outcome"] == "completed"


async def test_an_unsampled_or_unknown_decision_is_never_light(
    instrument: Callable[..., Telemetry], queue: Queue, make_worker: Callable[..., Worker]
) -> None:
    """Light spans are only for a decision known to be "record": a sampler of the user's
    own (here one that records everything, but may not say so in advance) is asked."""
    from opentelemetry.sdk.trace.sampling import (  # noqa: PLC0415
        ALWAYS_ON,
        Decision,
        Sampler,
        SamplingResult,
    )

    class Custom(Sampler):
        def __init__(self) -> None:
            self.asked: list[str] = []

        def should_sample(self, parent_context: Any, trace_id: int, name: str, *a: Any,
                          **k: Any) -> SamplingResult:  # fmt: skip
            self.asked.append(name)
            result = ALWAYS_ON.should_sample(parent_context, trace_id, name, *a, **k)
            return SamplingResult(Decision.RECORD_AND_SAMPLE, result.attributes,
                                  result.trace_state)  # fmt: skip

        def get_description(self) -> str:
            return "Custom"

    sampler = Custom()
    telemetry = instrument(sampler=sampler)
    seen: list[trace.Span] = []

    async def processor(job: Job) -> None:
        seen.append(trace.get_current_span())

    await _run(queue, make_worker, processor)
    assert not isinstance(seen[0], LightSpan)
    assert f"process {queue.name}" in sampler.asked
    assert len(telemetry.spans("process " + queue.name)) == 1
