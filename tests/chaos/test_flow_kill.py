"""SIGKILL a worker while it holds a flow child: the child comes back through stalled
recovery and completes on another worker, its outcome reaches the parent once, and the
parent (in its own queue, with its own worker) runs once, after every child."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Callable

import pytest

from queue_core import FlowJob, FlowNode, FlowProducer, JobOptions, JobState, SyncQueue
from tests.chaos.support import (
    WorkerProcess,
    count_by_job,
    plain_client,
    wait_for_hooks,
)
from tests.chaos.worker_process import COMPLETED, FINISHED, RUNS
from tests.redis_server import RedisServer
from tests.waiting import wait_until

N_CHILDREN = 4
CHILD_SLEEP = 1.5  # long enough that the kill lands inside a run
TIMINGS = {"lock_duration": 1.0, "stalled_interval": 0.3, "drain_delay": 1.0}


@pytest.mark.chaos
def test_a_worker_killed_holding_a_child_leaves_its_parent_to_run_once(
    chaos_redis: RedisServer,
    chaos_queue: str,
    spawn_worker: Callable[..., WorkerProcess],
) -> None:
    children_queue, parents_queue = chaos_queue, f"{chaos_queue}-parents"
    with (
        plain_client(chaos_redis.url) as client,
        SyncQueue(children_queue, redis=client) as children,
        SyncQueue(parents_queue, redis=client) as parents,
    ):
        workers = {
            tag: spawn_worker(chaos_redis.url, children_queue, tag, **TIMINGS) for tag in "AB"
        }
        workers["P"] = spawn_worker(chaos_redis.url, parents_queue, "P", **TIMINGS)
        for worker in workers.values():
            worker.wait_ready()

        child_options = JobOptions(attempts=3, remove_on_complete=False)
        root = FlowNode(
            "album",
            parents_queue,
            {"sleep": 0},
            JobOptions(remove_on_complete=False),
            children=[
                FlowNode(
                    "image",
                    children_queue,
                    {"i": i, "sleep": CHILD_SLEEP, "later_sleep": 0.1},
                    child_options,
                )
                for i in range(N_CHILDREN)
            ],
        )

        async def add() -> FlowJob:
            async with FlowProducer(redis=chaos_redis.url) as producer:
                return await producer.add(root)

        flow = asyncio.run(add())
        parent_id = flow.job.id
        child_ids = {node.job.id for node in flow.children}
        assert len(child_ids) == N_CHILDREN

        def held_by_a() -> str | None:
            """A child that A is running now: started by A, not finished, still active."""
            active = {job.id for job in children.get_jobs(JobState.ACTIVE)}
            finished = count_by_job(client, children_queue, FINISHED)
            for job_id, runs in count_by_job(client, children_queue, RUNS, "A").items():
                if runs == 1 and job_id in active and not finished[job_id]:
                    return job_id
            return None

        killed = wait_until(
            held_by_a, timeout=10, interval=0.01, what="worker A to be running a child"
        )
        assert killed is not None
        workers["A"].signal(signal.SIGKILL)
        assert workers["A"].wait(timeout=10) == -signal.SIGKILL
        # A command A sent just before it died (a lock extension) may still run: it
        # delays the recovery a little and changes nothing checked here.
        at_kill = children.get_job(killed)
        assert at_kill is not None and at_kill.state is JobState.ACTIVE, at_kill
        assert not count_by_job(client, children_queue, FINISHED)[killed]
        parent_at_kill = parents.get_job(parent_id)
        assert parent_at_kill is not None
        assert parent_at_kill.state is JobState.WAITING_CHILDREN

        # The parent completes: P ran it once, after every child had completed.
        value = parents.wait_until_finished(parent_id, timeout=20)
        assert value == {"worker": "P", "pid": workers["P"].pid, "attempt": 1}
        wait_for_hooks(client, parents_queue, [parent_id])
        wait_for_hooks(client, children_queue, child_ids)
        assert count_by_job(client, parents_queue, RUNS) == {parent_id: 1}
        assert count_by_job(client, parents_queue, COMPLETED) == {parent_id: 1}

        # Every child completed once; the killed one ran twice: on A, then on B.
        runs = count_by_job(client, children_queue, RUNS)
        runs_a = count_by_job(client, children_queue, RUNS, "A")
        assert count_by_job(client, children_queue, COMPLETED) == dict.fromkeys(child_ids, 1)
        assert runs == {job_id: 2 if job_id == killed else 1 for job_id in child_ids}
        assert runs_a == {killed: 1}  # A ran nothing else: it died in its first run
        for job_id in child_ids:
            job = children.get_job(job_id)
            assert job is not None and job.state is JobState.COMPLETED, job
            assert job.parent == flow.job.ref
            assert job.attempts_made == 1, job
            if job_id == killed:
                assert (job.stalled_count, job.attempts_started) == (1, 2), job
                assert job.return_value == {
                    "worker": "B",
                    "pid": workers["B"].pid,
                    "attempt": 2,
                }
            else:
                assert (job.stalled_count, job.attempts_started) == (0, 1), job
                assert job.return_value["worker"] == "B"
        requeued = {
            job_id
            for event in workers["B"].events("stalled_jobs_recovered")
            for job_id in event["requeued"]
        }
        assert requeued == {killed}

        # get_flow: the whole tree completed, every child under the parent.
        tree = parents.get_flow(parent_id)
        assert tree is not None
        assert {node.job.id for node in tree.children} == child_ids
        assert [node.job.state for node in tree.walk()] == [JobState.COMPLETED] * (1 + N_CHILDREN)
        parent = tree.job
        assert (parent.attempts_started, parent.attempts_made, parent.stalled_count) == (1, 1, 0)
        last_child_done = max(
            node.job.finished_at for node in tree.children if node.job.finished_at
        )
        assert parent.ready_at is not None and parent.started_at is not None
        assert last_child_done <= parent.ready_at <= parent.started_at

        # The parent's dependencies: each child completed, with its return value.
        dependencies = parents.get_dependencies(parent_id)
        assert {d.ref.id for d in dependencies} == child_ids
        assert {d.ref.queue for d in dependencies} == {children_queue}
        by_id = {node.job.id: node.job for node in tree.children}
        for dependency in dependencies:
            assert dependency.status == "completed", dependency
            assert dependency.value == by_id[dependency.ref.id].return_value

        # The parent's events: each child's outcome arrived, the parent was released and
        # ran once; nothing is left in either queue's outbox or waiting for children.
        events = [
            {k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in client.xrange(parents.keys["events"])
            if fields.get(b"id") == parent_id.encode()
        ]
        kinds = Counter(event["event"] for event in events)
        assert kinds["active"] == 1 and kinds["completed"] == 1, events
        assert [e.get("from") for e in events if e["event"] == "waiting"] == ["waiting_children"]
        outcomes = {e["child"]: e["outcome"] for e in events if e["event"] == "dependency"}
        assert {d.ref.wire(): "completed" for d in dependencies} == outcomes
        # (B acknowledges the last outcome just after delivering it: P may be faster.)
        wait_until(
            lambda: all(
                client.hlen(q.keys["outbox"]) == client.zcard(q.keys["outboxat"]) == 0
                for q in (children, parents)
            ),
            timeout=5,
            what="the outboxes to be empty",
        )
        assert parents.get_counts()["waiting_children"] == 0
        assert children.get_counts() == {
            "waiting": 0,
            "active": 0,
            "delayed": 0,
            "completed": N_CHILDREN,
            "failed": 0,
            "waiting_children": 0,
        }
        for tag in "BP":
            assert not workers[tag].events("job_lock_lost"), tag
