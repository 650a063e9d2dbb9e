"""Loads the Lua scripts, one per operation, and runs them: as Redis functions where the
server has them (7.0+), else by SHA.

Each ``<name>.lua`` starts with a header comment whose ``KEYS:`` line names the queue
keys it takes, in order. The loader reads that line to know which keys to pass, and
prepends ``local K = {name = KEYS[i], ...}`` so the script body refers to ``K.wait``
rather than to positions. ``--@include <name>`` pulls in ``includes/<name>.lua`` once.
Loading fails if a script refers to a key its header does not declare.

``preload`` loads every script into the server at connect: as one function library
(``library.py``: the includes run once, not at every call) when the server takes it, and
the client then calls each script with FCALL; otherwise (Redis 6.2, or ``FUNCTION`` denied)
as scripts called with EVALSHA. A server that forgot them (a restart without persistence,
``FUNCTION FLUSH``) gets them again at the next call that misses them.
"""

from __future__ import annotations

import hashlib
import math
import re
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache, partial
from importlib import resources
from typing import Any, Final

from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.exceptions import NoPermissionError, NoScriptError, ResponseError

from queue_core.keys import KEY_NAMES, QueueKeys
from queue_core.pipeline import CommandPipeline, SharedCall
from queue_core.scripts.library import Library, ScriptParts, build

_pack: Any
try:  # redis[hiredis] is a dependency; stay correct without the C extension
    from hiredis import pack_command as _pack
except ImportError:  # pragma: no cover
    _pack = None

__all__ = [
    "SCRIPT_NAMES",
    "CommandPipeline",
    "LuaScript",
    "ScriptError",
    "can_pipeline",
    "library",
    "load_script",
    "preload",
    "preload_sync",
    "run_script",
    "run_script_sync",
    "send_commands",
]

SCRIPT_NAMES: Final = (
    "add",
    "move_to_active",
    "move_to_completed",
    "move_to_failed",
    "move_to_delayed",
    "extend_locks",
    "recover_stalled",
    "release_orphans",
    "rate_limit",
    "update_progress",
    "add_log",
    "get_job",
    "get_jobs",
    "get_counts",
    "get_stats",
    "pause",
    "set_limits",
    "get_settings",
    "job_status",
    "retry_job",
    "retry_jobs",
    "promote_job",
    "remove_job",
    "update_data",
    "drain",
    "clean",
    "obliterate",
    "cancel_job",
    "heartbeat",
    "get_workers",
    "upsert_scheduler",
    "remove_scheduler",
    "get_schedulers",
    "refill_ticks",
    "add_flow",
    "resolve_dependency",
    "read_outbox",
    "ack_outbox",
    "get_dependencies",
)

_INCLUDE = re.compile(r"^--@include\s+(\w+)\s*$", re.MULTILINE)
_KEYS_LINE = re.compile(r"^KEYS:(.*)$", re.MULTILINE)
# `BATCH: n`: the script takes its ARGV in groups of n, one per call sharing the command
# (pipeline.SharedCall), and answers several groups with a list of their replies.
_BATCH_LINE = re.compile(r"^BATCH:\s*(\d+)\s*$", re.MULTILINE)
_KEY_REF = re.compile(r"\bK\.(\w+)")


class ScriptError(Exception):
    """A Lua file is malformed (a packaging or development error, never user input)."""


@dataclass(frozen=True, slots=True)
class LuaScript:
    name: str
    keys: tuple[str, ...]
    source: str
    sha: str
    batch: int = 0  # ARGV per call when calls may share one command (BATCH: in its header)


def _read(path: str) -> str:
    return resources.files(__package__).joinpath(path).read_text(encoding="utf-8")


