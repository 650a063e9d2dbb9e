"""Private redis-server processes for tests: never the shared instance on 6379.

``RedisServer`` starts one server on a free port in its own directory and can stop it
gracefully, kill it with SIGKILL, and start it again on the same port with the same data
(AOF), which is what the fault tests need.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from itertools import count
from pathlib import Path
from typing import Any

import redis
from redis.crc import key_slot

from queue_core.testing.server import newest_on_path

# The newest redis-server on PATH, as queue_core.testing.RedisServer takes it.
REDIS_SERVER = newest_on_path("redis-server") or "redis-server"


# Every port handed out in this test session: none is handed out twice, so that a process
# left by one test never reaches a later test's server on a reused port.
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free port on 127.0.0.1, not handed out before in this session.

    Taken from 30000 up to the kernel's ephemeral range where it leaves room: a port in
    that range can be taken by any outgoing connection between this check and the bind
    (an API's port once was), or while a server is down for a restart test.
    """
    floor = _ephemeral_floor()
    if floor - 30000 >= 1000:
        for _ in range(1000):
            port = random.randint(30000, floor - 1)
            if port not in _HANDED_OUT and _bindable(port):
                _HANDED_OUT.add(port)
                return port
    for _ in range(1000):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError("no free port")


def _ephemeral_floor() -> int:
    """The lowest port the kernel hands to outgoing connections (32768 by default)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too.

    Both are taken below the kernel's ephemeral range where it leaves room: a port in that
    range can be taken by any outgoing connection (another node's bus link, a client)
    between this check and the node's bind, which once failed a CI run.
    """
    # Ports below 20000 and bus ports from 20000 up: one node's port is never another's
    # bus port.
    highest = min(19999, _ephemeral_floor() - 10001)
    for _ in range(1000):
        if highest >= 10000:
            port = random.randint(10000, highest)
            if {port, port + 10000} & _HANDED_OUT:
                continue
        else:
            port = free_port()
        if port + 10000 <= 65535 and _bindable(port) and _bindable(port + 10000):
            _HANDED_OUT.update((port, port + 10000))
            return port
    raise RuntimeError("no usable port for a cluster node")


