"""Redis clients: creating them, checking the server, and naming Redis faults.

A fault becomes one of queue_core's typed errors (``redis_errors``): a full Redis is not
a down Redis, a call past its deadline is not a refused connection, and a Cluster node's
redirect to a plain client names its fix.
"""

from __future__ import annotations

import builtins
import contextlib
import copy
import inspect
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final, overload

import redis
import redis.asyncio
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ConnectionError,
    MasterDownError,
    MovedError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from queue_core.errors import (
    ClusterClientRequiredError,
    InvalidOptionError,
    QueueError,
    RedisFullError,
    RedisTimeoutError,
    RedisUnavailableError,
)
from queue_core.log import get_logger
from queue_core.options import to_seconds

try:  # redis-py >= 7
    from redis.maint_notifications import MaintNotificationsConfig
except ImportError:  # pragma: no cover - older redis-py has no such setting
    MaintNotificationsConfig = None  # type: ignore[assignment,misc]

__all__ = [
    "DEFAULT_REDIS_TIMEOUT",
    "DEFAULT_REDIS_URL",
    "REDIRECT_ERRORS",
    "TRANSIENT_ERRORS",
    "AsyncClient",
    "SyncClient",
    "byte_client",
    "check_server",
    "check_server_sync",
    "redis_errors",
    "server_address",
    "to_deadline",
]

AsyncClient = redis.asyncio.Redis | AsyncRedisCluster
SyncClient = redis.Redis | RedisCluster

DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
MIN_REDIS_VERSION: Final = (6, 2)
# Every call a producer makes, and every bookkeeping call of a worker, must be answered
# within this many seconds: a frozen server (SIGSTOP, a stuck proxy, a black-holed
# network) would otherwise hang the caller forever, since clients have no socket timeout.
DEFAULT_REDIS_TIMEOUT: Final = 5.0

# Faults after which the same call may succeed later: the server restarted, is loading
# its data, failed over, or briefly refused writes. Workers retry these with backoff.
TRANSIENT_ERRORS: Final = (
    ConnectionError,  # includes BusyLoadingError (loading the AOF after a restart)
    TimeoutError,
    ReadOnlyError,
    TryAgainError,
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    OSError,
)
# A Cluster redirect that reached queue_core: with a plain client, a configuration error
# (the queue lives on another node); a cluster client follows redirects by itself, and
# one that escapes it mid-failover is transient.
REDIRECT_ERRORS: Final = (MovedError, AskError)

_log = get_logger("queue_core.connection")


def resolve_url(url: str | None) -> str:
    return url or os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL


def _keepalive_options() -> dict[int, int]:
    # A peer that vanished without closing the connection is noticed within ~25 s.
    names = {"TCP_KEEPIDLE": 10, "TCP_KEEPINTVL": 5, "TCP_KEEPCNT": 3}
    return {getattr(socket, n): v for n, v in names.items() if hasattr(socket, n)}


def _client_options(url: str) -> dict[str, Any]:
    # redis-py retries failed commands by default. A retried add whose first reply was
    # lost would enqueue the job twice, so clients made here do not retry: producers get
    # a typed error, and workers run their own retry loops around idempotent scripts.
    # No socket timeout: with one, redis-py wraps every send in asyncio.wait_for (a task
    # per command, a third of a no-op job's cost). TCP keepalive finds dead connections
    # instead, and the worker's blocking wait has its own watchdog.
    options: dict[str, Any] = {
        "retry": redis.asyncio.retry.Retry(NoBackoff(), 0),
        "socket_timeout": None,
        "socket_connect_timeout": 5.0,
        "decode_responses": False,
    }
    if not url.startswith("unix:"):  # keepalive is a TCP option
        options["socket_keepalive"] = True
        options["socket_keepalive_options"] = _keepalive_options()
    if MaintNotificationsConfig is not None:
        # Maintenance notifications need RESP3; these clients speak RESP2. Left at its
        # default ("auto"), redis-py 8's async pool skips its check for connections the
        # server closed while they sat idle (Redis `timeout`, proxies, managed services)
        # and hands them out to fail one call (redis-py #4128).
        options["maint_notifications_config"] = MaintNotificationsConfig(enabled=False)
    return options


def create_async_client(url: str | None) -> redis.asyncio.Redis:
    resolved = resolve_url(url)
    return redis.asyncio.Redis.from_url(resolved, **_client_options(resolved))


def create_sync_client(url: str | None, timeout: float | None = None) -> redis.Redis:
    resolved = resolve_url(url)
    options = _client_options(resolved)
    options["retry"] = redis.retry.Retry(NoBackoff(), 0)
    # A blocking socket's timeout costs nothing per read (the kernel keeps it), unlike
    # the async client's: it is the sync producer's deadline.
    options["socket_timeout"] = timeout
    return redis.Redis.from_url(resolved, **options)