def _expand(text: str, seen: set[str]) -> str:
    def include(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in seen:
            return ""
        seen.add(name)
        return _expand(_read(f"includes/{name}.lua"), seen)

    return _INCLUDE.sub(include, text)


@cache
def load_script(name: str) -> LuaScript:
    text = _read(f"{name}.lua")
    header = _KEYS_LINE.search(text)
    if header is None:
        raise ScriptError(f"{name}.lua has no 'KEYS:' line in its header")
    keys = tuple(header.group(1).split())
    unknown = [key for key in keys if key not in KEY_NAMES]
    if unknown or len(set(keys)) != len(keys):
        raise ScriptError(f"{name}.lua declares unknown or repeated keys: {keys}")
    body = _expand(text, set())
    undeclared = sorted(set(_KEY_REF.findall(body)) - set(keys))
    if undeclared:
        raise ScriptError(f"{name}.lua touches keys it does not declare: {undeclared}")
    source = _prelude(keys) + body
    batch = _BATCH_LINE.search(text)
    return LuaScript(
        name,
        keys,
        source,
        hashlib.sha1(source.encode()).hexdigest(),  # noqa: S324
        int(batch.group(1)) if batch else 0,
    )


def _prelude(keys: tuple[str, ...]) -> str:
    return "local K = {" + ", ".join(f"{k} = KEYS[{i}]" for i, k in enumerate(keys, 1)) + "}\n"


@cache
def library() -> Library:
    """Every script of ``SCRIPT_NAMES`` as one function library."""
    seen: set[str] = set()
    parts = []
    for name in SCRIPT_NAMES:
        script = load_script(name)
        text = _read(f"{name}.lua")
        includes = "".join(_expand(f"--@include {i}\n", seen) for i in _INCLUDE.findall(text))
        body = _INCLUDE.sub("", text)
        parts.append(ScriptParts(name, includes, _prelude(script.keys), body, script.source))
    return build(parts)


@cache
def _function(name: str) -> str:
    return library().function(name)


AnyAsyncRedis = AsyncRedis | AsyncRedisCluster
AnySyncRedis = Any  # redis.Redis or redis.cluster.RedisCluster

# Clients whose server holds the library (``preload`` loaded it): they call by FCALL.
_FUNCTIONS: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()
_RETRIES: Final = 2  # a call refused for a missing script or function, reloaded and retried


def _key_args(script: LuaScript, keys: QueueKeys) -> tuple[str, ...]:
    return keys.select(script.keys)


def _command(
    client: Any, script: LuaScript, key_args: tuple[str, ...], args: Sequence[Any]
) -> tuple[Any, ...]:
    if client in _FUNCTIONS:
        return ("FCALL", _function(script.name), len(key_args), *key_args, *args)
    return ("EVALSHA", script.sha, len(key_args), *key_args, *args)


def _pack_command(
    client: Any, script: LuaScript, key_args: tuple[str, ...], args: Sequence[Any]
) -> bytes:
    """The call packed by hiredis. Its head (the verb, the function or SHA, the keys) is the
    same at every call of a script on a queue: packed once, only the arguments are packed
    each time (the head is most of a settle's command: 26 of its 34 parts)."""
    if client in _FUNCTIONS:
        head, parts = _packed_head("FCALL", _function(script.name), key_args)
    else:
        head, parts = _packed_head("EVALSHA", script.sha, key_args)
    tail = _pack(tuple(args))
    return b"*%d\r\n%b%b" % (parts + len(args), head, tail[tail.index(b"\n") + 1 :])


@lru_cache(maxsize=512)
def _packed_head(verb: str, target: str, key_args: tuple[str, ...]) -> tuple[bytes, int]:
    """A command's first parts, packed, without the count of parts that opens a command."""
    packed: bytes = _pack((verb, target, len(key_args), *key_args))
    return packed[packed.index(b"\n") + 1 :], 3 + len(key_args)


def _reload(client: Any, script: LuaScript, error: ResponseError) -> tuple[Any, ...] | None:
    """The command that gives the server what ``error`` says it lacks, or None when the
    error is the script's own. A server without FCALL (an older node met after a
    failover, an ACL that denies it) turns the client back to EVALSHA."""
    message = str(error)
    if isinstance(error, NoScriptError):
        return ("SCRIPT LOAD", script.source)
    if message.startswith("Function not found"):
        return ("FUNCTION LOAD", "REPLACE", library().code)
    if client in _FUNCTIONS and (message.startswith("unknown command") or _denied(error)):
        del _FUNCTIONS[client]  # FCALL itself is unknown or denied
        return ("SCRIPT LOAD", script.source)
    return None


def _denied(error: ResponseError) -> bool:
    return isinstance(error, NoPermissionError) or str(error).startswith("NOPERM")


def can_pipeline(client: AnyAsyncRedis) -> bool:
    """True when calls can take the direct path (a plain client and hiredis)."""
    return _pack is not None and type(client) is AsyncRedis and not client.single_connection_client


async def run_script(
    client: AnyAsyncRedis,
    script: LuaScript,
    keys: QueueKeys,
    args: Sequence[Any],
    pipeline: CommandPipeline | None = None,
) -> Any:
    """Call the script (FCALL or EVALSHA), loading it first if Redis lacks it (e.g. after a
    restart).

    With a ``pipeline`` (a worker's hot path), the call shares writes with concurrent ones.
    """
    key_args = _key_args(script, keys)
    if pipeline is not None:
        try:
            if script.batch and len(args) == script.batch:
                pack = partial(_pack_command, client, script, key_args)
                return await pipeline.call(SharedCall((script.name, key_args[0]), args, pack))
            return await pipeline.call(_pack_command(client, script, key_args, args))
        except ResponseError as error:
            if _reload(client, script, error) is None:
                raise  # else Redis lacks it: load it on the direct path below
    if can_pipeline(client):
        assert isinstance(client, AsyncRedis)
        return await _run_direct(client, script, key_args, args)
    for attempt in range(_RETRIES + 1):
        try:
            return await client.execute_command(*_command(client, script, key_args, args))
        except ResponseError as error:
            load = _reload(client, script, error)
            if load is None or attempt == _RETRIES:
                raise
            await client.execute_command(*load)
    raise AssertionError("unreachable")  # pragma: no cover


async def _run_direct(
    client: AsyncRedis, script: LuaScript, key_args: tuple[str, ...], args: Sequence[Any]
) -> Any:
    """The hot path: the command is packed by hiredis (C) and sent on a pooled connection,
    without redis-py's per-command layers (argument encoding in Python, retry and
    observability wrappers), which cost more than the script itself. A connection whose
    state is unknown after an error is closed before it goes back to the pool."""
    pack = _pack
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        for attempt in range(_RETRIES + 1):
            await connection.send_packed_command(_pack_command(client, script, key_args, args))
            try:
                return await connection.read_response()
            except ResponseError as error:
                load = _reload(client, script, error)
                if load is None or attempt == _RETRIES:
                    raise
            await connection.send_packed_command(pack((*load[0].split(), *load[1:])))
            await connection.read_response()
        raise AssertionError("unreachable")  # pragma: no cover
    except ResponseError:
        raise  # a reply from Redis: the connection is in a clean state
    except BaseException:
        await connection.disconnect(nowait=True)
        raise
    finally:
        await pool.release(connection)


async def send_commands(client: AnyAsyncRedis, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """The replies of ``commands`` (an error reply as its exception), sent as one write.

    For reads of many small commands (the job browser's overview): redis-py's pipeline
    spends about 30 us on each (packing in Python, a timer per reply), many times what
    Redis does. On the direct path, as ``_run_direct``, they are packed by hiredis and read
    back without those layers. The caller bounds the wait."""
    if not can_pipeline(client):
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute(raise_on_error=False))
    assert isinstance(client, AsyncRedis)
    payload = b"".join([_pack(command) for command in commands])
    pool = client.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await connection.send_packed_command(payload)
        replies: list[Any] = []
        for _ in commands:
            try:
                replies.append(await connection.read_response(timeout=math.inf))
            except ResponseError as exc:  # an error reply: the next replies follow as usual
                replies.append(exc)
        return replies
    except BaseException:
        await connection.disconnect(nowait=True)  # replies may be left unread on it
        raise
    finally:
        await pool.release(connection)


def run_script_sync(
    client: AnySyncRedis, script: LuaScript, keys: QueueKeys, args: Sequence[Any]
) -> Any:
    """The blocking twin of ``run_script``, for the synchronous producer."""
    key_args = _key_args(script, keys)
    for attempt in range(_RETRIES + 1):
        try:
            return client.execute_command(*_command(client, script, key_args, args))
        except ResponseError as error:
            load = _reload(client, script, error)
            if load is None or attempt == _RETRIES:
                raise
            client.execute_command(*load)
    raise AssertionError("unreachable")  # pragma: no cover


def _set_mode(client: Any, error: ResponseError | None) -> bool:
    """Record how ``client`` calls scripts, after FUNCTION LOAD answered ``error``
    (None: loaded); True when it calls functions. Loaded, already there (the library's
    name is the hash of its code), or refused for now (Redis full): functions, and a call
    that misses the library loads it. An unknown command (Redis 6.2) or one an ACL denies:
    EVALSHA, and the caller loads the scripts."""
    if error is None or not (str(error).startswith("unknown command") or _denied(error)):
        _FUNCTIONS[client] = True
        return True
    _FUNCTIONS.pop(client, None)
    return False


def _may_call_functions(client: Any) -> bool:
    """Not on a Redis Cluster client: redis-py finds an FCALL's slot by asking a node
    (COMMAND GETKEYS, FCALL's keys being "movable") at every call, a round trip more,
    and after a failover that node may be the dead one. EVALSHA's slot it computes."""
    return not isinstance(client, (AsyncRedisCluster, SyncRedisCluster))


async def preload(client: AnyAsyncRedis) -> None:
    """Load every script at connect, so that no first call misses one: as the function
    library where the server takes it (this client then calls by FCALL), else as scripts
    for EVALSHA. (Redis forgets both when it restarts without persistence; calls load them
    again then.)"""
    if _may_call_functions(client):
        error = None
        try:
            await client.function_load(library().code)
        except ResponseError as exc:
            error = exc
        if _set_mode(client, error):
            return
    for name in SCRIPT_NAMES:
        await client.script_load(load_script(name).source)


def preload_sync(client: AnySyncRedis) -> None:
    if _may_call_functions(client):
        error = None
        try:
            client.function_load(library().code)
        except ResponseError as exc:
            error = exc
        if _set_mode(client, error):
            return
    for name in SCRIPT_NAMES:
        client.script_load(load_script(name).source)
