"""The README's remaining snippets run as written, each judged by its effects.

A block that only defines things (a Worker, a hook, a logging set-up) runs with a few
lines of driver code after it; a block that is a module (``app/hashes.py``,
``app/jobs.py``) is written to a temporary project and run by ``queue-core worker``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from queue_core import Job, JobSpec, Queue, SyncQueue
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
QUEUE_CORE = Path(sys.executable).with_name("queue-core")


def blocks(heading: str, *, subsections: bool = True) -> list[str]:
    """The python blocks under a heading (``## X`` or ``### X``), dedented."""
    text = (ROOT / "README.md").read_text()
    level = "### " if f"\n### {heading}\n" in text else "## "
    section = text.split(f"\n{level}{heading}\n", 1)[1]
    section = re.split(r"\n##+ " if not subsections else r"\n## ", section, maxsplit=1)[0]
    found = re.findall(r"^( *)```python\n(.*?)^ *```", section, flags=re.DOTALL | re.MULTILINE)
    return [textwrap.dedent(body) for _, body in found]


def python(code: str, redis_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "REDIS_URL": redis_url, **env},
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def burst_worker(project: Path, target: str, redis_url: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(QUEUE_CORE), "worker", target, "--burst"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "REDIS_URL": redis_url, "QUEUE_CORE_LOG_FORMAT": "json"},
        cwd=project,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def write_module(project: Path, code: str) -> str:
    """Write a block whose first line is ``# app/x.py...`` to that path; return its name."""
    match = re.match(r"# (app/\w+)\.py", code)
    assert match, code
    path = project / f"{match.group(1)}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "__init__.py").touch()
    path.write_text(code)
    return match.group(1).replace("/", ".")


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    redis_server = RedisServer().start()
    yield redis_server
    redis_server.cleanup()


def test_the_worker_options_build_a_worker(server: RedisServer) -> None:
    options, _hashes = blocks("Workers")
    shown = python(
        options + "print(worker.name, worker.concurrency, worker.limiter, worker.pool,"
        " my_backoff(3, RuntimeError(), None))",
        server.url,
    )
    assert shown.stdout.split("\n")[0] == "emails 10 RateLimit(max=50, duration=60.0) thread 8.0"


def test_the_process_pool_module_runs_under_queue_core_worker(
    server: RedisServer, tmp_path: Path
) -> None:
    _options, code = blocks("Workers")
    module = write_module(tmp_path, code)
    with SyncQueue("hashes", redis=server.url) as queue:
        job = queue.add("fingerprint", {"text": "abc", "rounds": 3})
        burst_worker(tmp_path, f"{module}:worker", server.url)
        done = queue.get_job(job.id)
        assert done is not None
        digest = b"abc"
        for _ in range(3):
            digest = hashlib.sha256(digest).digest()
        assert (done.state, done.return_value) == ("completed", digest.hex())
        assert asyncio.run(job_logs(server.url, "hashes", done)) == ["hashed"]
        queue.obliterate(force=True)


async def job_logs(redis_url: str, name: str, job: Job) -> list[str]:
    async with Queue(name, redis=redis_url) as queue:
        return await queue.get_logs(job)


class Recorder(BaseHTTPRequestHandler):
    posts: ClassVar[list[tuple[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.posts.append((self.path, json.loads(body)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_the_factory_module_runs_under_queue_core_worker(
    server: RedisServer, tmp_path: Path
) -> None:
    (code,) = blocks("Running workers")
    module = write_module(tmp_path, code)
    http = HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{http.server_port}/hook"
    try:
        with SyncQueue("webhooks", redis=server.url) as queue:
            job = queue.add("notify", {"url": url, "body": {"order": 42}})
            burst_worker(tmp_path, f"{module}:workers", server.url)
            done = queue.get_job(job.id)
            assert done is not None and done.state == "completed", done
            queue.obliterate(force=True)
    finally:
        http.shutdown()
        http.server_close()
    assert Recorder.posts == [("/hook", {"order": 42})]


HOOK_DRIVER = """
import asyncio
from queue_core import Queue, Worker

async def main():
    async with Queue("audited", hooks=[Audit()]) as queue:
        request_id.set("req-7")
        job = await queue.add("charge", {"order": 1}, attempts=1)
        print("header", (await queue.get_job(job.id)).headers["request-id"])

        async def charge(job):
            raise RuntimeError("card declined")

        async with Worker("audited", charge, hooks=[Audit()]) as worker:
            for _ in range(200):
                if (await queue.get_job(job.id)).state == "failed":
                    break
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # the on_failed notification runs after the settle
        await queue.obliterate(force=True)

asyncio.run(main())
"""


def test_the_hook_example_stamps_headers_and_alerts(server: RedisServer) -> None:
    (code,) = blocks("Hooks")
    lines = python(code + HOOK_DRIVER, server.url).stdout.splitlines()
    assert lines == ["header req-7", "ALERT charge failed: RuntimeError('card declined')"]


LOGGING_DRIVER = """
import logging
logging.getLogger("queue_core.worker").info("hidden")
logging.getLogger("queue_core.worker").warning("shown")
logging.getLogger("app").info("app line")
"""


def test_the_logging_example_sets_levels() -> None:
    (code,) = blocks("Logging")
    done = python(code + LOGGING_DRIVER, "redis://127.0.0.1:1/0")
    assert done.stderr.splitlines() == ["WARNING:queue_core.worker:shown", "INFO:app:app line"]


OTEL_DRIVER = """
import asyncio
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from queue_core import Queue

spans = InMemorySpanExporter()
tp.add_span_processor(SimpleSpanProcessor(spans))
print("instrumented", QueueInstrumentor().is_instrumented_by_opentelemetry)

async def main():
    async with Queue("traced") as queue:
        await queue.add("email", {"to": "a@example.com"})
        await queue.obliterate(force=True)

asyncio.run(main())
print(sorted(span.name for span in spans.get_finished_spans()))
"""


def test_the_opentelemetry_set_up_instruments(server: RedisServer) -> None:
    (code,) = blocks("Observability: queue_otel", subsections=False)
    lines = python(
        code + OTEL_DRIVER, server.url, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9"
    ).stdout.splitlines()
    assert lines == ["instrumented True", "['obliterate traced', 'send traced']"]


# Exit codes of the command-line lines, on the state the test builds: jobs 42 and 43 are
# waiting (retry refuses: 6) and drain asks first, with no terminal to ask on (2).
CLI_CODES = {"jobs retry emails 42 43": 6, "drain emails --delayed": 2}


def test_the_operator_command_lines_run(server: RedisServer) -> None:
    (block,) = re.findall(
        r"```bash\n(.*?)```",
        (ROOT / "README.md").read_text().split("\n### Operating from the command line\n")[1],
        flags=re.DOTALL,
    )[:1]
    with SyncQueue("emails", redis=server.url) as queue:  # generated ids: 1 to 43
        queue.add_bulk([JobSpec("send", {"n": n}) for n in range(43)])
    with SyncQueue("reports", redis=server.url) as queue:
        queue.upsert_scheduler("weekly-report", every=60, name="report")
    with SyncQueue("albums", redis=server.url) as queue:
        queue.add_bulk([JobSpec("album", {}) for _ in range(17)])
    ran = 0
    for line in block.splitlines():
        argv = shlex.split(line, comments=True)
        assert argv[0] == "queue-core", line
        if "--watch" in argv:
            continue  # runs until interrupted
        done = subprocess.run(
            [str(QUEUE_CORE), *argv[1:]],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "REDIS_URL": server.url},
            stdin=subprocess.DEVNULL,
            check=False,
        )
        expected = CLI_CODES.get(" ".join(argv[1:]), 0)
        assert done.returncode == expected, (line, done.stdout, done.stderr)
        ran += 1
    assert ran == 12  # every line but --watch
    assert "albums:17 album waiting" in done.stdout  # the last line: flow albums 17
    with SyncQueue("reports", redis=server.url) as queue:
        queue.obliterate(force=True)
    with SyncQueue("albums", redis=server.url) as queue:
        queue.obliterate(force=True)


BROWSER_DRIVER = """
import asyncio
import httpx
from starlette.routing import Mount
from queue_core import SyncQueue

async def main():
    with SyncQueue("emails") as queue:
        job = queue.add("welcome", {"email": "ana@example.com", "user_id": 7})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
        await drive(client, job.id)
    (mount,) = [route for route in app.routes if isinstance(route, Mount)]
    await mount.app.state.browser.close()  # its Redis client
    with SyncQueue("emails") as queue:
        queue.obliterate(force=True)

asyncio.run(main())
"""

BEARER_DRIVER = """
async def drive(client, job_id):
    print("anonymous", (await client.get("/queues/")).status_code)
    bearer = {"Authorization": "Bearer " + os.environ["QUEUE_CORE_UI_TOKEN"]}
    page = await client.get("/queues/", headers=bearer)
    print("token", page.status_code, 'data-queue="emails"' in page.text)
"""

SESSION_DRIVER = """
@app.get("/sign-in/{user}")  # the application's own login, as the README's callable reads it
async def sign_in(user: str, request: Request):
    request.session["user"] = user
    return {}

async def drive(client, job_id):
    print("anonymous", (await client.get("/queues/")).status_code)
    await client.get("/sign-in/mallory")
    print("not staff", (await client.get("/queues/")).status_code)
    await client.get("/sign-in/ana")
    page = await client.get(f"/queues/q/emails/jobs/{job_id}")
    print("staff", page.status_code, "ana@example.com" in page.text, "(hidden)" in page.text)
    retry = await client.post(f"/queues/q/emails/jobs/{job_id}/action", data={"action": "retry"})
    print("action", retry.status_code)
"""


def test_the_job_browser_mounts_with_a_token(server: RedisServer) -> None:
    mount, _session = blocks("Job browser")
    env = {"QUEUE_CORE_UI_TOKEN": "a-long-random-token", "QUEUE_CORE_UI_SECRET": "s" * 32}
    lines = python(mount + BEARER_DRIVER + BROWSER_DRIVER, server.url, **env).stdout.splitlines()
    assert lines == ["anonymous 401", "token 200 True"]


def test_the_job_browser_reuses_the_application_sign_in(server: RedisServer) -> None:
    """Staff only, through the host app's session; read-only; the e-mail redacted."""
    _mount, session = blocks("Job browser")
    code = session + SESSION_DRIVER + BROWSER_DRIVER
    lines = python(code, server.url, SESSION_SECRET="x" * 32).stdout.splitlines()
    assert lines == [
        "anonymous 401",
        "not staff 401",
        "staff 200 False True",
        "action 403",
    ]