class RedisServer:
    def __init__(
        self,
        *,
        appendonly: bool = False,
        appendfsync: str = "everysec",
        extra: tuple[str, ...] = (),
        port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"qc-redis-{self.port}-"))
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.dir / "redis.log"),
            *self.extra,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> RedisServer:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except (redis.ConnectionError, redis.exceptions.BusyLoadingError):
                    pass
                if self.process is not None and self.process.poll() is not None:
                    log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"redis-server exited early:\n{log}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server on {self.port} not ready")
                time.sleep(0.02)
        finally:
            client.close()

    def stop(self) -> None:
        """Graceful: SIGTERM makes Redis fsync its AOF before exiting."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=15)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=15)

    def restart(self, *, graceful: bool = True, downtime: float = 0.0) -> None:
        (self.stop if graceful else self.kill)()
        time.sleep(downtime)
        self.start()

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisCluster:
    """A local Redis Cluster: ``masters`` nodes with slots spread over all of them, and
    ``replicas`` replicas per master (none by default).

    With replicas, ``cluster-node-timeout`` is short (``node_timeout_ms``, 2 s by default)
    so that a replica takes over within a few seconds of its master's death:
    ``kill_master_of(key)`` then ``wait_for_promotion(slot)``.
    """

    def __init__(
        self, masters: int = 3, replicas: int = 0, node_timeout_ms: int | None = None
    ) -> None:
        self.masters = masters
        self.replicas = replicas
        if node_timeout_ms is None and replicas:
            node_timeout_ms = 2000
        extra: tuple[str, ...] = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
        if node_timeout_ms is not None:
            extra += ("--cluster-node-timeout", str(node_timeout_ms))
        if replicas:
            # A replica's first sync starts at once, not after the 5 s default delay.
            extra += ("--repl-diskless-sync-delay", "0")
        ports: list[int] = []
        while len(ports) < masters * (1 + replicas):
            port = cluster_port()
            if port not in ports:
                ports.append(port)
        self.nodes = [RedisServer(extra=extra, port=port) for port in ports]
        self.killed_at: dict[int, float] = {}  # port -> time.monotonic() of its SIGKILL
        self.down_since: float | None = None  # see wait_for_promotion
        self.down_until: float | None = None

    def start(self) -> RedisCluster:
        for index in range(len(self.nodes)):
            self._start_node(index)
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        replicas = ["--cluster-replicas", str(self.replicas)] if self.replicas else []
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses, *replicas, "--cluster-yes"],
            check=True,
            capture_output=True,
            env={k: v for k, v in os.environ.items() if k != "REDISCLI_AUTH"},
        )
        deadline = time.monotonic() + 20
        for node in self.nodes:
            client = node.client()
            try:
                while client.cluster("INFO").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise TimeoutError("cluster did not reach state ok")
                    time.sleep(0.05)
            finally:
                client.close()
        if self.replicas:
            self._wait_replicas_attached(deadline)
        return self

    def _start_node(self, index: int, tries: int = 5) -> None:
        """Start node ``index``; before the cluster is formed, a port taken meanwhile is
        swapped for another one."""
        for attempt in range(tries):
            node = self.nodes[index]
            try:
                node.start()
                return
            except RuntimeError as exc:
                if "Address already in use" not in str(exc) or attempt == tries - 1:
                    raise
            taken = {n.port for n in self.nodes}
            port = cluster_port()
            while port in taken:
                port = cluster_port()
            node.cleanup()
            self.nodes[index] = RedisServer(extra=node.extra, port=port)

    def _wait_replicas_attached(self, deadline: float) -> None:
        """Every master has its replicas in CLUSTER SLOTS, each with its link up.

        Redis lists a replica in CLUSTER SLOTS only once its replication offset is not 0,
        which an idle master only moves with its ping every 10 s: a write to each master
        moves it at once.
        """
        touched: set[int] = set()
        while True:
            for first, _, master, _ in self.slot_ranges():
                if master not in touched:
                    key = next(
                        f"rc-ready-{i}"
                        for i in count()
                        if key_slot(f"rc-ready-{i}".encode()) == first
                    )
                    client = redis.Redis(port=master)
                    try:
                        client.set(key, 1)
                        client.delete(key)
                    finally:
                        client.close()
                    touched.add(master)
            ranges = self.slot_ranges()
            attached = len(ranges) >= self.masters and all(
                len(replicas) == self.replicas for _, _, _, replicas in ranges
            )
            if attached:
                links = [self._info(port, "replication") for port in self._replica_ports()]
                if all(info.get("master_link_status") == "up" for info in links):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the replicas did not attach: {ranges}")
            time.sleep(0.05)

    def _replica_ports(self) -> list[int]:
        return [port for *_, replicas in self.slot_ranges() for port in replicas]

    def _info(self, port: int, section: str) -> dict[str, Any]:
        client = redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=2)
        try:
            return dict(client.info(section))
        finally:
            client.close()

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", node.port) for node in self.nodes]

    @property
    def live_nodes(self) -> list[RedisServer]:
        return [n for n in self.nodes if n.process is not None and n.process.poll() is None]

    def node(self, port: int) -> RedisServer:
        return next(node for node in self.nodes if node.port == port)

    def _command(self, *args: str, port: int | None = None) -> Any:
        """A command on ``port``, or on the first live node that answers."""
        ports = [port] if port is not None else [n.port for n in self.live_nodes]
        error: Exception | None = None
        for candidate in ports:
            client = redis.Redis(port=candidate, socket_connect_timeout=1, socket_timeout=2)
            try:
                return client.execute_command(*args)  # type: ignore[no-untyped-call]
            except redis.ConnectionError as exc:
                error = exc
            finally:
                client.close()
        raise RuntimeError(f"no cluster node answered {args}: {error}")

    def keyslot(self, key: str) -> int:
        return int(self._command("CLUSTER", "KEYSLOT", key))

    def slot_ranges(self, port: int | None = None) -> list[tuple[int, int, int, list[int]]]:
        """(first slot, last slot, master port, replica ports) per range, as ``port`` (or
        any live node) sees them."""
        ranges = []
        for entry in self._command("CLUSTER", "SLOTS", port=port):
            replicas = [int(node[1]) for node in entry[3:]]
            ranges.append((int(entry[0]), int(entry[1]), int(entry[2][1]), replicas))
        return sorted(ranges)

    def master_of_slot(self, slot: int, port: int | None = None) -> int:
        """The port of the master that serves ``slot`` (as ``port``, or any node, sees it)."""
        for first, last, master, _ in self.slot_ranges(port):
            if first <= slot <= last:
                return master
        raise LookupError(f"slot {slot} has no owner")

    def master_of(self, key: str) -> int:
        """The port of the master that serves ``key``'s slot."""
        return self.master_of_slot(self.keyslot(key))

    def kill_master_of(self, key: str) -> RedisServer:
        """SIGKILL the master that serves ``key``'s slot; returns that node."""
        node = self.node(self.master_of(key))
        node.kill()
        self.killed_at[node.port] = time.monotonic()
        return node

    def wait_for_promotion(self, slot: int, timeout: float = 30.0) -> float:
        """Wait until a live node other than the killed master serves ``slot``, every live
        node agrees, and every live node reports ``cluster_state:ok``. Returns the seconds
        from the kill (``kill_master_of``) to then, or from this call if nothing was
        killed.

        Meanwhile it notes when live nodes reported ``cluster_state:fail`` (with
        ``cluster-require-full-coverage yes``, Redis's default, every master then refuses
        keyed commands): ``down_since`` and ``down_until`` (``time.monotonic()``), or None.
        """
        start = min(self.killed_at.values(), default=time.monotonic())
        dead = set(self.killed_at)
        deadline = time.monotonic() + timeout
        self.down_since = self.down_until = None
        seen: Any = None
        while True:
            try:
                live = [node.port for node in self.live_nodes]
                states = {port: self._info_cluster_state(port) for port in live}
                now = time.monotonic()
                if "fail" in states.values():
                    self.down_since = self.down_since or now
                    self.down_until = None
                elif self.down_since is not None and self.down_until is None:
                    self.down_until = now
                owners = {self.master_of_slot(slot, port) for port in live}
                seen = (owners, states)
                (owner,) = owners
                if (
                    owner not in dead
                    and owner in live
                    and set(states.values()) == {"ok"}
                    and self._info(owner, "replication").get("role") == "master"
                ):
                    return time.monotonic() - start
            except (ValueError, LookupError, RuntimeError, redis.RedisError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"slot {slot} was not taken over within {timeout}s: {seen}")
            time.sleep(0.02)

    def _info_cluster_state(self, port: int) -> str:
        client = redis.Redis(port=port, socket_connect_timeout=1, socket_timeout=2)
        try:
            return str(client.cluster("INFO").get("cluster_state"))
        finally:
            client.close()

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()
