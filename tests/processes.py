"""A subprocess of the tests, started from the repository root, its output in files."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from tests.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent


class Process:
    """A subprocess started from the repository root, its output in ``<tag>.out/.err``.
    It starts at once unless ``start=False`` (then ``start()`` starts it). Every one
    started is listed in ``STARTED``, for ``kill_left_since``."""

    def __init__(
        self,
        command: Sequence[str],
        env: Mapping[str, str],
        workdir: Path,
        tag: str,
        *,
        start: bool = True,
    ) -> None:
        self.tag = tag
        self.command = list(command)
        self.env = dict(env)
        self.stdout_path = workdir / f"{tag}.out"
        self.stderr_path = workdir / f"{tag}.err"
        self._popen: subprocess.Popen[bytes] | None = None
        if start:
            self.start()

    def start(self) -> Self:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self._popen = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        STARTED.append(self)
        return self

    @property
    def started(self) -> bool:
        return self._popen is not None

    @property
    def popen(self) -> subprocess.Popen[bytes]:
        assert self._popen is not None, f"{self.tag} was not started"
        return self._popen

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        return (
            f"{self.tag} (pid {self.popen.pid}, exit code {self.popen.poll()})\n"
            f"--- stdout ---\n{self.stdout()[-3000:]}\n--- stderr ---\n{self.stderr()[-6000:]}"
        )

    def check_alive(self) -> None:
        if not self.alive():
            raise AssertionError(f"{self.tag} exited unexpectedly\n{self.describe()}")

    def wait_for_output(self, text: str, timeout: float = 20.0) -> None:
        def seen() -> bool:
            self.check_alive()
            return text in self.stderr() or text in self.stdout()

        wait_until(seen, timeout=timeout, what=f"{text!r} from {self.tag}")

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.tag} did not exit within {timeout}s\n{self.describe()}"
            ) from None

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait for the exit (a graceful shutdown flushes telemetry)."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
            self.popen.wait(timeout=10)


# Every Process started in this test session, in order.
STARTED: list[Process] = []


def kill_left_since(mark: int) -> list[str]:
    """Kill the processes started after the first ``mark`` that still run; their tags.

    A test that fails half-way can skip its own stops: a worker left running then works
    on against the session's Redis and skews the next tests' figures."""
    left = [process for process in STARTED[mark:] if process.alive()]
    for process in left:
        process.kill()
    del STARTED[mark:]
    return [process.tag for process in left]
