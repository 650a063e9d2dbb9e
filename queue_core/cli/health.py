"""The worker process's HTTP probe (``--health-port``): ``/livez`` and ``/readyz``.

A port that answers proves little: the event loop that runs the jobs can be stuck (an
``async def`` processor calling ``time.sleep`` or crunching numbers) while a server
thread still answers. So the loop itself beats: a task on it records, every half
second, the time and each worker's health (``Worker.healthy()``, read on the loop's own
thread). The server runs in a thread and only reads the last beat:

- ``/livez``: 200 while the last beat is at most ``max_lag`` seconds old, else 503 (the
  loop is stuck: restart the process).
- ``/readyz``: 200 while the beat is fresh and every worker is running and healthy (it
  hears from Redis, its loops are not failing), else 503: starting, stopping, or Redis
  away. Redis being away fails readiness only, so an outage does not restart every pod.

Each answer is a small JSON document: ``status``, ``beat_age_s`` and the workers.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

__all__ = ["BEAT_INTERVAL_S", "Beat", "Probe"]

BEAT_INTERVAL_S: Final = 0.5


@dataclass(frozen=True)
class Beat:
    """One beat of the loop: when (monotonic), and the workers as it saw them."""

    at: float
    ready: bool
    workers: tuple[dict[str, Any], ...]


class Probe:
    """Serves ``/livez`` and ``/readyz`` from a daemon thread on ``host:port``."""

    def __init__(self, host: str, port: int, max_lag: float) -> None:
        self.host = host
        self.port = port
        self.max_lag = max_lag
        self._beat = Beat(time.monotonic(), False, ())  # replaced whole: no lock needed
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        """Listen (``OSError`` if the port is taken) and serve in a daemon thread."""
        probe = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                code, body = probe.answer(self.path.split("?", 1)[0])
                payload = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a probe every few seconds is not worth a log line

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self._server = server
        thread = threading.Thread(target=server.serve_forever, name="health-probe", daemon=True)
        thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def beat(self, ready: bool, workers: tuple[dict[str, Any], ...]) -> None:
        """Called by the loop's beat task."""
        self._beat = Beat(time.monotonic(), ready, workers)

    def answer(self, path: str) -> tuple[int, dict[str, Any]]:
        beat = self._beat
        age = time.monotonic() - beat.at
        alive = age <= self.max_lag
        body: dict[str, Any] = {"beat_age_s": round(age, 3), "workers": list(beat.workers)}
        if path in ("/livez", "/healthz"):
            body["status"] = "ok" if alive else "event loop stuck"
            return (HTTPStatus.OK if alive else HTTPStatus.SERVICE_UNAVAILABLE), body
        if path == "/readyz":
            ready = alive and beat.ready
            body["status"] = (
                "ok" if ready else "event loop stuck" if not alive else "workers not ready"
            )
            return (HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE), body
        return HTTPStatus.NOT_FOUND, {"status": "not found", "paths": ["/livez", "/readyz"]}
