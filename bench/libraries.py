"""The libraries measured, their pinned versions and where they run.

Every library gets its own venv (``bench/.venvs/<venv>``) holding only it and what it
depends on: the peers pin conflicting versions of redis-py, and a development venv would
flatter no one (queue_core's has rich and the OpenTelemetry SDK, which structlog and
redis-py import when they find them). queue_core is this checkout, installed editable
(``PROJECT`` stands for its root), with the ``otel`` extra for the queue_otel row; its
deadlines-off and events-off rows share the plain queue_core venv.
``hiredis`` is installed next to every peer, pinned to the version queue_core gets
through ``redis[hiredis]``, so that every library parses Redis replies with the same C
parser.

The ``otel`` rows are the peers whose OpenTelemetry instrumentation exists on PyPI, in a
venv of their own (the peer's pins plus the instrumentation's): Celery
(``opentelemetry-instrumentation-celery``, OpenTelemetry's own), Dramatiq
(``opentelemetry-instrumentor-dramatiq``, a third party's; dramatiq ships none), taskiq (its
own ``taskiq.instrumentation``, the ``opentelemetry`` extra), arq
(``opentelemetry-instrumentation-arq``, a third party's, a pre-release) and RQ
(``opentelemetry-instrumentation-rq``, a third party's). SAQ and BullMQ (Python) have none.
"""

from __future__ import annotations

from dataclasses import dataclass

HIREDIS = "hiredis==3.5.0"
# The OpenTelemetry SDK of every ``otel`` row (the instrumentations need only the API; the
# set-up, bench/peers/_otel.py, needs the SDK): the newest release, which resolves with every
# instrumentation below; the API and the instrumentation base packages are whatever pip
# resolves with it (recorded in each row's freeze).
OTEL_SDK = "opentelemetry-sdk==1.45.2"
PROJECT = "{project}"  # this repository's root (an editable install of the checkout)


@dataclass(frozen=True)
class Library:
    key: str  # the row in the results
    label: str
    module: str  # bench.peers.<module>
    venv: str  # bench/.venvs/<venv>
    requirements: tuple[str, ...] = ()
    variant: str = ""
    phases: tuple[str, ...] | None = None  # None: every phase
    note: str = ""
    # An ``otel`` row: its OpenTelemetry instrumentation (the package); a library's plain
    # row: "none" when it has none to measure (else empty: its ``otel`` row says).
    instrumentation: str = ""

    @property
    def adapter(self) -> str:
        return f"bench.peers.{self.module}"


