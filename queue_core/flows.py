"""Flows: a tree of jobs, in any queues, whose parents wait for their children.

A ``FlowNode`` describes a job and its children; ``FlowProducer.add`` adds the tree. A
parent sits in the ``waiting_children`` state until each child has an outcome, then waits
to run like any job, and reads its children's results with ``job.get_children_values()``
or ``job.get_dependencies()``. What a child's failure does to its parent is the child's
own policy (``FlowNode.on_failure``'s values are described at ``FailurePolicy``).

This module is the I/O-free part: checking a tree and encoding it for add_flow.lua
(``FlowPlan``), and decoding a parent's dependencies. Every job of a flow gets its id here,
before the add, so that the calls that add the tree's queues need nothing from each other.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

from queue_core.envelope import encode_envelope
from queue_core.errors import InvalidOptionError, PayloadTooLargeError
from queue_core.hooks import EnqueuedJob, EnqueueEvent
from queue_core.job import Job, JobRef, JobState, ms_to_datetime
from queue_core.options import JobOptions, check_job_id, check_name, to_ms
from queue_core.serializer import Serializer

if TYPE_CHECKING:
    from queue_core.job import JobBackend

__all__ = [
    "Dependency",
    "DependencyStatus",
    "FailurePolicy",
    "FlowJob",
    "FlowNode",
    "FlowPlan",
    "JobRef",
    "parse_dependencies",
]

FailurePolicy = Literal["wait", "fail_parent", "ignore", "remove"]
"""What a child's failure (for good: its attempts used up, or cancelled) does to its parent:

- ``wait`` (the default): the parent stays in ``waiting_children``, and the failure shows
  in ``get_dependencies()`` and ``get_flow()``; retrying the child (``retry_job``) or
  removing it (``remove_job``) lets the parent go on.
- ``fail_parent``: the parent fails at once with ``DependencyFailedError`` naming the
  child and its reason (and its own parent applies its own policy in turn).
- ``ignore``: the parent goes on as if the child had completed; ``get_dependencies()``
  lists the failure (status ``ignored``, with its reason).
- ``remove``: the parent goes on as if the child had never been there.
"""

_POLICY_WIRE: Mapping[str, str] = {
    "wait": "",
    "fail_parent": "fail",
    "ignore": "ignore",
    "remove": "remove",
}

DependencyStatus = Literal["pending", "completed", "failed", "ignored", "removed"]


@dataclass(frozen=True, slots=True)
class FlowNode:
    """One job of a flow and the children it waits for (in any queues).

    ``options`` are the job's (``JobOptions``; default ones if None); a parent cannot be
    delayed (it waits for its children instead) and no job of a flow takes a ``dedup``
    key. ``on_failure`` is what this job's failure does to its parent (``FailurePolicy``);
    it means nothing on the root.
    """

    name: str
    queue: str
    data: Any = None
    options: JobOptions | None = None
    children: Sequence[FlowNode] = ()
    on_failure: FailurePolicy = "wait"


@dataclass(slots=True)
class FlowJob:
    """A job of a flow with its children, as ``add`` made them or ``get_flow`` read them."""

    job: Job
    children: list[FlowJob] = field(default_factory=list)

    def walk(self) -> list[FlowJob]:
        """This node and every node below it, parents before their children."""
        out = [self]
        for child in self.children:
            out += child.walk()
        return out


@dataclass(frozen=True, slots=True)
class Dependency:
    """A child of a parent job, and its outcome as far as the parent knows it.

    ``value`` is a completed child's return value; ``failed_reason`` and ``error_type``
    a failed or ignored one's. ``headers`` are the child's envelope headers (its trace
    context), for instrumentation to link the parent to it.
    """

    ref: JobRef
    status: DependencyStatus
    value: Any = None
    failed_reason: str | None = None
    error_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


def parse_dependencies(reply: Sequence[Any], serializer: Serializer) -> list[Dependency]:
    """get_dependencies.lua's reply: the children's refs, then each one's outcome."""
    if not reply or not reply[0]:
        return []
    refs = [JobRef(str(queue), str(job_id)) for queue, job_id in orjson.loads(reply[0])]
    out: list[Dependency] = []
    for ref, raw in zip(
        refs, list(reply[1:]) + [None] * (len(refs) - len(reply) + 1), strict=False
    ):
        if not raw:
            out.append(Dependency(ref, "pending"))
            continue
        line, _, value = bytes(raw).partition(b"\n")
        head = orjson.loads(line)
        status = head.get("s")
        headers = head.get("h") or {}
        if status == "completed":
            out.append(Dependency(ref, "completed", serializer.loads(value) if value else None,
                                  headers=headers))  # fmt: skip
        else:
            out.append(Dependency(ref, status, None, head.get("e"), head.get("t"), headers))
    return out


# ----- adding a flow


@dataclass(slots=True)
class _Planned:
    node: FlowNode
    ref: JobRef
    options: JobOptions
    depth: int
    parent: _Planned | None
    children: list[_Planned]
    draft: EnqueuedJob


