"""The worker command's parts in-process: what a target may be, the reload watcher, the
probe's answers (test_worker_cli.py runs the command itself)."""

from __future__ import annotations

import os
import sys
import time
import types
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from queue_core import Worker
from queue_core.cli.health import Probe
from queue_core.cli.supervisor import FileWatcher
from queue_core.cli.target import (
    BadTargetError,
    TargetCodeError,
    WorkerSettings,
    load_target,
)
from tests.cli import jobs_fixture

FIXTURE = "tests.cli.jobs_fixture"


async def test_targets_of_each_kind_build_their_workers(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    monkeypatch.setenv("CLI_TEST_QUEUE", "parts")
    monkeypatch.setenv("REDIS_URL", redis_url)
    settings = WorkerSettings(queues=("a", "b"), concurrency=4, prefix="px")
    objects = types.ModuleType("cli_objects")
    objects.one = Worker("one", jobs_fixture.process)  # type: ignore[attr-defined]
    objects.pair = (Worker("x", jobs_fixture.process), Worker("y", jobs_fixture.process))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cli_objects", objects)

    built: dict[str, list[tuple[str, int, str]]] = {}
    async with AsyncExitStack() as stack:
        for spec, given in [
            (f"{FIXTURE}:process", settings),
            (f"{FIXTURE}:processors", settings),  # a mapping of job names to processors
            (f"{FIXTURE}:workers", None),
            (f"{FIXTURE}:managed", None),
            ("cli_objects:one", None),
            ("cli_objects:pair", None),
        ]:
            workers = await load_target(spec, given).build(stack)
            built[spec] = [(w.name, w.concurrency, w.keys.prefix) for w in workers]
            for w in workers:
                await w.client.aclose()
    assert built == {
        f"{FIXTURE}:process": [("a", 4, "px"), ("b", 4, "px")],
        f"{FIXTURE}:processors": [("a", 4, "px"), ("b", 4, "px")],
        f"{FIXTURE}:workers": [("parts", 2, "qc")],
        f"{FIXTURE}:managed": [("parts", 1, "qc"), ("parts-b", 1, "qc")],
        "cli_objects:one": [("one", 1, "qc")],
        "cli_objects:pair": [("x", 1, "qc"), ("y", 1, "qc")],
    }


@pytest.mark.parametrize(
    ("spec", "queues", "message"),
    [
        ("tests.cli.jobs_fixture", False, "is not MODULE:ATTRIBUTE"),
        ("tests.cli.no_such:worker", False, "no module named 'tests.cli.no_such'"),
        ("no_such_package.jobs:worker", False, "no module named 'no_such_package'"),
        (f"{FIXTURE}:nothing", False, "has no 'nothing'"),
        (f"{FIXTURE}:number", False, "is of type int: expected a Worker"),
        (f"{FIXTURE}:not_a_factory", False, "name its queue with --queue"),
        (f"{FIXTURE}:workers", True, "does not take the job as its argument"),
        (f"{FIXTURE}:number", True, "is of type int: with --queue"),
        (f"{FIXTURE}:TIMINGS", True, "not of job names to processors"),
    ],
)
def test_a_bad_target_is_one_line(spec: str, queues: bool, message: str) -> None:
    with pytest.raises(BadTargetError, match=message):
        load_target(spec, WorkerSettings(queues=("q",)) if queues else None)


def test_a_worker_with_queue_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = types.ModuleType("cli_worker_object")
    objects.worker = Worker("w", jobs_fixture.process)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cli_worker_object", objects)
    with pytest.raises(BadTargetError, match="names its own queue: drop --queue"):
        load_target("cli_worker_object:worker", WorkerSettings(queues=("q",)))


async def test_the_targets_own_code_failing_shows_its_traceback() -> None:
    with pytest.raises(TargetCodeError) as raised:
        load_target("tests.cli.broken_fixture:x", None)
    assert str(raised.value) == "cannot import tests.cli.broken_fixture: KeyError: 'missing'"
    assert raised.value.details.startswith("Traceback (most recent call last):\n")
    assert "broken_fixture.py" in raised.value.details
    assert "importlib" not in raised.value.details
    # A dependency the module imports is missing: its code failed, not a typo in the target.
    with pytest.raises(TargetCodeError, match="No module named 'no_such_dependency"):
        load_target("tests.cli.missing_dependency_fixture:x", None)

    async with AsyncExitStack() as stack:
        factory = load_target(f"{FIXTURE}:failing_factory", None)
        with pytest.raises(TargetCodeError) as raised:
            await factory.build(stack)
        assert str(raised.value) == (
            f"{FIXTURE}:failing_factory() raised: ValueError: the factory could not read its "
            "settings"
        )
        assert "in failing_factory" in raised.value.details
        assert "queue_core" not in raised.value.details
        with pytest.raises(BadTargetError, match=r"bad_factory\(\) gave a value of type str"):
            await load_target(f"{FIXTURE}:bad_factory", None).build(stack)


def test_the_watcher_sees_python_files_added_changed_and_removed(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    jobs = tmp_path / "app" / "jobs.py"
    jobs.write_text("x = 1\n")
    for skipped in (".venv", "__pycache__", "node_modules"):
        (tmp_path / skipped).mkdir()
    watcher = FileWatcher(tmp_path)
    assert watcher.changed() is None

    (tmp_path / "notes.txt").write_text("not python")
    (tmp_path / ".venv" / "lib.py").write_text("")
    (tmp_path / "__pycache__" / "x.py").write_text("")
    assert watcher.changed() is None
    later = time.time() + 2
    os.utime(jobs, (later, later))
    assert watcher.changed() == str(jobs)
    assert watcher.changed() is None
    added = tmp_path / "app" / "new.py"
    added.write_text("")
    assert watcher.changed() == str(added)
    added.unlink()
    assert watcher.changed() == str(added)


def test_the_probe_answers_from_the_last_beat() -> None:
    probe = Probe("127.0.0.1", 0, max_lag=0.2)
    assert probe.answer("/livez")[0] == 200  # alive from the start (connecting)
    assert probe.answer("/readyz")[0] == 503
    state = {"queue": "q", "running": True, "healthy": True}
    probe.beat(True, (state,))
    code, body = probe.answer("/readyz")
    assert (code, body["status"], body["workers"]) == (200, "ok", [state])
    probe.beat(False, ({**state, "healthy": False},))
    assert probe.answer("/readyz")[1]["status"] == "workers not ready"
    assert probe.answer("/livez")[0] == 200
    time.sleep(0.3)
    code, body = probe.answer("/livez")
    assert (code, body["status"]) == (503, "event loop stuck")
    assert probe.answer("/readyz")[1]["status"] == "event loop stuck"
    assert probe.answer("/nope")[0] == 404
