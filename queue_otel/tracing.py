"""Spans, per the messaging conventions, on queue_core's hooks.

A trace in ``parent`` mode (the default)::

    POST /users                      (the web framework's SERVER span)
    └─ send emails          PRODUCER (the enqueue; its context travels in the job)
       └─ job emails        INTERNAL (from the enqueue time to the final outcome)
          ├─ process emails CONSUMER (attempt 1: failed, error.type set)
          └─ process emails CONSUMER (attempt 2: completed)

``add_bulk`` makes one ``create`` PRODUCER span per job and one ``send`` CLIENT span that
links to them; without an ambient span, the ``send`` span is the root of the batch's
trace, the ``create`` spans its children. A flow's adds, one per queue, nest, so a flow is
one trace, whose parents' spans link to their children's ``job`` spans. Every ``process``
span also links to the producer's context, as the conventions ask. In ``link`` mode, or
for a job delayed longer than ``new_trace_after``, the ``job`` span starts a new trace,
linked to the producer.

The ``job`` span is recorded at the job's final outcome, by whichever worker saw it, with
its start time set to the enqueue time. Its span id is chosen at enqueue and carried in
the ``queue-core-job`` header, so each attempt, in any worker and at any time, is created
as its child. Choosing an id needs the SDK's tracer (its ``id_generator``); with another
tracer implementation, attempts hang under the producer span directly.

Job data, return values and error messages in headers never become attributes.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Final

from opentelemetry import baggage, context, trace
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.sdk.trace.sampling import Decision, ParentBased, StaticSampler
from opentelemetry.trace import Link, NonRecordingSpan, SpanKind, Status, StatusCode, Tracer

from queue_core import (
    EnqueuedJob,
    EnqueueEvent,
    Hook,
    InternalEvent,
    Job,
    JobEvent,
    OperationEvent,
    ProcessEvent,
    StalledEvent,
)
from queue_otel import semconv as sc
from queue_otel.finished_spans import (
    UNSET_STATUS,
    Deferred,
    FinishedSpans,
    child_context,
    sdk_span_metrics_on,
)
from queue_otel.light_spans import LightSpan, start_light_span
from queue_otel.propagation import (
    JOB_HEADER,
    decode_span_context,
    encode_ids,
    extract,
    extract_span_context,
    flags_of,
    inject_span,
)
from queue_otel.sampled_out import DroppedSpan, sampled_out_header
from queue_otel.scope import After
from queue_otel.settings import Settings

__all__ = ["FAILED_OUTCOMES", "Tracers", "TracingHook"]

FAILED_OUTCOMES: Final = frozenset({"failed", "retry", "lock_lost", "interrupted"})
TRACER_NAME: Final = "queue_otel"
JOB_TRACER_NAME: Final = "queue_otel.jobs"

# Ids to use for the next span the job tracer starts (trace id, span id).
_preset: ContextVar[tuple[int, int] | None] = ContextVar("queue_otel_preset_ids", default=None)


class _PresetIds:
    """Wraps a tracer's id generator: hands out preset ids while a job span is recorded."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def generate_span_id(self) -> int:
        preset = _preset.get()
        return preset[1] if preset is not None else int(self.inner.generate_span_id())

    def generate_trace_id(self) -> int:
        preset = _preset.get()
        return preset[0] if preset is not None else int(self.inner.generate_trace_id())

    def is_trace_id_random(self) -> bool:
        check = getattr(self.inner, "is_trace_id_random", None)
        return bool(check()) if callable(check) else False


def _preset_ids(tracer: Tracer) -> bool:
    """Let ``tracer`` use preset ids (an SDK tracer); False for another implementation."""
    generator = getattr(tracer, "id_generator", None)
    if generator is None:
        return False
    if not isinstance(generator, _PresetIds):
        tracer.id_generator = _PresetIds(generator)  # type: ignore[attr-defined]
    return True