def to_deadline(value: object) -> float | None:
    """Validate a ``redis_timeout`` option: seconds, a ``timedelta``, or None (no deadline).

    Async calls apply it with ``asyncio.timeout``: one timer per call, not per read (past
    it the call is cancelled, its connection dropped, and ``TimeoutError`` raised)."""
    if value is None:
        return None
    return to_seconds(value, "redis_timeout", allow_zero=False)


def _as_typed_error(operation: str, exc: BaseException, timeout: float | None) -> QueueError:
    if isinstance(exc, OutOfMemoryError):
        return RedisFullError(f"{operation} failed, Redis is full (maxmemory reached): {exc}")
    if isinstance(exc, MovedError | AskError):
        return ClusterClientRequiredError(
            f"{operation} failed: a Redis Cluster node answered {exc!r}, so this queue's "
            "keys live on another node; pass a cluster client as redis= "
            "(redis.asyncio.cluster.RedisCluster, or redis.cluster.RedisCluster for SyncQueue)"
        )
    if isinstance(exc, TimeoutError | builtins.TimeoutError):  # redis-py's, or a deadline
        limit = f" within {timeout} s" if timeout is not None else ""
        return RedisTimeoutError(
            f"{operation}: Redis did not answer{limit}; the call may or may not have "
            f"taken effect: {str(exc) or type(exc).__name__}"
        )
    return RedisUnavailableError(f"{operation} failed, Redis is unavailable: {exc}")


# Connection settings a pool or a cluster client adds for itself (tied to it): the byte
# twin of a client makes its own.
_POOL_PLUMBING: Final = frozenset(
    {
        "connection_pool",  # a Sentinel pool's reference to itself
        "himport_registry",
        "maint_notifications_pool_handler",
        "oss_cluster_maint_notifications_handler",
    }
)
_CLUSTER_PLUMBING: Final = _POOL_PLUMBING | {
    "connection_class",  # from ssl=
    "redis_connect_func",  # the old client's on_connect
    "response_callbacks",
    "host",
    "port",
}


@overload
def byte_client(client: AsyncClient) -> tuple[AsyncClient, bool]: ...
@overload
def byte_client(client: SyncClient) -> tuple[SyncClient, bool]: ...
def byte_client(client: AsyncClient | SyncClient) -> tuple[AsyncClient | SyncClient, bool]:
    """The client queue_core's commands go through, and whether the caller owns it.

    Job payloads are bytes, so replies must not be decoded. A client created with
    ``decode_responses=True`` gets a byte twin: a new client with the same connection
    settings (address, credentials, TLS, timeouts, retries, pool size and class, a Sentinel
    service; for a cluster client its startup nodes and cluster options) that does not
    decode. The caller owns the twin and closes it; the client passed in is left alone.
    Any other client is returned as is, not owned."""
    # The encoder is there before the first connection, for cluster clients too.
    if not client.get_encoder().decode_responses:
        return client, False
    try:
        if isinstance(client, AsyncRedisCluster | RedisCluster):
            return _byte_cluster(client), True
        return type(client).from_pool(_byte_pool(client.connection_pool)), True
    except (TypeError, ValueError, AttributeError) as exc:  # a pool or client unlike redis-py's
        raise InvalidOptionError(
            f"cannot open a client like {client!r} with decode_responses=False ({exc}); "
            "pass a client created with decode_responses=False"
        ) from exc


def _byte_pool(pool: Any) -> Any:
    kwargs = {k: v for k, v in pool.connection_kwargs.items() if k not in _POOL_PLUMBING}
    kwargs["decode_responses"] = False
    kwargs["connection_class"] = pool.connection_class
    kwargs["max_connections"] = pool.max_connections
    if isinstance(pool, redis.BlockingConnectionPool | redis.asyncio.BlockingConnectionPool):
        kwargs["timeout"] = pool.timeout
    if hasattr(pool, "sentinel_manager"):  # the master (or a replica) found via Sentinel
        return type(pool)(
            pool.service_name,
            pool.sentinel_manager,
            is_master=pool.is_master,
            check_connection=pool.check_connection,
            **kwargs,
        )
    return type(pool)(**kwargs)