LIBRARIES: tuple[Library, ...] = (
    Library("queue_core", "queue_core", "queue_core", "queue_core", (f"-e {PROJECT}",)),
    Library(
        "queue_core+otel",
        "queue_core + queue_otel",
        "queue_core",
        "queue_core_otel",
        (f"-e {PROJECT}[otel]",),
        variant="otel",
        instrumentation="queue_otel",
        note="queue_core with its OpenTelemetry instrumentation on in producer and workers",
    ),
    Library(
        "queue_core+no_deadlines",
        "queue_core, no deadlines",
        "queue_core",
        "queue_core",
        (f"-e {PROJECT}",),
        variant="no_deadlines",
        note="queue_core with its per-call deadlines off (redis_timeout=None) in producer "
        "and workers; the queue_core row has them on (the default, 5 s)",
    ),
    Library(
        "queue_core+no_events",
        "queue_core, no events",
        "queue_core",
        "queue_core",
        (f"-e {PROJECT}",),
        variant="no_events",
        note="queue_core with its job events stream off (queue.set_events_max_length(0)); "
        "the queue_core row records every transition in the stream (the default)",
    ),
    Library("arq", "arq", "arq", "arq", ("arq==0.28.0", HIREDIS)),
    Library(
        "arq+otel",
        "arq + OpenTelemetry",
        "arq",
        "arq_otel",
        ("arq==0.28.0", HIREDIS, "opentelemetry-instrumentation-arq==0.50b1", OTEL_SDK),
        variant="otel",
        instrumentation="opentelemetry-instrumentation-arq",
        note="arq with opentelemetry-instrumentation-arq (a third party's, traces only) "
        "in producer and workers",
    ),
    Library(
        "saq",
        "SAQ",
        "saq",
        "saq",
        # saq 0.26.4 imports typing_extensions without declaring it.
        ("saq[redis,hiredis]==0.26.4", "typing_extensions==4.16.0"),
        note="saq 0.26.4 imports typing_extensions without declaring the dependency; "
        "installed explicitly",
        instrumentation="none",
    ),
    Library("rq", "RQ", "rq", "rq", ("rq==3.0.0", HIREDIS)),
    Library(
        "rq+otel",
        "RQ + OpenTelemetry",
        "rq",
        "rq_otel",
        ("rq==3.0.0", HIREDIS, "opentelemetry-instrumentation-rq==0.1.4", OTEL_SDK),
        variant="otel",
        instrumentation="opentelemetry-instrumentation-rq",
        note="RQ with opentelemetry-instrumentation-rq (a third party's, traces only) in "
        "producer and workers; it flushes the spans at the end of each job (in the work horse); "
        "written for RQ 2, it wraps three Job callback methods that RQ 3 moved: "
        "bench/peers/rq_otel.py gives them inert placeholders so that it installs",
    ),
    Library(
        "rq+simple",
        "RQ (SimpleWorker)",
        "rq",
        "rq",
        ("rq==3.0.0", HIREDIS),
        variant="simple",
        phases=("process1", "process2", "pickup"),
        note="RQ's SimpleWorker (no fork per job); only the worker figures differ from RQ",
    ),
    Library("celery", "Celery", "celery", "celery", ("celery[redis]==5.7.0", HIREDIS)),
    Library(
        "celery+otel",
        "Celery + OpenTelemetry",
        "celery",
        "celery_otel",
        (
            "celery[redis]==5.7.0",
            HIREDIS,
            "opentelemetry-instrumentation-celery==0.66b2",
            OTEL_SDK,
        ),
        variant="otel",
        instrumentation="opentelemetry-instrumentation-celery",
        note="Celery with opentelemetry-instrumentation-celery (traces and a task run-time "
        "histogram) in the producer and in the pool process (on worker_process_init)",
    ),
    Library("dramatiq", "Dramatiq", "dramatiq", "dramatiq", ("dramatiq[redis]==2.2.1", HIREDIS)),
    Library(
        "dramatiq+otel",
        "Dramatiq + OpenTelemetry",
        "dramatiq",
        "dramatiq_otel",
        (
            "dramatiq[redis]==2.2.1",
            HIREDIS,
            "opentelemetry-instrumentor-dramatiq==0.1.4",
            OTEL_SDK,
        ),
        variant="otel",
        instrumentation="opentelemetry-instrumentor-dramatiq",
        note="Dramatiq with opentelemetry-instrumentor-dramatiq (a third party's; dramatiq "
        "ships none; traces only) in producer and workers",
    ),
    Library(
        "taskiq", "taskiq", "taskiq", "taskiq", ("taskiq==0.13.0", "taskiq-redis==1.2.4", HIREDIS)
    ),
    Library(
        "taskiq+otel",
        "taskiq + OpenTelemetry",
        "taskiq",
        "taskiq_otel",
        ("taskiq[opentelemetry]==0.13.0", "taskiq-redis==1.2.4", HIREDIS, OTEL_SDK),
        variant="otel",
        instrumentation="taskiq[opentelemetry] (taskiq.instrumentation)",
        note="taskiq with its own OpenTelemetry middleware (taskiq.instrumentation, the "
        "opentelemetry extra: traces and metrics) on the broker in producer and workers",
    ),
    Library(
        "bullmq",
        "BullMQ (Python)",
        "bullmq",
        "bullmq",
        ("bullmq==3.4.4", HIREDIS),
        instrumentation="none",
    ),
)

BY_KEY = {library.key: library for library in LIBRARIES}