class Tracers:
    """Looks tracers up lazily: the global provider may be set after ``instrument()``."""

    def __init__(self, provider: trace.TracerProvider | None, version: str) -> None:
        self._provider = provider
        self._version = version
        self._main: Tracer | None = None
        self._jobs: Tracer | None = None
        self._decisions: dict[int, tuple[object, tuple[bool | None, bool | None]]] = {}
        self._finished: dict[int, tuple[Tracer, FinishedSpans]] = {}
        self._drop_unsampled: tuple[Tracer, Tracer | None, bool] | None = None

    def _get(self, name: str) -> Tracer:
        return trace.get_tracer(name, self._version, self._provider, schema_url=sc.SCHEMA_URL)

    def main(self) -> Tracer:
        if self._main is not None:
            return self._main
        tracer = self._get(TRACER_NAME)
        if not isinstance(tracer, trace.ProxyTracer):
            self._main = tracer  # a real tracer: keep it
            _preset_ids(tracer)
        return tracer

    def jobs(self) -> Tracer | None:
        """The tracer for job spans, able to use preset ids; None when the SDK is absent."""
        if self._jobs is not None:
            return self._jobs
        tracer = self._get(JOB_TRACER_NAME)
        if not _preset_ids(tracer):
            return None
        self._jobs = tracer
        return tracer

    def by_parent(self, tracer: Tracer, parent_sampled: bool) -> bool | None:
        """Whether ``tracer`` records a span whose parent is remote and sampled (or not),
        when its sampler decides that by the parent alone; None when it may look at more
        (the name, attributes, links) and so must be asked."""
        sampler = getattr(tracer, "sampler", None)
        if sampler is None:
            return None
        known = self._decisions.get(id(sampler))
        if known is None or known[0] is not sampler:
            known = (sampler, _decisions_by_parent(sampler))
            self._decisions[id(sampler)] = known
        return known[1][0 if parent_sampled else 1]

    def drop_unsampled(self) -> bool:
        """Whether both tracers are known to drop a span whose remote parent is not
        sampled (the job tracer, when there is one): read once per pair of tracers."""
        main, jobs = self.main(), self.jobs()
        known = self._drop_unsampled
        if known is None or known[0] is not main or known[1] is not jobs:
            drops = self.by_parent(main, False) is False and (
                jobs is None or self.by_parent(jobs, False) is False
            )
            known = self._drop_unsampled = (main, jobs, drops)
        return known[2]

    def dropped(self, tracer: Tracer, parent: trace.SpanContext) -> trace.Span:
        """The span the SDK makes when its sampler drops a span with this remote parent:
        non-recording, its context ``dropped_context``."""
        return NonRecordingSpan(dropped_context(tracer, parent))

    def finished_spans(self, tracer: Tracer) -> FinishedSpans:
        """The direct recorder of finished spans for ``tracer``."""
        known = self._finished.get(id(tracer))
        if known is None or known[0] is not tracer:
            known = self._finished[id(tracer)] = (tracer, FinishedSpans(tracer))
        return known[1]

    def _own_generator(self) -> Any:
        """The job tracer's own id generator (under its preset-ids wrapper), or None."""
        generator = getattr(self.jobs(), "id_generator", None)
        return generator.inner if isinstance(generator, _PresetIds) else None

    def new_trace_id(self) -> int:
        generator = self._own_generator()
        if generator is None:
            return random.getrandbits(128) or 1
        return int(generator.generate_trace_id())

    def new_span_id(self) -> int:
        generator = self._own_generator()
        if generator is None:
            return random.getrandbits(64) or 1
        return int(generator.generate_span_id())


def dropped_context(tracer: Tracer, parent: trace.SpanContext) -> trace.SpanContext:
    """The context of the span ``tracer``'s SDK makes when its sampler drops a child of the
    remote ``parent``: a fresh span id (from its id generator), the parent's trace id and
    trace state, not sampled."""
    generator = getattr(tracer, "id_generator", None)
    span_id = int(generator.generate_span_id()) if generator else random.getrandbits(64)
    return child_context(parent, span_id or 1, sampled=False)


def _decisions_by_parent(sampler: Any) -> tuple[bool | None, bool | None]:
    """For a remote parent that is sampled, and one that is not: whether the sampler
    records the span, when that is fixed. Known for the SDK's own samplers: ALWAYS_ON,
    ALWAYS_OFF, and ParentBased (the default) whose remote-parent delegates are those.
    Any other sampler, or a subclass that decides otherwise, is asked each time. The
    delegates are ParentBased's private fields: if a release renames them, every span
    goes back to asking the sampler (slower, never wrong)."""
    if sdk_span_metrics_on():
        return None, None
    static = _static(sampler)
    if static is not None:
        return static, static
    if not isinstance(sampler, ParentBased) or type(sampler).should_sample is not (
        ParentBased.should_sample
    ):
        return None, None
    return (
        _static(getattr(sampler, "_remote_parent_sampled", None)),
        _static(getattr(sampler, "_remote_parent_not_sampled", None)),
    )


def _static(sampler: Any) -> bool | None:
    """Whether a StaticSampler (ALWAYS_ON or ALWAYS_OFF) records; None for others."""
    if not isinstance(sampler, StaticSampler):
        return None
    if type(sampler).should_sample is not StaticSampler.should_sample:
        return None
    decision = sampler.should_sample(None, 1, "probe").decision
    return decision is not Decision.DROP


