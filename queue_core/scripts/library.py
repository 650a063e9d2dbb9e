"""Every script as one Redis Functions library (Redis 7.0+), so that a call runs only its
own body.

An EVALSHA runs its whole chunk on every call: before its first command it defines every
helper it includes (closures, constant tables). For a worker's settle that is about 60
closures, some 12 us of the 140 us Redis spends on the call on the bench machine
(``bench/events_cost.py``). In a library that code runs once, at ``FUNCTION LOAD``; each
script becomes a function whose body is the script's own code, with ``KEYS`` and ``ARGV``
as its parameters and ``K`` built as the EVALSHA prelude builds it. The includes are
shared: each is defined once, in the order the scripts first include them, so a helper
that another needs is defined before it (as in each script's own expansion).

Two things differ from a script and are handled here:

- State that must last one call, not the library's lifetime, is marked ``--@per-call`` on
  its ``local NAME = value`` line; every function sets it back to that value first.
- Redis refuses a function under ``maxmemory`` before it runs unless it is flagged, where
  a script is refused only at its first write that could grow memory. Each function gets
  the flags that keep a script's behaviour: ``no-writes`` when it calls no write command,
  ``allow-oom`` when it calls ``allow_when_full`` (its first write never grows memory, by
  design) or when every write it makes is one Redis runs even when full (a deletion).
  The flag does what that first write does for a script, so a function skips the call:
  one command less per call of every worker's settle and fetch.

The library's name carries a hash of its code, so versions of queue_core sharing a Redis
load side by side and a function name always means the code it was loaded with.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["Library", "LibraryError", "ScriptParts", "build", "flags_for"]

# Commands that only read: a script calling nothing else gets `no-writes`.
_READS: Final = frozenset(
    {
        "GET",
        "HEXISTS",
        "HGET",
        "HKEYS",
        "HMGET",
        "PTTL",
        "TIME",
        "XREVRANGE",
        "ZCARD",
        "ZRANGE",
        "ZRANGEBYSCORE",
        "ZREVRANGE",
        "ZREVRANGEBYSCORE",
        "ZSCORE",
    }
)
# Writes without Redis's deny-oom flag: a full Redis runs them (they free memory, or keep it).
_NEVER_REFUSED: Final = frozenset({"DEL", "HDEL", "PEXPIRE", "ZREM"})
# Writes a full Redis refuses (deny-oom), and PUBLISH, which a `no-writes` function may not run.
_REFUSED_WHEN_FULL: Final = frozenset(
    {"HINCRBY", "HSET", "INCRBY", "SET", "XADD", "ZADD", "PUBLISH"}
)

_CALL: Final = re.compile(r"redis\.p?call\(\s*([^,)]*)")
_LITERAL: Final = re.compile(r"^'([A-Za-z]+)'$")
_PER_CALL: Final = re.compile(r"^local (\w+) = (.+?)\s*--@per-call\s*$", re.MULTILINE)
_ALLOW_WHEN_FULL: Final = re.compile(r"^allow_when_full\(K\)[^\n]*$", re.MULTILINE)
_TOP_LOCAL: Final = re.compile(r"^local (?:function )?(\w+)", re.MULTILINE)


class LibraryError(Exception):
    """The scripts cannot be made into a library as they are: a command whose memory
    behaviour is not known here, or two includes that define the same name (a packaging
    or development error, never user input)."""


def flags_for(name: str, source: str) -> tuple[str, ...]:
    """The function flags that make ``source`` (an expanded script) behave as EVALSHA does."""
    commands: set[str] = set()
    for argument in _CALL.findall(source):
        literal = _LITERAL.match(argument.strip())
        if literal is None:
            raise LibraryError(f"{name}.lua calls a command by a non-literal name: {argument}")
        commands.add(literal.group(1).upper())
    unknown = commands - _READS - _NEVER_REFUSED - _REFUSED_WHEN_FULL
    if unknown:
        raise LibraryError(f"{name}.lua calls {sorted(unknown)}: classify them in library.py")
    writes = commands - _READS
    if not writes:
        return ("no-writes",)
    if _ALLOW_WHEN_FULL.search(source) or writes <= _NEVER_REFUSED:
        return ("allow-oom",)
    return ()


@dataclass(frozen=True, slots=True)
class Library:
    name: str  # qc_<hash of the code>; its functions are named <name>_<script>
    code: str  # FUNCTION LOAD's argument

    def function(self, script: str) -> str:
        return f"{self.name}_{script}"


@dataclass(frozen=True, slots=True)
class ScriptParts:
    """What the library needs of one script."""

    name: str
    includes: str  # its includes, expanded, less those of the scripts before it
    prelude: str  # `local K = {...}`, as the EVALSHA form starts
    body: str  # the script's own code
    source: str  # its whole EVALSHA form, to read its commands from


def build(scripts: Sequence[ScriptParts]) -> Library:
    """The library holding ``scripts``, each as a function."""
    includes = "".join(script.includes for script in scripts)
    defined = _TOP_LOCAL.findall(includes)
    repeated = sorted({name for name in defined if defined.count(name) > 1})
    if repeated:
        raise LibraryError(f"includes define the same names at top level: {repeated}")
    resets = "".join(f"  {name} = {value}\n" for name, value in _PER_CALL.findall(includes))
    functions = []
    for script in scripts:
        flags = flags_for(script.name, script.source)
        body = script.body
        if "allow-oom" in flags:  # the flag lets every write through: no guard write needed
            body = _ALLOW_WHEN_FULL.sub("-- allow_when_full: the allow-oom flag", body)
        functions.append(
            (
                script.name,
                f"function(KEYS, ARGV)\n{resets}{script.prelude}{body}\nend",
                ", ".join(f"'{flag}'" for flag in flags),
            )
        )
    digest = hashlib.sha1(repr((includes, functions)).encode()).hexdigest()[:16]  # noqa: S324
    library = Library(f"qc_{digest}", "")
    registrations = "".join(
        f"redis.register_function{{function_name = '{library.function(name)}',\n"
        f"  callback = {callback}, flags = {{{flags}}}}}\n"
        for name, callback, flags in functions
    )
    return Library(library.name, f"#!lua name={library.name}\n{includes}{registrations}")
