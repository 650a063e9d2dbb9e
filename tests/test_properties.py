"""Property-based tests against a real Redis.

1. Run order: for any mix of priorities and LIFO flags, jobs wait in the order "highest
   priority first; within a priority, LIFO jobs newest first, then FIFO jobs oldest first".
2. A state machine drives the real scripts as two competing workers (fetch, complete,
   fail, retry, stale settles, lock expiry, stalled recovery, delayed promotion) and checks
   after every step that the queue agrees with a model: each job in exactly one state,
   counts and attempt counters right, stale lock tokens never settle anything.
Time is the only thing simulated: a lock expiry or a due date is forced by rewriting a
score, since a test cannot wait out real deadlines at every step.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from queue_core import JobOptions, JobSpec, SyncQueue
from queue_core.commands import ALREADY_SETTLED, LOCK_LOST, SETTLED, parse_fetch, parse_settle
from queue_core.scripts import load_script, run_script_sync
from tests.redis_server import RedisServer

_server: RedisServer | None = None


def server_url() -> str:
    # Hypothesis runs examples outside pytest's fixture scope; one server per module.
    global _server  # noqa: PLW0603
    if _server is None:
        _server = RedisServer().start()
    return _server.url


def teardown_module() -> None:
    if _server is not None:
        _server.cleanup()


@given(st.lists(st.tuples(st.integers(-2, 2), st.booleans()), min_size=1, max_size=25))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_wait_order_matches_the_model(plan: list[tuple[int, bool]]) -> None:
    with SyncQueue(f"order-{uuid.uuid4().hex}", redis=server_url()) as queue:
        queue.add_bulk(
            [JobSpec("x", i, JobOptions(priority=p, lifo=lf)) for i, (p, lf) in enumerate(plan)]
        )
        actual = [job.data for job in queue.get_jobs("waiting")]

    def rank(item: tuple[int, tuple[int, bool]]) -> tuple[int, int, int]:
        index, (priority, lifo) = item
        return (-priority, 0 if lifo else 1, -index if lifo else index)

    expected = [index for index, _ in sorted(enumerate(plan), key=rank)]
    assert actual == expected


BAND = 2**32
HALF = 2**31
FAR_FUTURE_MS = 10**12 * 9  # a due date nobody reaches during the test


@dataclass
class ModelJob:
    id: str
    priority: int
    lifo: bool
    state: str = "waiting"
    score: int = 0  # its score in wait (the run order)
    token: str | None = None
    ats: int = 0
    atm: int = 0
    stc: int = 0
    front: bool = False
    due_rank: int = 0  # when forced due, the order of promotion


@dataclass
class Model:
    jobs: dict[str, ModelJob] = field(default_factory=dict)
    fifo: int = 0
    lifo: int = 0

    def enter_wait(self, job: ModelJob, front: bool) -> None:
        band = (1_000_000 - job.priority) * BAND
        if front:
            self.lifo += 1
            job.score = band + HALF - self.lifo
        else:
            self.fifo += 1
            job.score = band + HALF + self.fifo
        job.state = "waiting"

    def next_waiting(self) -> ModelJob | None:
        waiting = [j for j in self.jobs.values() if j.state == "waiting"]
        return min(waiting, key=lambda j: j.score) if waiting else None

    def promote_due(self) -> None:
        due = sorted(
            (j for j in self.jobs.values() if j.state == "delayed" and j.due_rank),
            key=lambda j: j.due_rank,
        )
        for job in due:
            self.enter_wait(job, job.front or job.lifo)
            job.front = False
            job.due_rank = 0


MAX_STALLED = 1


class QueueMachine(RuleBasedStateMachine):
    jobs = Bundle("jobs")

    @initialize()
    def setup(self) -> None:
        self.client = redis.Redis.from_url(server_url())
        self.queue = SyncQueue(f"sm-{uuid.uuid4().hex}", redis=self.client)
        self.keys = self.queue.keys
        self.model = Model()
        self.due_counter = 0
        self.stale_tokens: list[tuple[str, str]] = []

    def teardown(self) -> None:
        if hasattr(self, "client"):
            self.client.close()

    def call(self, name: str, args: list[Any]) -> Any:
        return run_script_sync(self.client, load_script(name), self.keys, args)

    def fetch_args(self, worker: str, count: int) -> list[Any]:
        return [count, worker, 60_000, 0, 0]

    @rule(target=jobs, priority=st.integers(-1, 1), lifo=st.booleans())
    def add(self, priority: int, lifo: bool) -> str:
        job = self.queue.add("x", None, priority=priority, lifo=lifo)
        model_job = ModelJob(job.id, priority, lifo)
        self.model.jobs[job.id] = model_job
        self.model.enter_wait(model_job, lifo)
        return job.id

    @rule(worker=st.sampled_from(["A", "B"]))
    def fetch(self, worker: str) -> None:
        self.model.promote_due()
        expected = self.model.next_waiting()
        fetched = parse_fetch(self.call("move_to_active", self.fetch_args(worker, 1)))
        if expected is None:
            assert fetched.jobs == []
            return
        assert [j[0] for j in fetched.jobs] == [expected.id]
        expected.state = "active"
        expected.ats += 1
        expected.token = f"{worker}:{expected.ats}"
        assert json.loads(fetched.jobs[0][2])["tok"] == expected.token

    def active_job(self, job_id: str) -> ModelJob | None:
        job = self.model.jobs.get(job_id)
        return job if job is not None and job.state == "active" else None

    def settle(self, script: str, job: ModelJob, token: str, extra: list[Any]) -> int:
        reply = self.call(script, [job.id, token, *extra, *self.fetch_args("A", 0)])
        self.model.promote_due()
        return parse_settle(reply).status

    @rule(job_id=jobs)
    def complete(self, job_id: str) -> None:
        job = self.active_job(job_id)
        if job is None or job.token is None:
            return
        status = self.settle("move_to_completed", job, job.token, [b'"ok"'])
        assert status == SETTLED
        self.stale_tokens.append((job.id, job.token))
        job.state, job.atm = "completed", job.atm + 1

    @rule(job_id=jobs)
    def fail(self, job_id: str) -> None:
        job = self.active_job(job_id)
        if job is None or job.token is None:
            return
        error = json.dumps({"type": "E", "message": "m", "stack": ""})
        assert self.settle("move_to_failed", job, job.token, [error]) == SETTLED
        self.stale_tokens.append((job.id, job.token))
        job.state, job.atm = "failed", job.atm + 1

    @rule(job_id=jobs, counts=st.booleans())
    def retry_later(self, job_id: str, counts: bool) -> None:
        """A failed attempt with backoff (counts) or a DelayedError (does not)."""
        job = self.active_job(job_id)
        if job is None or job.token is None:
            return
        args = [FAR_FUTURE_MS, "abs", int(counts), "", 0, 0]
        assert self.settle("move_to_delayed", job, job.token, args) == SETTLED
        self.stale_tokens.append((job.id, job.token))
        job.state, job.atm = "delayed", job.atm + int(counts)

    @precondition(lambda self: bool(self.stale_tokens))
    @rule(data=st.data())
    def stale_settle_is_rejected(self, data: st.DataObject) -> None:
        job_id, token = data.draw(st.sampled_from(self.stale_tokens))
        job = self.model.jobs[job_id]
        status = self.settle("move_to_completed", job, token, [b'"stale"'])
        # The very token that settled the job last may see "already settled"; any older
        # one, or one cleared by stalled recovery, sees "lock lost". Nothing changes.
        assert status in (LOCK_LOST, ALREADY_SETTLED)
        if job.token != token:
            assert status == LOCK_LOST

    @rule(job_id=jobs)
    def make_due(self, job_id: str) -> None:
        job = self.model.jobs.get(job_id)
        if job is None or job.state != "delayed":
            return
        self.due_counter += 1
        self.client.zadd(self.keys["delayed"], {job.id: self.due_counter})
        job.due_rank = self.due_counter

    @rule(job_id=jobs)
    def lock_expires(self, job_id: str) -> None:
        job = self.active_job(job_id)
        if job is None:
            return
        self.client.zadd(self.keys["active"], {job.id: 0})  # as if its deadline passed
        requeued, failed, quarantined, cancelled = self.call("recover_stalled", [MAX_STALLED, 1000])
        assert quarantined == [] and cancelled == []  # no cancel is ever requested here
        assert [i.decode() for i in requeued + failed] == [job.id]
        if job.token is not None:
            self.stale_tokens.append((job.id, job.token))
        job.token = None
        job.stc += 1
        if job.stc > MAX_STALLED:
            assert failed and not requeued
            job.state = "failed"
        else:
            self.model.enter_wait(job, False)

    @invariant()
    def queue_matches_model(self) -> None:
        if not hasattr(self, "model"):
            return
        sets = {"waiting": "wait", "active": "active", "delayed": "delayed",
                "completed": "completed", "failed": "failed"}  # fmt: skip
        pipe = self.client.pipeline(transaction=True)
        for key in sets.values():
            pipe.zrange(self.keys[key], 0, -1)
        pipe.hgetall(self.keys["state"])
        *members, records = pipe.execute()
        where: dict[str, list[str]] = {}
        for state, ids in zip(sets, members, strict=True):
            for raw_id in ids:
                where.setdefault(raw_id.decode(), []).append(state)
        assert {i: [j.state] for i, j in self.model.jobs.items()} == where
        for raw_id, raw_record in records.items():
            record = json.loads(raw_record)
            job = self.model.jobs[raw_id.decode()]
            counters = (record.get("ats", 0), record.get("atm", 0), record.get("stc", 0))
            assert counters == (job.ats, job.atm, job.stc), job
        waiting = self.client.zrange(self.keys["wait"], 0, -1, withscores=True)
        assert [(m.decode(), int(s)) for m, s in waiting] == sorted(
            ((j.id, j.score) for j in self.model.jobs.values() if j.state == "waiting"),
            key=lambda pair: pair[1],
        )


QueueMachine.TestCase.settings = settings(
    max_examples=40, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
test_queue_state_machine = QueueMachine.TestCase

_ = consumes  # kept importable for future rules that remove jobs