_Read = tuple[Context | None, trace.SpanContext, trace.SpanContext | None]
_SAMPLED_OUT: Final[_Read] = (None, trace.INVALID_SPAN_CONTEXT, None)

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_CACHED: Final = 4096  # start-attribute dicts kept per hook


_MICROSECOND: Final = timedelta(microseconds=1)


def _ns(moment: datetime | None) -> int | None:
    """Nanoseconds since the epoch, exactly (a float product drifts by tens of ns)."""
    if moment is None:
        return None
    return (moment - _EPOCH) // _MICROSECOND * 1000


def _job_end(job: Job) -> int:
    """A job span ends when this worker saw the outcome, after the last attempt's span
    ended (Redis records the finish time in whole milliseconds)."""
    return max(_ns(job.finished_at) or 0, time.time_ns())


def _added_attributes(job: EnqueuedJob | None) -> dict[str, Any]:
    """A producer span's attributes known once the add is done: the id Redis gave."""
    attributes: dict[str, Any] = {}
    if job is not None and job.job_id is not None:
        attributes[sc.MESSAGE_ID] = job.job_id
        if job.duplicate:
            attributes[sc.JOB_DUPLICATE] = True
    return attributes


def _error_type(error: BaseException) -> str:
    return type(error).__qualname__


def _remote_parent(span_context: trace.SpanContext) -> Context:
    return trace.set_span_in_context(NonRecordingSpan(span_context), Context())


def _sdk_span(
    tracer: Tracer,
    name: str,
    ids: trace.SpanContext,
    *,
    parent: trace.SpanContext | None,
    kind: SpanKind,
    attributes: Mapping[str, Any],
    links: Sequence[Link],
    start_time: int | None,
) -> trace.Span:
    """The SDK's live span, started as its path starts one, with the trace and span id of
    ``ids``: for a span begun without it (a deferred send, a light process span) or
    recorded after the fact (a job span)."""
    preset = _preset.set((ids.trace_id, ids.span_id))
    try:
        return tracer.start_span(
            name,
            context=Context() if parent is None else _remote_parent(parent),
            kind=kind,
            attributes=attributes,
            links=links,
            start_time=start_time,
        )
    finally:
        _preset.reset(preset)


