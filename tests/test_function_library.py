"""The scripts as one Redis Functions library (queue_core/scripts/library.py).

On Redis 7 a client that preloaded calls every script by FCALL; the library defines the
includes once, so state meant to last one call must be reset at each call, and each
function's flags must make it behave under ``maxmemory`` as the EVALSHA script does. A
server that lacks the library (flushed, restarted) gets it again at the next call, and a
server without functions (or with them denied) is called by EVALSHA.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis
import redis.asyncio

from queue_core import Job, Queue, SyncQueue, Worker
from queue_core.commands import FetchSettings, parse_fetch
from queue_core.keys import QueueKeys
from queue_core.scripts import SCRIPT_NAMES, library, load_script, preload, run_script
from queue_core.scripts.library import LibraryError, ScriptParts, build, flags_for
from tests.conftest import wait_counts
from tests.redis_server import RedisServer
from tests.test_scripts_static import Parser

HEADER = "--[[\ncrafted\n\nKEYS: wait active\n]]\n"


def script_calls(client: redis.Redis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {c: int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("fcall", "evalsha")}


# --------------------------------------------------------------------------- flags


@pytest.mark.parametrize(
    ("body", "flags"),
    [
        ("return redis.call('ZCARD', K.wait)", ("no-writes",)),
        (
            "redis.call('ZREM', K.wait, 'x')\nreturn redis.call('HDEL', K.active, 'x')",
            ("allow-oom",),
        ),
        ("allow_when_full(K)\nreturn redis.call('ZADD', K.wait, 1, 'x')", ("allow-oom",)),
        ("redis.call('ZREM', K.wait, 'x')\nreturn redis.call('HSET', K.active, 'x', 1)", ()),
        ("return redis.call('PUBLISH', 'channel', 'message')", ()),
    ],
)
def test_flags_keep_what_evalsha_does_when_redis_is_full(body: str, flags: tuple[str, ...]) -> None:
    assert flags_for("crafted", HEADER + body) == flags


def test_flags_refuse_commands_they_cannot_classify() -> None:
    with pytest.raises(LibraryError, match=r"calls \['LPUSH'\]"):
        flags_for("crafted", "redis.call('LPUSH', K.wait, 1)")
    with pytest.raises(LibraryError, match="non-literal name"):
        flags_for("crafted", "local c = 'GET'\nredis.call(c, K.wait)")


def test_the_shipped_scripts_get_the_flags_their_role_needs() -> None:
    code = library().code
    for name in SCRIPT_NAMES:
        assert f"function_name = '{library().function(name)}'" in code, name
    flags = {name: flags_for(name, load_script(name).source) for name in SCRIPT_NAMES}
    for settling in ("move_to_active", "move_to_completed", "move_to_failed", "move_to_delayed"):
        assert flags[settling] == ("allow-oom",), settling  # they free memory
    for removing in ("remove_job", "clean", "drain", "obliterate", "remove_scheduler"):
        assert flags[removing] == ("allow-oom",), removing
    for reading in ("get_job", "get_jobs", "get_counts", "get_stats", "job_status"):
        assert flags[reading] == ("no-writes",), reading
    assert flags["add"] == () and flags["add_flow"] == ()  # a full Redis refuses new jobs
    # A script's guard write (allow_when_full) is the flag's job in a function: no function
    # calls it, every script still does.
    guarded = [name for name in SCRIPT_NAMES if "\nallow_when_full(K)" in load_script(name).source]
    assert "move_to_completed" in guarded and "move_to_active" in guarded
    assert all(flags[name] == ("allow-oom",) for name in guarded)
    assert "\nallow_when_full(K)" not in code


# What Redis gives a script or function by name; anything else it reads is undefined.
LUA_GLOBALS = {"cjson", "ipairs", "math", "next", "pairs", "pcall", "redis", "string", "table",
               "tonumber", "tostring", "type", "unpack"}  # fmt: skip


def free_names(source: str) -> set[str]:
    return {name.name for name in Parser(source).parse().names if name.binding is None}


def test_every_name_the_library_uses_is_defined_before_it() -> None:
    """The library defines each include once, in the order the scripts first include
    them: a helper that used another without including it (the script included both)
    would read an undefined global there. Both forms must use Lua's globals alone."""
    assert free_names(library().code.split("\n", 1)[1]) <= LUA_GLOBALS
    for name in SCRIPT_NAMES:
        assert free_names(load_script(name).source) <= LUA_GLOBALS | {"KEYS", "ARGV"}, name


def test_includes_must_not_define_a_name_twice() -> None:
    parts = [
        ScriptParts("a", "local function helper() return 1 end\n", "", "return 1", "return 1"),
        ScriptParts("b", "local helper = 2\n", "", "return 2", "return 2"),
    ]
    with pytest.raises(LibraryError, match=r"same names at top level: \['helper'\]"):
        build(parts)


