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
"""

from __future__ import annotations

from dataclasses import dataclass

HIREDIS = "hiredis==3.5.0"
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
        "saq",
        "SAQ",
        "saq",
        "saq",
        # saq 0.26.4 imports typing_extensions without declaring it.
        ("saq[redis,hiredis]==0.26.4", "typing_extensions==4.16.0"),
        note="saq 0.26.4 imports typing_extensions without declaring the dependency; "
        "installed explicitly",
    ),
    Library("rq", "RQ", "rq", "rq", ("rq==3.0.0", HIREDIS)),
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
    Library("dramatiq", "Dramatiq", "dramatiq", "dramatiq", ("dramatiq[redis]==2.2.1", HIREDIS)),
    Library(
        "taskiq", "taskiq", "taskiq", "taskiq", ("taskiq==0.13.0", "taskiq-redis==1.2.4", HIREDIS)
    ),
    Library("bullmq", "BullMQ (Python)", "bullmq", "bullmq", ("bullmq==3.4.4", HIREDIS)),
)

BY_KEY = {library.key: library for library in LIBRARIES}