class TracingHook(Hook):
    def __init__(self, tracers: Tracers, settings: Settings) -> None:
        self._tracers = tracers
        self._settings = settings
        # The producer context read at the start of each running attempt, reused when
        # the job span is recorded at the end of that attempt (by id of the Job object).
        # _SAMPLED_OUT for an attempt whose trace is sampled out (sampled_out.py).
        self._read: dict[int, _Read] = {}
        # A job span whose outcome arrived during an attempt waits until that attempt's
        # span has ended: a parent must not end before its children.
        self._pending: dict[int, tuple[str, Job, str | None, str | None, str | None]] = {}
        self._starts: dict[tuple[str, str | None, int | None, str], dict[str, Any]] = {}
        self._sends: dict[tuple[str, str | None, int | None, str], dict[str, Any]] = {}

    # ------------------------------------------------------------------ producer side

    def _sampling_attributes(
        self, queue: str, address: str | None, port: int | None, operation: str
    ) -> Mapping[str, Any]:
        """The attributes a span starts with (what a sampler may look at), one dict per
        queue, server and operation, reused: the SDK copies them into the span."""
        key = (queue, address, port, operation)
        attributes = self._starts.get(key)
        if attributes is None:
            attributes = self._base(queue, address, port)
            if operation != "job":
                attributes[sc.OPERATION_NAME] = operation
                attributes[sc.OPERATION_TYPE] = operation
            self._starts[key] = attributes
        return attributes

    def _send_attributes(
        self, queue: str, address: str | None, port: int | None, name: str
    ) -> Mapping[str, Any]:
        """A send span's start attributes, with the job's name: one dict per queue,
        server and job name (names are a code's few constants), reused."""
        key = (queue, address, port, name)
        attributes = self._sends.get(key)
        if attributes is None:
            attributes = {**self._sampling_attributes(queue, address, port, "send")}
            attributes[sc.JOB_NAME] = name
            if len(self._sends) < _MAX_CACHED:  # a name per job would not grow it forever
                self._sends[key] = attributes
        return attributes

    def _base(self, queue: str, address: str | None, port: int | None) -> dict[str, Any]:
        attributes: dict[str, Any] = {sc.MESSAGING_SYSTEM: sc.SYSTEM, sc.DESTINATION: queue}
        if address is not None:
            attributes[sc.SERVER_ADDRESS] = address
        if port is not None:
            attributes[sc.SERVER_PORT] = port
        return attributes

    def around_enqueue(self, event: EnqueueEvent) -> After:
        tracer = self._tracers.main()
        creates: list[trace.Span] = []
        deferred: Deferred | None = None
        if event.bulk:
            send = self._start_batch(event, tracer, creates)
        else:
            job = event.jobs[0]
            name = f"send {event.queue}"
            attributes = self._send_attributes(
                event.queue, event.server_address, event.server_port, job.name
            )
            # Nothing but queue_otel touches a send span while it runs: begun here, it is
            # recorded in one step at the end (the SDK's path when that is not the same).
            deferred = self._tracers.finished_spans(tracer).begin(
                name, SpanKind.PRODUCER, attributes
            )
            if deferred is not None:
                send = deferred.span
            else:
                send = tracer.start_span(name, kind=SpanKind.PRODUCER, attributes=attributes)
            self._stamp(job, send)
        token = context.attach(trace.set_span_in_context(send))
        return After(partial(self._after_enqueue, event, send, creates, token, deferred))

    def _after_enqueue(
        self,
        event: EnqueueEvent,
        send: trace.Span,
        creates: list[trace.Span],
        token: object,
        deferred: Deferred | None,
    ) -> None:
        context.detach(token)  # type: ignore[arg-type]
        if deferred is not None:
            if deferred.recording:
                self._finish_send(deferred, event.jobs[0], event.error)
            return
        if event.bulk:
            for create, job in zip(creates, event.jobs, strict=True):
                self._end_producer_span(create, job, event.error)
            self._end_producer_span(send, None, event.error)
        else:
            self._end_producer_span(send, event.jobs[0], event.error)

    def _finish_send(
        self, deferred: Deferred, job: EnqueuedJob, error: BaseException | None
    ) -> None:
        """Record a send span begun without the SDK's live span: in one step, or, for a
        failed add (its exception event) or a set-up that changed meanwhile, through the
        SDK with the same ids, parent, start and attributes."""
        tracer = self._tracers.main()
        attributes = _added_attributes(job)
        if error is None and self._tracers.finished_spans(tracer).finish(deferred, attributes):
            return
        span = _sdk_span(
            tracer,
            deferred.name,
            deferred.span.get_span_context(),
            parent=deferred.parent,
            kind=deferred.kind,
            attributes=deferred.attributes,
            links=(),
            start_time=deferred.start_time,
        )
        self._end_producer_span(span, job, error)

    def _start_batch(
        self, event: EnqueueEvent, tracer: Tracer, creates: list[trace.Span]
    ) -> trace.Span:
        """The spans of ``add_bulk``: one ``create`` per job (appended to ``creates``) and
        the ``send`` span, returned."""
        base = self._base(event.queue, event.server_address, event.server_port)
        send_attributes = {**base, sc.OPERATION_NAME: "send", sc.OPERATION_TYPE: "send",
                           sc.BATCH_COUNT: len(event.jobs)}  # fmt: skip
        # Without an ambient span the send span roots the batch and the create spans
        # are its children: a batch, and a flow (whose adds nest), is one trace,
        # sampled as one, not a trace per job.
        root: trace.Span | None = None
        if not trace.get_current_span().get_span_context().is_valid:
            root = tracer.start_span(
                f"send {event.queue}", kind=SpanKind.CLIENT, attributes=send_attributes
            )
        create_attributes = self._sampling_attributes(
            event.queue, event.server_address, event.server_port, "create"
        )
        parent = trace.set_span_in_context(root) if root is not None else None
        for job in event.jobs:
            create = tracer.start_span(
                f"create {event.queue}",
                context=parent,
                kind=SpanKind.PRODUCER,
                attributes=create_attributes,
            )
            if create.is_recording():
                create.set_attribute(sc.JOB_NAME, job.name)
            self._stamp(job, create)
            creates.append(create)
        created = [c.get_span_context() for c in creates if c.get_span_context().is_valid]
        if root is None:
            send = tracer.start_span(
                f"send {event.queue}",
                kind=SpanKind.CLIENT,  # the create spans are the creation contexts
                attributes=send_attributes,
                links=[Link(c) for c in created],
            )
        else:
            send = root
            for linked in created:
                send.add_link(linked)
        return send

    def _end_producer_span(
        self, span: trace.Span, job: EnqueuedJob | None, error: BaseException | None
    ) -> None:
        if not span.is_recording():
            span.end()
            return
        attributes = _added_attributes(job)
        if error is not None:
            attributes[sc.ERROR_TYPE] = _error_type(error)
        if attributes:
            span.set_attributes(attributes)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error)))
        span.end()

    def _stamp(self, job: EnqueuedJob, creation: trace.Span) -> None:
        """Write the creation context and the job span's context into the job's headers."""
        creation_context = creation.get_span_context()
        inject_span(job.headers, creation, with_baggage=self._settings.propagate_baggage)
        if not creation_context.is_valid or self._tracers.jobs() is None:
            return
        own_trace = (
            self._settings.trace_mode == "link"
            or job.options.delay >= self._settings.new_trace_after
        )
        if own_trace:
            trace_id = self._tracers.new_trace_id()
            span_id = self._tracers.new_span_id()
            flags = self._sampling_flags(trace_id, job, creation_context)
        else:
            trace_id, flags = creation_context.trace_id, creation_context.trace_flags
            span_id = self._tracers.new_span_id()
        job.headers[JOB_HEADER] = encode_ids(trace_id, span_id, flags)

    def _sampling_flags(
        self, trace_id: int, job: EnqueuedJob, creation: trace.SpanContext
    ) -> trace.TraceFlags:
        """Ask the sampler now about the job span that will root the new trace later."""
        sampler = getattr(self._tracers.jobs(), "sampler", None)
        if sampler is None:
            return creation.trace_flags
        result = sampler.should_sample(
            None, trace_id, f"job {job.name}", SpanKind.INTERNAL, {}, [Link(creation)]
        )
        sampled = result.decision.is_sampled()
        return flags_of(trace.TraceFlags.SAMPLED if sampled else trace.TraceFlags.DEFAULT)

    # ------------------------------------------------------------------ worker side

    def _producer(
        self, job: Job
    ) -> tuple[Context | None, trace.SpanContext, trace.SpanContext | None]:
        """The producer's context, its span context, and the job span's context."""
        known = self._read.get(id(job))
        if known is not None and known is not _SAMPLED_OUT:
            return known
        creation, creation_context, job_context = self._producer_of(job.headers)
        if job.scheduler_id is not None and job.scheduled_for is not None:
            # A scheduler's run: no producer enqueued it, and every run is a trace of
            # its own, with ids every worker derives alike from the run's tick.
            tick = int(job.scheduled_for.timestamp() * 1000)
            seed = f"{job.queue_name}|{job.scheduler_id}|{tick}|{job.manual_retries}"
            job_context = _context_from(seed, self._run_flags(job))
        elif job_context is not None and job.manual_retries:
            job_context = rerun_context(job_context, job.manual_retries)
        return creation, creation_context, job_context

    def _run_flags(self, job: Job) -> trace.TraceFlags:
        """Whether a scheduler's run is sampled: asked of the job tracer's sampler."""
        sampler = getattr(self._tracers.jobs(), "sampler", None)
        if sampler is None:
            return flags_of(trace.TraceFlags.SAMPLED)
        seed = f"{job.queue_name}|{job.scheduler_id}|{job.scheduled_for}|{job.manual_retries}"
        trace_id = _context_from(seed, flags_of(0)).trace_id
        result = sampler.should_sample(None, trace_id, f"job {job.name}", SpanKind.INTERNAL)
        sampled = result.decision.is_sampled()
        return flags_of(trace.TraceFlags.SAMPLED if sampled else trace.TraceFlags.DEFAULT)

    def _producer_of(
        self, headers: Mapping[str, str]
    ) -> tuple[Context | None, trace.SpanContext, trace.SpanContext | None]:
        """The producer's context (only when baggage is propagated: the span context is
        all that is needed otherwise), its span context, and the job span's context."""
        job_context = decode_span_context(headers.get(JOB_HEADER))
        if not self._settings.propagate_baggage:
            return None, extract_span_context(headers), job_context
        creation = extract(headers, with_baggage=True)
        return creation, trace.get_current_span(creation).get_span_context(), job_context

    def around_process(self, event: ProcessEvent) -> After:
        job = event.job
        started = job.started_at or datetime.now(UTC)
        # A flow parent is ready once its children are done: the flow's trace goes on
        # however long they took; other jobs count from their enqueue.
        since = job.ready_at if job.dependencies is not None and job.ready_at else job.enqueued_at
        new_trace = (started - since).total_seconds() > self._settings.new_trace_after
        if not new_trace:
            dropped = self._sampled_out(job)
            if dropped is not None:
                self._read[id(job)] = _SAMPLED_OUT
                token = context.attach(trace.set_span_in_context(dropped))
                return After(partial(self._after_sampled_out, job, token))
        read = self._producer(job)
        self._read[id(job)] = read
        creation, creation_context, job_context = read
        span = self._start_process_span(event, creation_context, job_context, new_trace)
        # The processor runs in this worker's context plus the span (plus the producer's
        # baggage when propagation of baggage is on).
        current = trace.set_span_in_context(span)
        if creation is not None:  # the producer's baggage, when propagated
            for key, value in baggage.get_all(creation).items():
                current = baggage.set_baggage(key, value, current)
        token = context.attach(current)
        return After(partial(self._after_process, event, span, token))

    def _sampled_out(self, job: Job) -> DroppedSpan | None:
        """The attempt's span when the job's trace is known, from its headers' text, to be
        sampled out for its attempts and its job span alike (sampled_out.py); else None."""
        if (
            self._settings.propagate_baggage  # the producer's baggage must be read
            or job.manual_retries  # a rerun's job span is another one
            or (job.scheduler_id is not None and job.scheduled_for is not None)
        ):
            return None
        header = sampled_out_header(job.headers)
        if header is None or not self._tracers.drop_unsampled():
            return None
        return DroppedSpan(header, partial(dropped_context, self._tracers.main()))

    def _after_sampled_out(self, job: Job, token: object) -> None:
        self._read.pop(id(job), None)
        context.detach(token)  # type: ignore[arg-type]

    def _after_process(self, event: ProcessEvent, span: trace.Span, token: object) -> None:
        job = event.job
        try:
            self._end_process_span(span, event)
            pending = self._pending.pop(id(job), None)
            if pending is not None:
                self._record_job_span(*pending)
        finally:
            self._read.pop(id(job), None)
            context.detach(token)  # type: ignore[arg-type]

    def _start_process_span(
        self,
        event: ProcessEvent,
        creation_context: trace.SpanContext,
        job_context: trace.SpanContext | None,
        new_trace: bool,
    ) -> trace.Span:
        job = event.job
        remote: trace.SpanContext | None = None  # the parent; None: a trace of its own
        if new_trace:
            pass  # long after the enqueue: a new trace, linked back
        elif job_context is not None:
            remote = job_context
        elif creation_context.is_valid and self._settings.trace_mode == "parent":
            remote = creation_context
        tracer = self._tracers.main()
        recorded = None
        if remote is not None:
            recorded = self._tracers.by_parent(tracer, remote.trace_flags.sampled)
            if recorded is False:  # what the sampler would say, without asking it
                return self._tracers.dropped(tracer, remote)
        name = f"process {event.queue}"
        attributes = self._sampling_attributes(
            event.queue, event.server_address, event.server_port, "process"
        )
        if recorded and remote is not None:  # known to be recorded: all at the start
            attributes = {**attributes, **self._process_attributes(event)}
            links = self._process_links(job, creation_context, job_context, new_trace)
            # Kept out of the SDK unless the job's code touches it (light_spans.py).
            light = start_light_span(
                self._tracers.finished_spans(tracer),
                partial(_sdk_span, tracer),
                name,
                parent=remote,
                kind=SpanKind.CONSUMER,
                attributes=attributes,
                links=links,
            )
            if light is not None:
                return light
            return tracer.start_span(
                name,
                context=_remote_parent(remote),
                kind=SpanKind.CONSUMER,
                attributes=attributes,
                links=links,
            )
        parent = Context() if remote is None else _remote_parent(remote)
        span = tracer.start_span(
            name, context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        # The attempt's own attributes and links only for a span that is recorded
        # (links added after the start are not seen by this sampler).
        if span.is_recording():
            span.set_attributes(self._process_attributes(event))
            for link in self._process_links(job, creation_context, job_context, new_trace):
                span.add_link(link.context, link.attributes)
        return span

    def _process_attributes(self, event: ProcessEvent) -> dict[str, Any]:
        """A recorded attempt's own attributes (beyond those it starts with)."""
        job = event.job
        attributes: dict[str, Any] = {
            sc.MESSAGE_ID: job.id,
            sc.CLIENT_ID: event.worker_id,
            sc.JOB_NAME: job.name,
            sc.JOB_ATTEMPT: job.attempts_started,
            sc.JOB_MAX_ATTEMPTS: job.options.attempts,
        }
        if job.attempts_started == 1 and job.started_at is not None:
            attributes[sc.JOB_WAIT] = wait_seconds(job)
        if job.scheduler_id is not None:
            attributes[sc.SCHEDULER_ID] = job.scheduler_id
        return attributes

    def _process_links(
        self,
        job: Job,
        creation_context: trace.SpanContext,
        job_context: trace.SpanContext | None,
        new_trace: bool,
    ) -> list[Link]:
        """A recorded attempt's links: the producer, a flow parent's children, and the job
        span when the attempt starts a trace of its own."""
        links = [Link(creation_context)] if creation_context.is_valid else []
        links += _dependency_links(job)
        if new_trace and job_context is not None:
            links.append(Link(job_context))
        return links

    def _end_process_span(self, span: trace.Span, event: ProcessEvent) -> None:
        if not span.is_recording():
            span.end()
            return
        outcome = event.outcome or "interrupted"
        attributes: dict[str, Any] = {sc.JOB_OUTCOME: outcome}
        if event.delay is not None:
            attributes[sc.JOB_DELAY] = event.delay
        failed = outcome in FAILED_OUTCOMES and event.error is not None
        if failed:
            attributes[sc.ERROR_TYPE] = _error_type(event.error)  # type: ignore[arg-type]
        if isinstance(span, LightSpan):
            span.add_known_attributes(attributes)  # no SDK twin for these
        else:
            span.set_attributes(attributes)
        if failed:
            span.record_exception(event.error)  # type: ignore[arg-type]
            span.set_status(Status(StatusCode.ERROR, str(event.error)))
        span.end()

    # ------------------------------------------------------------------ operator side

    @contextmanager
    def around_operation(self, event: OperationEvent) -> Iterator[None]:
        """An operator's action is a span of its own, in the caller's trace (an admin
        request), never in the job's: an action on one job links to the job's trace."""
        attributes = self._base(event.queue, event.server_address, event.server_port)
        attributes[sc.OPERATION] = event.operation
        if event.actor is not None:
            attributes[sc.OPERATION_ACTOR] = event.actor
        if event.job_id is not None:
            attributes[sc.MESSAGE_ID] = event.job_id
        span = self._tracers.main().start_span(
            f"{event.operation} {event.queue}", kind=SpanKind.CLIENT, attributes=attributes
        )
        if event.operation == "upsert_scheduler":  # its runs link back to this span
            headers: dict[str, str] = {}
            inject_span(headers, span, with_baggage=self._settings.propagate_baggage)
            event.headers = headers
        try:
            with trace.use_span(span, end_on_exit=False):
                yield
        finally:
            if event.headers and event.operation != "upsert_scheduler":
                _, creation_context, job_context = self._producer_of(event.headers)
                for linked in (job_context, creation_context):
                    if linked is not None and linked.is_valid:
                        span.add_link(linked)
                        break
            if event.count is not None:
                span.set_attribute(sc.OPERATION_COUNT, event.count)
            if event.error is not None:
                span.set_attribute(sc.ERROR_TYPE, _error_type(event.error))
                span.record_exception(event.error)
                span.set_status(Status(StatusCode.ERROR, str(event.error)))
            span.end()

    @contextmanager
    def around_internal(self, event: InternalEvent) -> Iterator[None]:
        if not self._settings.suppress_internal:
            yield
            return
        with suppress_instrumentation():
            yield

    # ------------------------------------------------------------------ job spans

    def on_completed(self, event: JobEvent) -> None:
        self._job_outcome(event.queue, event.job, None, None)

    def on_cancelled(self, event: JobEvent) -> None:
        # An operator's decision, not an error: the job span's outcome says "cancelled".
        self._job_outcome(event.queue, event.job, None, None, outcome="cancelled")

    def on_failed(self, event: JobEvent) -> None:
        error = event.error
        self._job_outcome(
            event.queue,
            event.job,
            _error_type(error) if error else event.job.error_type or "_OTHER",
            str(error) if error else event.job.failed_reason,
        )

    def _job_outcome(
        self,
        queue: str,
        job: Job,
        error_type: str | None,
        message: str | None,
        outcome: str | None = None,
    ) -> None:
        read = self._read.get(id(job))
        if read is _SAMPLED_OUT:  # a dropped job span: nothing to record
            return
        if read is not None:  # inside the attempt: record once its span has ended
            self._pending[id(job)] = (queue, job, error_type, message, outcome)
        else:
            self._record_job_span(queue, job, error_type, message, outcome)

    def on_stalled(self, event: StalledEvent) -> None:
        for job in event.failed:
            self._record_job_span(event.queue, job, job.error_type or "_OTHER", job.failed_reason)

    def _record_job_span(
        self,
        queue: str,
        job: Job,
        error_type: str | None,
        message: str | None,
        outcome: str | None = None,
    ) -> None:
        _, creation_context, job_context = self._producer(job)
        tracer = self._tracers.jobs()
        if job_context is None or tracer is None:
            return
        same_trace = creation_context.is_valid and creation_context.trace_id == job_context.trace_id
        recorded = (
            self._tracers.by_parent(tracer, creation_context.trace_flags.sampled)
            if same_trace
            else None
        )
        if recorded is False:  # the sampler would drop it: a dropped span has no effect
            return
        attributes = self._sampling_attributes(queue, None, None, "job")
        links: list[Link] | None = None
        if recorded:  # known to be recorded: everything at the start, in one pass
            attributes = {**attributes, **self._job_attributes(job, error_type, outcome)}
            links = self._job_links(job, creation_context)
        start = _ns(job.enqueued_at)
        if (
            recorded
            and start is not None
            and self._tracers.finished_spans(tracer).record(
                f"job {queue}",
                # Recorded only in the producer's trace: its trace id is the job span's.
                child_context(creation_context, job_context.span_id, sampled=True),
                parent=creation_context,
                kind=SpanKind.INTERNAL,
                attributes=attributes,
                links=links or [],
                status=(
                    Status(StatusCode.ERROR, message or error_type) if error_type else UNSET_STATUS
                ),
                start_time=start,
                end_time=_job_end(job),
            )
        ):
            return  # recorded in one step, as the SDK's path below would have
        span = _sdk_span(
            tracer,
            f"job {queue}",
            job_context,
            parent=creation_context if same_trace else None,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            links=links or (),
            start_time=start,
        )
        if not span.is_recording():
            span.end()
            return
        if not recorded:
            span.set_attributes(self._job_attributes(job, error_type, outcome))
            for link in self._job_links(job, creation_context):
                span.add_link(link.context, link.attributes)
        if error_type is not None:
            span.set_status(Status(StatusCode.ERROR, message or error_type))
        span.end(end_time=_job_end(job))

    def _job_attributes(
        self, job: Job, error_type: str | None, outcome: str | None
    ) -> dict[str, Any]:
        """A recorded job span's own attributes (beyond those it starts with)."""
        attributes: dict[str, Any] = {
            sc.MESSAGE_ID: job.id,
            sc.JOB_NAME: job.name,
            sc.JOB_OUTCOME: outcome or ("failed" if error_type else "completed"),
            sc.JOB_ATTEMPT: job.attempts_started,
            sc.JOB_MAX_ATTEMPTS: job.options.attempts,
        }
        if job.scheduler_id is not None:
            attributes[sc.SCHEDULER_ID] = job.scheduler_id
        if error_type is not None:
            attributes[sc.ERROR_TYPE] = error_type
        return attributes

    def _job_links(self, job: Job, creation_context: trace.SpanContext) -> list[Link]:
        """A recorded job span's links: the producer, a flow parent's children, and for a
        run an operator asked for, the first run's span."""
        links: list[Link] = [Link(creation_context)] if creation_context.is_valid else []
        links += _dependency_links(job)
        if job.manual_retries:
            first_run = decode_span_context(job.headers.get(JOB_HEADER))
            if first_run is not None:
                links.append(Link(first_run))
        return links


_MAX_DEPENDENCY_LINKS = 100  # below the SDK's default limit of 128 links per span


def _dependency_links(job: Job) -> list[Link]:
    """A flow parent's spans link to each child's job span (or its creation, without
    one), the link carrying the child's outcome as the parent saw it when it started."""
    links: list[Link] = []
    for dependency in (job.dependencies or [])[:_MAX_DEPENDENCY_LINKS]:
        target = decode_span_context(dependency.headers.get(JOB_HEADER))
        if target is None:
            target = extract_span_context(dependency.headers)
        if target.is_valid:
            links.append(Link(target, {
                sc.DESTINATION: dependency.ref.queue,
                sc.MESSAGE_ID: dependency.ref.id,
                sc.DEPENDENCY_STATUS: dependency.status,
            }))  # fmt: skip
    return links


def _context_from(seed: str, flags: trace.TraceFlags) -> trace.SpanContext:
    """A remote span context whose ids are derived from ``seed`` (the same in every
    process): blake2b's first 16 bytes are the trace id, the next 8 the span id."""
    digest = hashlib.blake2b(seed.encode(), digest_size=24).digest()
    trace_id = int.from_bytes(digest[:16], "big") or 1
    span_id = int.from_bytes(digest[16:], "big") or 1
    return trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)


def rerun_context(first: trace.SpanContext, run: int) -> trace.SpanContext:
    """The job span of the ``run``-th run an operator asked for (``retry_job``): a trace of
    its own, with ids that every worker derives alike from the first run's span, so that
    its attempts, in any process, share that root. The first run's span has ended long
    ago and is not reused."""
    seed = f"{first.trace_id:032x}{first.span_id:016x}:{run}"
    return _context_from(seed, first.trace_flags)


def wait_seconds(job: Job) -> float:
    """How long the first attempt waited after the job became ready: its delay, a
    scheduler run's wait for its tick and a flow parent's wait for its children are
    not waiting for a worker."""
    if job.started_at is None:
        return 0.0
    ready = job.ready_at
    if ready is None:
        delay = job.options.delay
        ready = job.enqueued_at + timedelta(seconds=delay) if delay else job.enqueued_at
    return max(0.0, (job.started_at - ready).total_seconds())
