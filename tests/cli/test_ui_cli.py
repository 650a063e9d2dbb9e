"""``queue-core ui``, run in subprocesses (``python -m queue_core ui``) against a private
Redis, on a queue of the test's own prefix: what it refuses before listening, and the
job browser it serves with each kind of authentication.

A subprocess costs about a second of CPU to start; the refusals run at once.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from queue_core import SyncQueue
from tests.processes import Process
from tests.redis_server import RedisServer, free_port

INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")
TOKEN = "a-token-for-the-tests"  # noqa: S105 - a test credential


def ui_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "queue_core", "ui", *args]


@pytest.fixture
def prefix() -> str:
    return f"ui-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def env(redis_server: RedisServer) -> dict[str, str]:
    """This environment without a developer's job browser settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("QUEUE_CORE_UI_")}
    return {**clean, "REDIS_URL": redis_server.url, "COLUMNS": "200", "NO_COLOR": "1"}


@pytest.fixture
def job_id(redis_server: RedisServer, prefix: str) -> Iterator[str]:
    """A waiting job on queue ``emails`` under the test's prefix: the browser's content."""
    with SyncQueue("emails", redis=redis_server.url, prefix=prefix) as queue:
        job = queue.add("welcome_email", {"user_id": "u-1"})
        yield job.id
        queue.obliterate(force=True)


Spawn = Callable[..., tuple[Process, str]]


@pytest.fixture
def spawn(env: dict[str, str], prefix: str, tmp_path: Path) -> Iterator[Spawn]:
    """Start ``queue-core ui ARGS`` on a free port; returns it once it printed its URL,
    with that URL. Killed at teardown."""
    started: list[Process] = []

    def start(
        *args: str, extra_env: dict[str, str] | None = None, wrap: Sequence[str] = ()
    ) -> tuple[Process, str]:
        port = free_port()
        command = [*wrap, *ui_command(*args, "--port", str(port), "--prefix", prefix)]
        process = Process(command, {**env, **(extra_env or {})}, tmp_path, f"ui{len(started)}")
        started.append(process)
        url = f"http://127.0.0.1:{port}/"
        process.wait_for_output(f"Job browser: {url}", timeout=60)
        return process, url

    yield start
    for process in started:
        process.kill()


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run(env: dict[str, str], argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_line(text: str) -> str:
    """Typer's boxed usage errors, unboxed and on one line."""
    return " ".join(text.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


def test_refusals_come_before_listening(env: dict[str, str]) -> None:
    """A public address without authentication, bad credentials and a missing [ui] extra
    are usage errors (exit 2) that say what to do, and nothing ever listens."""
    from queue_core.ui import hash_password  # noqa: PLC0415 - the [ui] extra

    hashed = hash_password("pw")
    port = free_port()
    public = "refusing to serve the job browser on {} without authentication"
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["--host", "0.0.0.0"], {}, public.format("0.0.0.0")),
        (["--host", "::"], {}, public.format("::")),
        (["--host", "ui.example.org"], {}, public.format("ui.example.org")),
        (["--user", "alice"], {}, "'alice' is not NAME:HASH"),
        (["--user", "alice:pw"], {}, "not a password hash from queue_core.ui.hash_password"),
        ([], {"QUEUE_CORE_UI_USERS": f"alice:{hashed},alice:{hashed}"}, "given twice"),
        (["--token", "short"], {}, "at least 8 characters"),
        (["--token", TOKEN, "--user", f"alice:{hashed}"], {}, "not both"),
    ]
    missing_extra = (
        "import sys; sys.modules['uvicorn'] = None; from queue_core.cli import main; "
        f"sys.argv = ['queue-core', 'ui', '--port', '{port}']; main()"
    )

    def attempt(case: tuple[list[str], dict[str, str], str]) -> subprocess.CompletedProcess[str]:
        args, extra, _ = case
        return run({**env, **extra}, ui_command(*args, "--port", str(port)))

    with ThreadPoolExecutor(4) as pool:
        extra_missing = pool.submit(run, env, [sys.executable, "-c", missing_extra])
        results = list(pool.map(attempt, cases))
    for (args, extra, expected), done in zip(cases, results, strict=True):
        message = one_line(done.stderr)
        assert done.returncode == 2, (args, extra, done.stdout, done.stderr)
        assert expected in message, (args, message)
        assert "Job browser:" not in done.stdout
    refused = one_line(results[0].stderr)
    for advice in ("--token", "QUEUE_CORE_UI_TOKEN", "--user NAME:HASH", "hash_password"):
        assert advice in refused, refused
    assert "Traceback" not in refused
    done = extra_missing.result()
    assert done.returncode == 2, done.stdout + done.stderr
    assert "pip install 'queue-core[ui]'" in done.stderr
    assert "Traceback" not in done.stderr
    assert not listening(port)


