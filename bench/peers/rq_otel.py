"""RQ's ``otel`` row, in the worker: ``rq worker --config bench.peers.rq_otel`` imports this
module in the worker's main process, before it forks a work horse per job.

It turns ``opentelemetry-instrumentation-rq`` (``RQInstrumentor``, a third party's) on with
the providers of ``bench/peers/_otel.py``, which it reads as the global ones; the work
horses inherit both (the SDK restarts the span processor's thread in each). It holds no
upper-case name, so RQ reads no setting from it; it imports neither the adapter nor
``_kit`` (which a work horse of the plain row imports only when its job runs).

opentelemetry-instrumentation-rq 0.1.4 (its newest release) was written for RQ 2: among
its wrappers are three of ``Job``'s callback methods (``execute_success_callback``,
``execute_failure_callback``, ``execute_stopped_callback``), which RQ 3 moved to functions
of ``rq.callbacks``, so its ``instrument()`` fails half-way on RQ 3.0.0. Its other wrappers
(enqueue, scheduling, dependencies, ``Worker.perform_job``, ``Job.perform``,
``Worker.handle_job_success``/``handle_job_failure``) resolve; so that ``instrument()``
completes, ``Job`` gets the three methods as placeholders that RQ 3 never calls. The
benchmark's jobs have no callbacks, for which those wrappers would do nothing anyway.
"""

from __future__ import annotations

from bench.peers import _otel

OTEL_PACKAGE = "opentelemetry-instrumentation-rq"
MOVED_IN_RQ3 = ("execute_success_callback", "execute_failure_callback", "execute_stopped_callback")


def _placeholder(self: object, *args: object, **kwargs: object) -> None:
    """Stands for a ``Job`` method that RQ 3 no longer has (and never calls)."""


def instrument() -> None:
    """Turn RQInstrumentor on in this process (once)."""
    from opentelemetry_instrumentation_rq import (  # type: ignore[import-not-found]  # noqa: PLC0415
        RQInstrumentor,
    )
    from rq.job import Job  # type: ignore[import-not-found]  # noqa: PLC0415

    for name in MOVED_IN_RQ3:
        if not hasattr(Job, name):
            setattr(Job, name, _placeholder)
    _otel.providers(with_metrics=False)
    instrumentor = RQInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


instrument()