def _byte_cluster(client: AsyncRedisCluster | RedisCluster) -> Any:
    cls = type(client)
    params = inspect.signature(cls).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = client.get_connection_kwargs()
    options: dict[str, Any] = {
        k: v
        for k, v in kwargs.items()
        if k not in _CLUSTER_PLUMBING and (open_ended or k in params)
    }
    connection_class = kwargs.get("connection_class")
    if "ssl" in params and connection_class is not None:  # the async client: a flag
        options["ssl"] = issubclass(connection_class, redis.asyncio.SSLConnection)
    user_on_connect = getattr(client, "user_on_connect_func", None)  # the sync client
    if user_on_connect is not None:
        options["redis_connect_func"] = user_on_connect
    manager = client.nodes_manager
    node_class = AsyncClusterNode if isinstance(client, AsyncRedisCluster) else ClusterNode
    cluster: dict[str, Any] = {
        "startup_nodes": [node_class(n.host, n.port) for n in manager.startup_nodes.values()],
        "require_full_coverage": getattr(
            manager, "require_full_coverage", getattr(manager, "_require_full_coverage", True)
        ),
        "dynamic_startup_nodes": getattr(manager, "_dynamic_startup_nodes", True),
        "address_remap": getattr(manager, "address_remap", None),
        "read_from_replicas": getattr(client, "read_from_replicas", False),
        "load_balancing_strategy": getattr(client, "load_balancing_strategy", None),
        "reinitialize_steps": getattr(client, "reinitialize_steps", 5),
        "retry": copy.copy(getattr(client, "retry", None)),
    }
    # Only what differs from the defaults: some options warn when passed at all.
    options.update((k, v) for k, v in cluster.items() if k in params and v != params[k].default)
    options["decode_responses"] = False
    return cls(**options)


def _connection_kwargs(client: Any) -> dict[str, Any]:
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        return dict(pool.connection_kwargs)
    if hasattr(client, "get_connection_kwargs"):  # a cluster client, before it connects too
        return dict(client.get_connection_kwargs())
    node = client.get_default_node() if hasattr(client, "get_default_node") else None
    if node is not None and getattr(node, "connection_kwargs", None) is not None:
        return dict(node.connection_kwargs)
    return {}


def server_address(client: Any, key: str | None = None) -> tuple[str | None, int | None]:
    """``server.address`` and ``server.port`` for telemetry: host and port, or a socket path.

    For a cluster client, once it has connected, the primary that serves ``key`` (every
    key of a queue lives in one slot, so one node serves the whole queue).
    """
    if hasattr(client, "get_node_from_key"):
        node = None
        with contextlib.suppress(Exception):  # not connected yet: no slot map
            node = client.get_node_from_key(key) if key else client.get_default_node()
        return (node.host, int(node.port)) if node is not None else (None, None)
    kwargs = _connection_kwargs(client)
    if "path" in kwargs:
        return str(kwargs["path"]), None
    port = kwargs.get("port")
    return kwargs.get("host"), None if port is None else int(port)


def socket_timeout(client: Any) -> float | None:
    value = _connection_kwargs(client).get("socket_timeout")
    return None if value is None else float(value)


def _parse_version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def _check_info(info: dict[str, Any], policy: str | None) -> None:
    version = str(info.get("redis_version", "0.0"))
    if _parse_version(version) < MIN_REDIS_VERSION:
        raise QueueError(f"queue_core needs Redis 6.2 or newer; this server is {version}")
    if policy is not None and policy != "noeviction":
        _log.warning(
            "redis_eviction_policy_unsafe",
            maxmemory_policy=policy,
            hint="set maxmemory-policy noeviction: any other policy may evict jobs",
        )


def _policy_from(config: Any, info: dict[str, Any]) -> str | None:
    if isinstance(config, dict):
        value = config.get("maxmemory-policy") or config.get(b"maxmemory-policy")
        if value is not None:
            return value.decode() if isinstance(value, bytes) else str(value)
    value = info.get("maxmemory_policy")
    return None if value is None else str(value)


async def check_server(client: AsyncClient) -> None:
    """Refuse Redis < 6.2; warn when the eviction policy could drop jobs."""
    info: dict[str, Any] = dict(await client.info())
    try:
        config: Any = await client.config_get("maxmemory-policy")
    except ResponseError:  # CONFIG is often disabled on managed Redis; INFO still tells
        config = None
    _check_info(info, _policy_from(config, info))


def check_server_sync(client: SyncClient) -> None:
    info: dict[str, Any] = dict(client.info())
    try:
        config: Any = client.config_get("maxmemory-policy")
    except ResponseError:
        config = None
    _check_info(info, _policy_from(config, info))


@contextmanager
def redis_errors(operation: str, timeout: float | None = None) -> Iterator[None]:
    """Turn redis-py's faults into queue_core's typed errors: ``RedisFullError``,
    ``RedisTimeoutError``, ``ClusterClientRequiredError``, else ``RedisUnavailableError``.
    ``timeout`` is the call's deadline, named in the timeout's message."""
    try:
        yield
    except (*TRANSIENT_ERRORS, *REDIRECT_ERRORS) as exc:  # OSError covers asyncio's timeout
        raise _as_typed_error(operation, exc, timeout) from exc