def test_loopback_without_authentication_serves_the_browser(spawn: Spawn, job_id: str) -> None:
    process, url = spawn()
    with httpx.Client(base_url=url, timeout=30) as client:
        overview = client.get("/")
        assert overview.status_code == 200, overview.text
        assert 'data-queue="emails"' in overview.text
        page = client.get("/q/emails", params={"state": "waiting"})
        assert page.status_code == 200, page.text
        assert f'data-job-id="{job_id}"' in page.text
    # SIGTERM: a graceful stop, exit 0 (uvicorn would die of the signal it re-raises).
    assert process.terminate() == 0, process.describe()


def test_a_token_protects_every_page_and_opens_public_addresses(spawn: Spawn, job_id: str) -> None:
    """With QUEUE_CORE_UI_TOKEN the browser may listen on every address; a request
    without the token (or with another) gets 401, with it 200."""
    process, url = spawn("--host", "0.0.0.0", extra_env={"QUEUE_CORE_UI_TOKEN": TOKEN})
    assert "listening on every address of 0.0.0.0" in process.stdout()
    with httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/").status_code == 401
        assert client.get("/", headers={"Authorization": "Bearer not-the-token"}).status_code == 401
        assert client.get(f"/q/emails/jobs/{job_id}").status_code == 401
        allowed = client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert allowed.status_code == 200, allowed.text
        assert 'data-queue="emails"' in allowed.text


def test_users_with_password_hashes_sign_in_with_basic_auth(spawn: Spawn, job_id: str) -> None:
    """Two users in QUEUE_CORE_UI_USERS (comma-separated), hashes from hash_password."""
    from queue_core.ui import hash_password  # noqa: PLC0415 - the [ui] extra

    users = f"alice:{hash_password('alice pw')},bob:{hash_password('bob pw')}"
    _process, url = spawn(extra_env={"QUEUE_CORE_UI_USERS": users})
    with httpx.Client(base_url=url, timeout=30) as client:
        anonymous = client.get("/")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].startswith("Basic ")
        assert client.get("/", auth=("alice", "bob pw")).status_code == 401
        assert client.get("/", auth=("mallory", "alice pw")).status_code == 401
        for name in ("alice", "bob"):
            page = client.get(f"/q/emails/jobs/{job_id}", auth=(name, f"{name} pw"))
            assert page.status_code == 200, (name, page.text)


def console_spans(text: str) -> list[dict[str, object]]:
    """The spans the console exporter printed (indented JSON objects, one after another)
    among the command's own lines."""
    decoder = json.JSONDecoder()
    spans = []
    at = text.find("{")
    while at != -1:
        span, end = decoder.raw_decode(text, at)
        spans.append(span)
        at = text.find("{", end)
    return spans


def test_under_opentelemetry_instrument_requests_are_traced(spawn: Spawn, job_id: str) -> None:
    """As compose.yaml runs it: the Starlette instrumentation makes a server span of each
    request, named by its route."""
    telemetry = {
        "OTEL_SERVICE_NAME": "ui",
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
    }
    process, url = spawn(wrap=[str(INSTRUMENT)], extra_env=telemetry)
    page = httpx.get(f"{url}q/emails/jobs/{job_id}", timeout=30)
    assert page.status_code == 200, page.text
    assert process.terminate() == 0, process.describe()  # the exit flushes the spans
    out = process.stdout()
    servers = [
        span
        for span in console_spans(out[out.index("Job browser:") :].split("\n", 1)[1])
        if span["kind"] == "SpanKind.SERVER"
    ]
    assert [span["name"] for span in servers] == ["GET /q/{queue:path}/jobs/{job_id:path}"], out
    (server,) = servers
    assert isinstance(server["resource"], dict)
    assert server["resource"]["attributes"]["service.name"] == "ui"