def test_the_library_name_follows_its_code() -> None:
    one = build([ScriptParts("a", "", "", "return 1", "return 1")])
    same = build([ScriptParts("a", "", "", "return 1", "return 1")])
    other = build([ScriptParts("a", "", "", "return 2", "return 2")])
    assert one == same and one.name != other.name
    assert one.code.startswith(f"#!lua name={one.name}\n") and one.function("a") in one.code


# --------------------------------------------------------------------------- on a server


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(redis_url)
    await preload(client)
    yield client
    await client.aclose()


async def fetch(client: redis.asyncio.Redis, keys: QueueKeys, count: int = 1) -> list[str]:
    args = FetchSettings("test-worker", 30_000).args(count, 1)
    reply = await run_script(client, load_script("move_to_active"), keys, args)
    fetched = parse_fetch(reply)
    return [job_id for job_id, _, _ in fetched.jobs] + [f"q:{i}" for i, _ in fetched.quarantined]


async def test_calls_after_preload_are_fcalls(
    client: redis.asyncio.Redis, queue: Queue, redis_server: RedisServer
) -> None:
    sync_client = redis_server.client()
    before = script_calls(sync_client)
    await queue.add("a", 1)
    assert await fetch(client, QueueKeys(queue.name)) == ["1"]
    after = script_calls(sync_client)
    sync_client.close()
    assert after["fcall"] - before["fcall"] >= 2 and after["evalsha"] == before["evalsha"]


async def test_state_of_one_call_does_not_leak_into_the_next(
    client: redis.asyncio.Redis, queue: Queue, raw: redis.asyncio.Redis
) -> None:
    """The settings a call read (paused) and the jobs it quarantined are that call's own:
    the library keeps its includes between calls, so both are reset at each."""
    keys = QueueKeys(queue.name)
    await queue.add("a", 1)
    await queue.add("b", 2)
    await queue.add("c", 3)
    await raw.hset(keys["state"], "1", "not json")
    await queue.pause()
    assert await fetch(client, keys) == []
    await queue.resume()
    assert await fetch(client, keys) == ["2", "q:1"]  # job 2 fetched, job 1 quarantined
    assert await fetch(client, keys) == ["3"]  # no quarantine carried over


async def test_a_server_that_forgot_the_library_gets_it_again(
    client: redis.asyncio.Redis, queue: Queue, raw: redis.asyncio.Redis
) -> None:
    keys = QueueKeys(queue.name)
    await queue.add("a", 1)
    await raw.function_flush()
    assert await fetch(client, keys) == ["1"]
    assert library().name.encode() in str(await raw.function_list()).encode()


@pytest.fixture(params=["rename FUNCTION", "rename FCALL", "ACL denies FCALL"])
def url_without_functions(request: pytest.FixtureRequest) -> Iterator[tuple[str, RedisServer]]:
    how, command = str(request.param).split(" ", 1)
    extra = ("--rename-command", command, "") if how == "rename" else ()
    server = RedisServer(extra=extra).start()
    url = server.url
    if how == "ACL":
        admin = server.client()
        admin.acl_setuser("app", enabled=True, passwords=["+secret"], keys=["*"], channels=["*"],
                          commands=["+@all", "-fcall"])  # fmt: skip
        admin.close()
        url = f"redis://app:secret@127.0.0.1:{server.port}/0"
    yield url, server
    server.cleanup()


async def test_a_server_without_functions_is_called_by_evalsha(
    url_without_functions: tuple[str, RedisServer],
) -> None:
    """FUNCTION unknown: preload loads scripts. FCALL unknown or denied after the library
    loaded: the first call falls back to EVALSHA. Either way every job runs, by EVALSHA."""
    done: list[str] = []

    async def process(job: Job) -> None:
        done.append(job.id)

    url, server = url_without_functions
    async with Queue("fallback", redis=url) as queue, Worker("fallback", process, redis=url):
        for i in range(5):
            await queue.add("a", i)
        await wait_counts(queue, completed=5)
    with SyncQueue("fallback", redis=url) as sync_queue:
        sync_queue.add("b", 1)
        assert sync_queue.get_counts()["waiting"] == 1
    admin = server.client()
    counts = script_calls(admin)
    admin.close()
    assert sorted(done) == ["1", "2", "3", "4", "5"]
    assert counts["evalsha"] > 10, counts


async def test_a_worker_keeps_working_through_a_function_flush(
    queue: Queue, make_worker: Callable[..., Worker], raw: redis.asyncio.Redis
) -> None:
    done: list[str] = []

    async def process(job: Job) -> None:
        done.append(job.id)
        if job.id == "3":
            await raw.function_flush()

    async with make_worker(process):
        for i in range(10):
            await queue.add("a", i)
            await asyncio.sleep(0.01)
        await wait_counts(queue, completed=10)
    assert sorted(done, key=int) == [str(i) for i in range(1, 11)]
