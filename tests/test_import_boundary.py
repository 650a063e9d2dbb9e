"""queue_core stands alone: it imports and runs jobs with OpenTelemetry unavailable.

Instrumentation lives outside (``queue_otel``, through hooks). A child interpreter blocks
``opentelemetry`` and ``queue_otel`` with a ``sys.meta_path`` finder, imports every module
of queue_core, enqueues a job on a private Redis and processes it with a Worker.
import-linter's contract (pyproject.toml) checks the same boundary statically.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import redis

from queue_core.keys import QueueKeys

ROOT = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import asyncio
    import importlib
    import importlib.abc
    import json
    import pkgutil
    import sys

    BLOCKED = ("opentelemetry", "queue_otel")
    attempts = []  # (module, file of the code that imports it)


    def importer():
        frame = sys._getframe(2)
        while frame is not None:
            filename = frame.f_code.co_filename
            if not filename.startswith("<"):  # skip importlib's frozen frames and this file
                return filename
            frame = frame.f_back
        return "<this script>"


    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                attempts.append((name, importer()))
                raise ModuleNotFoundError(f"{name} is blocked for this test", name=name)
            return None


    def blocked_loaded():
        return sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)


    assert blocked_loaded() == [], f"already imported at start-up: {blocked_loaded()}"
    sys.meta_path.insert(0, Block())
    for name in BLOCKED:  # the finder is really in the way
        try:
            importlib.import_module(name)
        except ImportError:
            pass
        else:
            raise AssertionError(f"{name} was importable")
    probe_attempts = len(attempts)

    import queue_core
    from queue_core import Queue, Worker

    modules = sorted(
        info.name
        for info in pkgutil.walk_packages(queue_core.__path__, "queue_core.")
        if info.name != "queue_core.__main__"  # runs the command line when imported
    )
    for module in modules:
        importlib.import_module(module)


    async def main(url, name):
        queue = Queue(name, redis=url)
        job = await queue.add("hello", {"x": 1})

        async def process(job):
            return {"echo": job.data}

        async with Worker(name, process, redis=url, drain_delay=1, shutdown_timeout=5):
            for _ in range(500):
                if (await queue.get_counts())["completed"] == 1:
                    break
                await asyncio.sleep(0.02)
        done = await queue.get_job(job.id)
        await queue.close()
        return job.id, done.state.value, done.return_value


    job_id, state, result = asyncio.run(main(sys.argv[1], sys.argv[2]))
    print(json.dumps({
        "job_id": job_id,
        "state": state,
        "result": result,
        "modules": modules,
        "attempts": attempts[probe_attempts:],
        "queue_core_dir": queue_core.__path__[0],
        "blocked_loaded": blocked_loaded(),
    }))
    """
)


def test_queue_core_runs_without_opentelemetry(redis_url: str) -> None:
    name = f"boundary-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, redis_url, name],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["state"] == "completed"
    assert report["result"] == {"echo": {"x": 1}}
    assert report["blocked_loaded"] == []
    # queue_core never even tries: an optional import swallowed silently would show here.
    # (redis-py itself tries, from redis/observability, and copes: not our concern.)
    ours = [a for a in report["attempts"] if a[1].startswith(report["queue_core_dir"])]
    assert ours == [], ours
    assert "queue_core.worker" in report["modules"]
    assert "queue_core.scripts" in report["modules"]

    # Seen from outside the child: the job sits in the completed set of that queue.
    keys = QueueKeys(name)
    with redis.Redis.from_url(redis_url) as raw:
        assert raw.zscore(keys["completed"], report["job_id"]) is not None
        assert raw.zcard(keys["wait"]) == 0


def test_import_linter_contracts_hold() -> None:
    lint_imports = Path(sys.executable).parent / "lint-imports"
    assert lint_imports.exists(), f"import-linter is not installed next to {sys.executable}"
    proc = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "queue_core never imports OpenTelemetry, prometheus_client or queue_otel KEPT" in output
    assert (
        "queue_otel uses only queue_core's public API: the package, nothing under it KEPT" in output
    )
    assert "0 broken" in output
