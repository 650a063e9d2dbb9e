"""``--processes N`` and ``--reload``: a parent that runs worker processes and watches them.

Each child runs the very same command (``python -m queue_core`` and the parent's
arguments) with ``QUEUE_CORE_WORKER_INDEX`` set, which makes it run its workers itself
rather than supervise. Children live in their own process group, so a Ctrl-C in a
terminal reaches the supervisor only, which forwards it once: SIGTERM or SIGINT is sent
on to every child (a graceful stop), a second one too (the children stop at once). A
child whose supervisor is gone (SIGKILL) stops by itself (``QUEUE_CORE_SUPERVISOR_PID``).

- **Crashes.** A child that exits non-zero (or is killed) is started again after a
  backoff (0.5 s, doubling up to 30 s; back to 0.5 s once a child ran 10 s). After 5
  failures in a row of one child, each within 10 s of its start, the supervisor stops
  the others and exits 1. A child that exits 2 (bad arguments or target) or 7 (its
  module raised on import) is not started again: nothing would change; the supervisor
  stops the others and exits with that code. A child that exits 0 (``--burst``) is done.
- **Reload** (development): every half second the ``.py`` files under the working
  directory are compared with the last look (their modification times; hidden
  directories, ``__pycache__``, virtualenvs and ``node_modules`` are skipped). On a
  change, every child is stopped (SIGTERM; a second one after 5 s) and started again.
  A child that exits waits for the next change instead of being restarted.

A polling watcher rather than ``watchfiles``: no dependency, and it also sees changes
made through a container's bind mount, where file events often do not arrive. One
``stat`` per file each half second is nothing for an application's own tree.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

from queue_core.log import get_logger

__all__ = [
    "INDEX_ENV",
    "SUPERVISOR_ENV",
    "FileWatcher",
    "Supervisor",
]

INDEX_ENV: Final = "QUEUE_CORE_WORKER_INDEX"
SUPERVISOR_ENV: Final = "QUEUE_CORE_SUPERVISOR_PID"

TICK_S: Final = 0.1
WATCH_EVERY_S: Final = 0.5
RELOAD_FORCE_AFTER_S: Final = 5.0
STABLE_AFTER_S: Final = 10.0  # a child that ran this long was not failing at start
MAX_FAST_FAILURES: Final = 5
BACKOFF_FIRST_S: Final = 0.5
BACKOFF_MAX_S: Final = 30.0
FINAL_EXIT_CODES: Final = (2, 7)  # bad arguments or target, an import error: same next time
# A child told to stop exits 0, or dies of the signal if it came before its handlers were
# in place (still importing), or 130 from a KeyboardInterrupt then.
_STOPPED_CLEANLY: Final = (0, 130, -signal.SIGTERM, -signal.SIGINT)
_SKIP_DIRS: Final = {"__pycache__", "node_modules", "site-packages", "venv", "env"}

_log = get_logger("queue_core.cli.supervisor")


@dataclass
class Child:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0  # in a row, each soon after its start
    restart_at: float | None = None
    done: bool = False  # exited 0 by itself


class Supervisor:
    def __init__(self, argv: Sequence[str], processes: int, *, reload: bool = False) -> None:
        self.argv = list(argv)
        self.children = [Child(i) for i in range(processes)]
        self.reload = reload
        self.watcher = FileWatcher(Path.cwd()) if reload else None
        self.signals: list[int] = []
        self.forwarded = 0
        self.exit_code = 0
        self.stopping = False
        self.reloading: float | None = None  # when the children were told to stop for it
        self.next_look = 0.0  # when to look at the files again

    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        _log.info(
            "supervisor_started",
            pid=os.getpid(),
            processes=len(self.children),
            reload=self.reload,
        )
        try:
            for child in self.children:
                self._start(child)
            self._loop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        _log.info("supervisor_stopped", exit_code=self.exit_code)
        return self.exit_code

    def _loop(self) -> None:
        while True:
            self._forward_signals()
            self._reap()
            alive = any(c.process is not None for c in self.children)
            if self.stopping:
                if not alive:
                    return
            elif self.reloading is not None:
                self._reload_step(alive)
            elif all(c.done for c in self.children):
                return
            else:
                self._restart_due()
                self._look_for_changes()
            time.sleep(TICK_S)

    def _restart_due(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.restart_at is not None and now >= child.restart_at:
                self._start(child)

    def _look_for_changes(self) -> None:
        now = time.monotonic()
        if self.watcher is None or now < self.next_look:
            return
        self.next_look = now + WATCH_EVERY_S
        changed = self.watcher.changed()
        if changed is not None:
            _log.info("worker_reloading", changed=changed)
            self.reloading = now
            self._send_all(signal.SIGTERM)

    def _reload_step(self, alive: bool) -> None:
        assert self.reloading is not None
        if not alive:
            self.reloading = None
            for child in self.children:
                self._start(child)
        elif time.monotonic() - self.reloading > RELOAD_FORCE_AFTER_S:
            self._send_all(signal.SIGTERM)  # the second one: stop now
            self.reloading = float("inf")

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)  # forwarded by the loop, outside the handler

    def _forward_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            self.forwarded += 1
            self.stopping = True
            _log.info(
                "supervisor_signal",
                signal=signal.Signals(signum).name,
                force=self.forwarded > 1,
            )
            for child in self.children:
                child.restart_at = None
            self._send_all(signum)

    def _send_all(self, signum: int) -> None:
        for child in self.children:
            if child.process is not None:
                with suppress(ProcessLookupError):  # exited since: reaped next tick
                    child.process.send_signal(signum)

    def _start(self, child: Child) -> None:
        env = {**os.environ, INDEX_ENV: str(child.index), SUPERVISOR_ENV: str(os.getpid())}
        child.process = subprocess.Popen(  # noqa: S603 - our own command line, re-run
            [sys.executable, "-m", "queue_core", *self.argv],
            env=env,
            process_group=0,  # a terminal's Ctrl-C reaches the supervisor only
        )
        child.started_at = time.monotonic()
        child.restart_at = None
        _log.info("worker_process_started", index=child.index, pid=child.process.pid)

    def _reap(self) -> None:
        for child in self.children:
            process = child.process
            if process is None or (code := process.poll()) is None:
                continue
            child.process = None
            ran = time.monotonic() - child.started_at
            details = {
                "index": child.index,
                "pid": process.pid,
                "ran_s": round(ran, 3),
                **_exit_details(code),
            }
            if self.stopping or self.reloading is not None:
                _log.info("worker_process_stopped", **details)
                if code not in _STOPPED_CLEANLY and self.stopping:
                    self.exit_code = self.exit_code or 1
            elif self.reload:
                _log.info("worker_process_exited", **details, restart="on the next change")
            elif code == 0:
                _log.info("worker_process_finished", **details)
                child.done = True
            else:
                self._after_crash(child, code, ran, details)

    def _after_crash(self, child: Child, code: int, ran: float, details: dict[str, object]) -> None:
        if code in FINAL_EXIT_CODES:
            _log.error("worker_process_failed", **details, restart=False)
            self._give_up(code)
            return
        child.failures = child.failures + 1 if ran < STABLE_AFTER_S else 1
        if child.failures >= MAX_FAST_FAILURES:
            _log.error("worker_process_failed", **details, failures=child.failures, restart=False)
            self._give_up(1)
            return
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (child.failures - 1))
        _log.warning("worker_process_crashed", **details, restart_in=delay)
        child.restart_at = time.monotonic() + delay

    def _give_up(self, code: int) -> None:
        self.exit_code = code
        self.stopping = True
        for child in self.children:
            child.restart_at = None
        self._send_all(signal.SIGTERM)


def _exit_details(code: int) -> dict[str, object]:
    if code < 0:
        try:
            return {"signal": signal.Signals(-code).name}
        except ValueError:
            return {"signal": -code}
    return {"exit_code": code}


class FileWatcher:
    """Polls the modification times of the ``.py`` files under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._seen = self._look()

    def changed(self) -> str | None:
        """A file added, changed or removed since the last look (one of them), or None."""
        now = self._look()
        before, self._seen = self._seen, now
        for path, mtime in now.items():
            if before.get(path) != mtime:
                return path
        for path in before.keys() - now.keys():
            return path
        return None

    def _look(self) -> dict[str, int]:
        seen: dict[str, int] = {}
        for path in _python_files(self.root):
            try:
                seen[path] = os.stat(path).st_mtime_ns
            except OSError:
                continue  # removed while looking
        return seen


def _python_files(root: Path) -> Iterator[str]:
    for directory, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS]
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(directory, name)