class FlowPlan:
    """A checked tree, each job with its id, grouped into add_flow calls.

    Hooks see one ``EnqueueEvent`` per queue (``events``) and may write each job's
    headers before ``calls()`` encodes the envelopes. Nothing is sent if anything in the
    tree is unfit (a bad name, a delayed parent, a payload over the cap).
    """

    def __init__(self, root: FlowNode) -> None:
        self.nodes: list[_Planned] = []
        self._ids: set[JobRef] = set()
        self.root = self._plan(root, None, 0)
        self.events: dict[str, EnqueueEvent] = {}
        for planned in self.nodes:
            event = self.events.setdefault(
                planned.ref.queue, EnqueueEvent(planned.ref.queue, [], True)
            )
            event.jobs.append(planned.draft)

    def _plan(self, node: FlowNode, parent: _Planned | None, depth: int) -> _Planned:
        if not isinstance(node, FlowNode):
            raise InvalidOptionError(
                f"a flow is made of FlowNode objects, not {type(node).__name__}"
            )
        name = check_name(node.name, "job name")
        queue = check_name(node.queue, "queue name")
        options = node.options if node.options is not None else JobOptions()
        if not isinstance(options, JobOptions):
            raise InvalidOptionError("FlowNode.options must be a JobOptions")
        if node.on_failure not in _POLICY_WIRE:
            raise InvalidOptionError(
                f"on_failure must be one of {', '.join(_POLICY_WIRE)}, got {node.on_failure!r}"
            )
        if options.dedup is not None:
            raise InvalidOptionError("the jobs of a flow take no dedup key")
        if node.children and options.delay:
            raise InvalidOptionError(
                f"job {name!r} has children, so it cannot be delayed: it waits for them"
            )
        job_id = check_job_id(options.job_id) if options.job_id else str(uuid.uuid4())
        ref = JobRef(queue, job_id)
        if ref in self._ids:
            raise InvalidOptionError(f"job id {job_id!r} appears twice in queue {queue!r}")
        self._ids.add(ref)
        planned = _Planned(node, ref, options, depth, parent, [],
                           EnqueuedJob(name, node.data, options))  # fmt: skip
        self.nodes.append(planned)
        planned.children = [self._plan(child, planned, depth + 1) for child in node.children]
        return planned

    @staticmethod
    def _group(planned: _Planned) -> tuple[bool, int, str]:
        """The call that adds a job: parents by depth, then the leaves; one per queue."""
        leaf = not planned.children
        return leaf, 0 if leaf else planned.depth, planned.ref.queue

    def calls(self, serializer: Serializer, max_payload_bytes: int) -> list[tuple[str, list[Any]]]:
        """(queue, add_flow ARGV) per call, in ``_group`` order: parents before their
        children, and no job that can run before every parent exists."""
        groups: dict[tuple[bool, int, str], list[Any]] = {}
        for planned in self.nodes:
            draft, options = planned.draft, planned.options
            envelope = encode_envelope(
                draft.name, options.to_wire(), draft.headers, serializer.dumps(draft.data)
            )
            if len(envelope) > max_payload_bytes:
                raise PayloadTooLargeError(len(envelope), max_payload_bytes)
            keep = []
            for policy in (options.remove_on_complete, options.remove_on_fail):
                keep += [-1 if policy.count is None else policy.count,
                         -1 if policy.age is None else to_ms(policy.age)]  # fmt: skip
            parent = planned.parent
            children = (
                orjson.dumps([[c.ref.queue, c.ref.id] for c in planned.children]).decode()
                if planned.children
                else ""
            )
            groups.setdefault(self._group(planned), []).extend([
                planned.ref.id, envelope, options.priority, int(options.lifo),
                to_ms(options.delay), *keep, parent.ref.wire() if parent else "",
                _POLICY_WIRE[planned.node.on_failure] if parent else "", children,
            ])  # fmt: skip
        return [(queue, [len(args) // 12, *args]) for (_, _, queue), args in sorted(groups.items())]

    def result(self, replies: Sequence[Any], backend_for: Any) -> FlowJob:
        """The tree of jobs from the calls' replies (in ``calls()`` order)."""
        by_ref: dict[JobRef, tuple[int, str, int]] = {}
        keys = sorted({self._group(p) for p in self.nodes})
        for (_, _, queue), reply in zip(keys, replies, strict=True):
            now = int(reply[0])
            for item in reply[1:]:
                by_ref[JobRef(queue, item[0].decode())] = (int(item[1]), item[2].decode(), now)

        def build(planned: _Planned) -> FlowJob:
            created, state, now = by_ref[planned.ref]
            draft = planned.draft
            draft.job_id, draft.duplicate = planned.ref.id, not created
            draft.state = JobState(state)
            backend: JobBackend | None = backend_for(planned.ref.queue)
            enqueued_at = ms_to_datetime(now)
            assert enqueued_at is not None
            delay_ms = to_ms(planned.options.delay)
            job = Job(
                id=planned.ref.id,
                name=draft.name,
                data=draft.data,
                queue_name=planned.ref.queue,
                options=planned.options,
                headers=dict(draft.headers),
                state=JobState(state),
                enqueued_at=enqueued_at,
                delayed_until=ms_to_datetime(now + delay_ms) if state == "delayed" else None,
                deduplicated=not created,
                parent=planned.parent.ref if planned.parent else None,
                _backend=backend,
            )
            return FlowJob(job, [build(child) for child in planned.children])

        return build(self.root)
