"""The job browser of ``make demo``: ``queue_core.ui`` over the demo's Redis and prefix,
served by uvicorn in a thread of the demo's own process, on 127.0.0.1 (port 8080 when it is
free, else any free port). A loopback address, so no sign-in, as ``queue-core ui`` allows.

Its server log goes to a file (``job-browser.log`` in the demo's directory): the demo's
terminal keeps its live view. Without the ``ui`` extra the demo runs without it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import uvicorn

__all__ = ["PREFERRED_PORT", "JobBrowser"]

PREFERRED_PORT: Final = 8080  # compose.yaml's, which the Grafana dashboards link to
START_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 10.0


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _log_config(path: Path) -> dict[str, object]:
    """uvicorn's loggers (``uvicorn.error`` and ``uvicorn.access`` propagate to
    ``uvicorn``) to ``path`` only; every other logger as it was."""
    handler = {"class": "logging.FileHandler", "filename": str(path), "formatter": "plain"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"file": handler},
        "loggers": {"uvicorn": {"handlers": ["file"], "level": "INFO", "propagate": False}},
    }


class JobBrowser:
    """``start()`` serves the browser and returns its URL (or None, with ``problem`` set);
    ``stop()`` ends it."""

    def __init__(self, redis_url: str, prefix: str, queues: Sequence[str], log_path: Path) -> None:
        self.redis_url = redis_url
        self.prefix = prefix
        self.queues = tuple(queues)
        self.log_path = log_path
        self.url: str | None = None
        self.problem: str | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> str | None:
        try:
            import uvicorn  # noqa: PLC0415 - the ui extra is optional for the demo

            from queue_core.ui import queue_ui  # noqa: PLC0415
        except ImportError as exc:
            self.problem = f"not started, {exc.name} is missing: pip install 'queue-core[ui]'"
            return None
        try:
            sock = _bind("127.0.0.1", PREFERRED_PORT)
        except OSError:
            sock = _bind("127.0.0.1", 0)
        app = queue_ui(
            self.redis_url, prefix=self.prefix, queues=self.queues, title="queue_core demo"
        )
        config = uvicorn.Config(
            app,
            log_config=_log_config(self.log_path),
            timeout_graceful_shutdown=2,  # open live streams (SSE) are cut after that
        )
        server = self._server = uvicorn.Server(config)
        # Not the main thread: uvicorn leaves the demo's signal handlers alone.
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="job-browser", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not server.started:
            self.problem = f"did not start (see {self.log_path})"
            self.stop()
            sock.close()
            return None
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        return self.url

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(STOP_TIMEOUT_S)
        if thread.is_alive():
            server.force_exit = True
            thread.join(STOP_TIMEOUT_S)
        self._server = self._thread = None
