"""Checks on the Lua scripts themselves: headers, key hygiene, and what crosses the wire.

Redis Cluster (and correct script caching) needs every key a script touches to be passed in
KEYS. The loader declares them from each header and binds them to ``K``; these tests check
that the scripts never get around that: no ``KEYS`` outside the generated prelude, no key
built from ARGV or by concatenation, and every key argument of a Redis command traceable to
``K.<declared name>``. The static part parses the expanded Lua (a small recursive-descent
parser for the Lua 5.1 subset the scripts use, with lexical scopes), then follows each key
argument through locals, function parameters (via their call sites), table constructors and
loop variables. The dynamic part records a real workload with MONITOR.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Final

import pytest
import redis

from queue_core import (
    Backoff,
    Dedup,
    DelayedError,
    FlowNode,
    FlowProducer,
    Job,
    JobOptions,
    JobSpec,
    Queue,
    RateLimit,
    Worker,
)
from queue_core import scripts as scripts_module
from queue_core.keys import KEY_NAMES, QueueKeys
from queue_core.scripts import (
    SCRIPT_NAMES,
    LuaScript,
    ScriptError,
    library,
    load_script,
    run_script,
)
from tests.conftest import wait_counts
from tests.redis_server import RedisServer

# The Redis commands the scripts use, with the 1-based positions of their key arguments
# (after the command name). A command missing from both tables fails the test: add it here
# with its key positions rather than letting it through unchecked.
KEY_COMMANDS: Final[dict[str, tuple[int, ...]]] = {
    "GET": (1,),
    "DEL": (1,),
    "SET": (1,),
    "INCRBY": (1,),
    "PEXPIRE": (1,),
    "PTTL": (1,),
    "HGET": (1,),
    "HSET": (1,),
    "HDEL": (1,),
    "HEXISTS": (1,),
    "HINCRBY": (1,),
    "ZADD": (1,),
    "ZREM": (1,),
    "ZSCORE": (1,),
    "ZCARD": (1,),
    "ZRANGE": (1,),
    "ZREVRANGE": (1,),
    "ZRANGEBYSCORE": (1,),
    "ZREVRANGEBYSCORE": (1,),
    "ZPOPMIN": (1,),
    "ZCOUNT": (1,),
    "ZREMRANGEBYSCORE": (1,),
    "ZREMRANGEBYRANK": (1,),
    "HMGET": (1,),
    "HGETALL": (1,),
    "HKEYS": (1,),
    "HLEN": (1,),
    "HSCAN": (1,),
    "EXISTS": (1,),
    "UNLINK": (1,),
    "XADD": (1,),
    "XLEN": (1,),
    "XRANGE": (1,),
    "XREVRANGE": (1,),
    "XTRIM": (1,),
    # A channel, not a key; the queue's channel name comes through KEYS all the same, so
    # that no name of the queue is ever built in a script.
    "PUBLISH": (1,),
}
KEYLESS_COMMANDS: Final = frozenset({"TIME"})

# Names through which a script could reach KEYS, K or redis.call without this analysis
# seeing it (Redis's Lua has no `require`, `dofile` or `load` of files anyway).
HIDING_NAMES: Final = frozenset(
    {"_G", "getfenv", "setfenv", "rawget", "loadstring", "load", "dofile", "require"}
)

SCRIPTS_DIR = resources.files(scripts_module)
PRELUDE_RE = re.compile(r"^local K = \{(.*)\}$")


# --------------------------------------------------------------------------- tokenizer


class LuaSyntaxError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Token:
    kind: str  # name, keyword, string, number, op, eof
    text: str  # a string token's text is its raw content between the delimiters
    line: int


LUA_KEYWORDS: Final = frozenset(
    {
        "and", "break", "do", "else", "elseif", "end", "false", "for", "function", "goto",
        "if", "in", "local", "nil", "not", "or", "repeat", "return", "then", "true",
        "until", "while",
    }
)  # fmt: skip
_LONG_BRACKET = re.compile(r"\[(=*)\[")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_]\w*")
_OPERATORS: Final = (
    "...", "..", "==", "~=", "<=", ">=", "::", "//", "<<", ">>",
    "+", "-", "*", "/", "%", "^", "#", "&", "~", "|", "<", ">", "=",
    "(", ")", "{", "}", "[", "]", ";", ":", ",", ".",
)  # fmt: skip


def tokenize(source: str) -> list[Token]:  # noqa: PLR0912 - one branch per token kind
    """Lua tokens without comments; line numbers kept for messages."""
    tokens: list[Token] = []
    i, line, n = 0, 1, len(source)
    while i < n:
        c = source[i]
        if c == "\n":
            line += 1
            i += 1
            continue
        if c.isspace():
            i += 1
            continue
        if source.startswith("--", i):
            long = _LONG_BRACKET.match(source, i + 2)
            if long:
                end = source.find("]" + long.group(1) + "]", long.end())
                if end < 0:
                    raise LuaSyntaxError(f"line {line}: unterminated long comment")
                line += source.count("\n", i, end)
                i = end + len(long.group(1)) + 2
            else:
                newline = source.find("\n", i)
                i = n if newline < 0 else newline
            continue
        long = _LONG_BRACKET.match(source, i)
        if long:
            end = source.find("]" + long.group(1) + "]", long.end())
            if end < 0:
                raise LuaSyntaxError(f"line {line}: unterminated long string")
            tokens.append(Token("string", source[long.end() : end], line))
            line += source.count("\n", i, end)
            i = end + len(long.group(1)) + 2
            continue
        if c in "'\"":
            j = i + 1
            while j < n and source[j] != c:
                if source[j] == "\n":
                    raise LuaSyntaxError(f"line {line}: unfinished string")
                j += 2 if source[j] == "\\" else 1
            if j >= n:
                raise LuaSyntaxError(f"line {line}: unfinished string")
            tokens.append(Token("string", source[i + 1 : j], line))
            i = j + 1
            continue
        number = _NUMBER.match(source, i)
        if number and (c.isdigit() or c == "."):
            tokens.append(Token("number", number.group(), line))
            i = number.end()
            continue
        name = _NAME.match(source, i)
        if name:
            word = name.group()
            tokens.append(Token("keyword" if word in LUA_KEYWORDS else "name", word, line))
            i = name.end()
            continue
        for op in _OPERATORS:
            if source.startswith(op, i):
                tokens.append(Token("op", op, line))
                i += len(op)
                break
        else:
            raise LuaSyntaxError(f"line {line}: unexpected character {c!r}")
    tokens.append(Token("eof", "", line))
    return tokens


# --------------------------------------------------------------------------- syntax tree


class Node:
    """Base of the expression nodes (identity matters: nodes are never compared by value)."""


@dataclass(eq=False)
class Binding:
    """One declared variable: a local, a function parameter, a loop variable."""

    name: str
    kind: str  # local, param, loop, function
    line: int
    values: list[Node] = field(default_factory=list)
    params: list[Binding] | None = None  # for a local function: its parameters
    function: Function | None = None


@dataclass(eq=False)
class Name(Node):
    name: str
    binding: Binding | None  # None: a global
    line: int


@dataclass(eq=False)
class Field(Node):
    obj: Node
    key: str


@dataclass(eq=False)
class Index(Node):
    obj: Node
    key: Node


@dataclass(eq=False)
class Call(Node):
    func: Node
    args: list[Node]
    line: int
    owner: Function | None  # the innermost function whose body holds the call


@dataclass(eq=False)
class Table(Node):
    positional: list[Node] = field(default_factory=list)
    named: dict[str, list[Node]] = field(default_factory=dict)
    computed: list[Node] = field(default_factory=list)  # values stored under [expr] keys
    stored: list[Node] = field(default_factory=list)  # values written after construction


@dataclass(eq=False)
class Literal(Node):
    kind: str  # string, number, nil, true, false, vararg
    value: str


@dataclass(eq=False)
class Function(Node):
    params: list[Binding]
    line: int
    owner: Function | None


@dataclass(eq=False)
class Op(Node):
    op: str
    operands: list[Node]


@dataclass(eq=False)
class Elements(Node):
    """A loop variable over a table: ``ipairs`` (positional only) or ``pairs`` values."""

    of: Node
    positional_only: bool


@dataclass(eq=False)
class Opaque(Node):
    why: str


_BINARY: Final[dict[str, tuple[int, int]]] = {
    "or": (1, 1), "and": (2, 2),
    "<": (3, 3), ">": (3, 3), "<=": (3, 3), ">=": (3, 3), "~=": (3, 3), "==": (3, 3),
    "|": (4, 4), "~": (5, 5), "&": (6, 6), "<<": (7, 7), ">>": (7, 7),
    "..": (9, 8), "+": (10, 10), "-": (10, 10),
    "*": (11, 11), "/": (11, 11), "//": (11, 11), "%": (11, 11), "^": (14, 13),
}  # fmt: skip
_UNARY_PRIORITY: Final = 12
_BLOCK_END: Final = frozenset({"end", "else", "elseif", "until", ""})


class Parser:
    """Recursive descent over Lua 5.1 statements and expressions, resolving names to
    bindings with Lua's lexical scoping as it goes."""

    def __init__(self, source: str) -> None:
        self.tokens = tokenize(source)
        self.pos = 0
        self.scopes: list[dict[str, Binding]] = [{}]
        self.function: Function | None = None
        self.calls: list[Call] = []
        self.functions: list[Binding] = []
        self.names: list[Name] = []
        self.callees: set[int] = set()  # id() of Name/Field nodes used as the called function
        self.stores: list[tuple[Node, Node]] = []  # (container, value): t.k = v, t[k] = v
        self.global_writes: list[tuple[str, int]] = []
        self.fields: list[Field] = []  # every a.b in the source
        self.first_local: Binding | None = None

    # token helpers
    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        token = self.peek()
        self.pos += 1
        return token

    def at(self, text: str) -> bool:
        token = self.peek()
        return token.kind in ("op", "keyword") and token.text == text

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.pos += 1
            return True
        return False

    def expect(self, text: str) -> Token:
        token = self.next()
        if token.kind not in ("op", "keyword") or token.text != text:
            raise LuaSyntaxError(f"line {token.line}: expected {text!r}, got {token.text!r}")
        return token

    def at_block_end(self) -> bool:
        token = self.peek()
        return token.kind == "eof" or (token.kind == "keyword" and token.text in _BLOCK_END)

    def field(self, obj: Node, key: str) -> Field:
        node = Field(obj, key)
        self.fields.append(node)
        return node

    def expect_name(self) -> Token:
        token = self.next()
        if token.kind != "name":
            raise LuaSyntaxError(f"line {token.line}: expected a name, got {token.text!r}")
        return token

    # scopes
    def declare(self, name: str, kind: str, line: int) -> Binding:
        binding = Binding(name, kind, line)
        self.scopes[-1][name] = binding
        if self.first_local is None:
            self.first_local = binding
        return binding

    def resolve(self, name: str) -> Binding | None:
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    # statements
    def parse(self) -> Parser:
        self.block()
        if self.peek().kind != "eof":
            raise LuaSyntaxError(f"line {self.peek().line}: unexpected {self.peek().text!r}")
        return self

    def block(self) -> None:
        self.scopes.append({})
        self.statements()
        self.scopes.pop()

    def statements(self) -> None:
        while not self.at_block_end():
            if self.at("return"):
                self.next()
                if not (self.at(";") or self.at_block_end()):
                    self.explist()
                self.accept(";")
                return
            self.statement()

    def statement(self) -> None:  # noqa: PLR0912 - one branch per statement kind
        token = self.peek()
        if self.accept(";") or self.accept("break"):
            return
        if self.accept("local"):
            self.local_statement(token.line)
        elif self.accept("function"):
            self.function_statement(token.line)
        elif self.accept("if"):
            self.expr()
            self.expect("then")
            self.block()
            while self.accept("elseif"):
                self.expr()
                self.expect("then")
                self.block()
            if self.accept("else"):
                self.block()
            self.expect("end")
        elif self.accept("while"):
            self.expr()
            self.expect("do")
            self.block()
            self.expect("end")
        elif self.accept("do"):
            self.block()
            self.expect("end")
        elif self.accept("for"):
            self.for_statement(token.line)
        elif self.accept("repeat"):
            self.scopes.append({})  # `until` sees the locals of the loop body
            self.statements()
            self.expect("until")
            self.expr()
            self.scopes.pop()
        elif self.accept("goto"):
            self.expect_name()
        elif self.accept("::"):
            self.expect_name()
            self.expect("::")
        else:
            self.expression_statement()

    def local_statement(self, line: int) -> None:
        if self.accept("function"):
            binding = self.declare(self.expect_name().text, "function", line)
            function = self.funcbody(line)
            binding.values.append(function)
            binding.params, binding.function = function.params, function
            self.functions.append(binding)
            return
        names = [self.expect_name().text]
        while self.accept(","):
            names.append(self.expect_name().text)
        values = self.explist() if self.accept("=") else []
        for i, name in enumerate(names):  # declared after the values are evaluated
            self.declare(name, "local", line).values.append(self.nth_value(values, i))

    @staticmethod
    def nth_value(values: list[Node], i: int) -> Node:
        if i < len(values):
            return values[i]
        if values and isinstance(values[-1], Call | Literal) and not _is_single(values[-1]):
            return Opaque("an extra result of a call or ...")
        return Literal("nil", "nil")

    def function_statement(self, line: int) -> None:
        first = self.expect_name()
        target: Node = Name(first.text, self.resolve(first.text), first.line)
        method = False
        while self.at(".") or self.at(":"):
            method = self.next().text == ":"
            target = self.field(target, self.expect_name().text)
            if method:
                break
        function = self.funcbody(line, method=method)
        self.assign([target], [function])

    def for_statement(self, line: int) -> None:
        first = self.expect_name().text
        if self.accept("="):
            self.expr()
            self.expect(",")
            self.expr()
            if self.accept(","):
                self.expr()
            self.expect("do")
            self.scopes.append({})
            self.declare(first, "loop", line).values.append(Opaque("a numeric loop counter"))
        else:
            names = [first]
            while self.accept(","):
                names.append(self.expect_name().text)
            self.expect("in")
            iterators = self.explist()
            self.expect("do")
            self.scopes.append({})
            values = self.loop_values(iterators, len(names))
            for name, value in zip(names, values, strict=True):
                self.declare(name, "loop", line).values.append(value)
        self.block()
        self.scopes.pop()
        self.expect("end")

    @staticmethod
    def loop_values(iterators: list[Node], count: int) -> list[Node]:
        opaque: list[Node] = [Opaque("a loop variable") for _ in range(count)]
        if len(iterators) != 1 or not isinstance(iterators[0], Call):
            return opaque
        call = iterators[0]
        func = call.func
        if not (isinstance(func, Name) and func.binding is None and len(call.args) == 1):
            return opaque
        if func.name not in ("ipairs", "pairs"):
            return opaque
        values: list[Node] = [Opaque("a loop index or key")]
        values.append(Elements(call.args[0], positional_only=func.name == "ipairs"))
        values += opaque[2:]
        return values[:count]

    def expression_statement(self) -> None:
        target = self.suffixed()
        if self.at("=") or self.at(","):
            targets = [target]
            while self.accept(","):
                targets.append(self.suffixed())
            self.expect("=")
            values = self.explist()
            self.assign(targets, values)
        elif not isinstance(target, Call):
            raise LuaSyntaxError(f"line {self.peek().line}: syntax error near {self.peek().text!r}")

    def assign(self, targets: list[Node], values: list[Node]) -> None:
        for i, target in enumerate(targets):
            value = self.nth_value(values, i)
            if isinstance(target, Name):
                if target.binding is None:
                    self.global_writes.append((target.name, target.line))
                else:
                    target.binding.values.append(value)
            elif isinstance(target, Field | Index):
                self.stores.append((target.obj, value))
            else:
                raise LuaSyntaxError(f"cannot assign to {type(target).__name__}")

    # functions
    def funcbody(self, line: int, *, method: bool = False) -> Function:
        self.expect("(")
        names: list[str] = ["self"] if method else []
        if not self.at(")"):
            while True:
                if self.accept("..."):
                    break
                names.append(self.expect_name().text)
                if not self.accept(","):
                    break
        self.expect(")")
        outer = self.function
        function = Function([], line, outer)
        self.function = function
        self.scopes.append({})
        function.params = [self.declare(name, "param", line) for name in names]
        self.statements()
        self.scopes.pop()
        self.function = outer
        self.expect("end")
        return function

    # expressions
    def explist(self) -> list[Node]:
        values = [self.expr()]
        while self.accept(","):
            values.append(self.expr())
        return values

    def expr(self, limit: int = 0) -> Node:
        token = self.peek()
        left: Node
        if token.kind in ("op", "keyword") and token.text in ("not", "-", "#", "~"):
            self.next()
            left = Op(token.text, [self.expr(_UNARY_PRIORITY)])
        else:
            left = self.simple()
        while True:
            token = self.peek()
            priority = _BINARY.get(token.text) if token.kind in ("op", "keyword") else None
            if priority is None or priority[0] <= limit:
                return left
            self.next()
            left = Op(token.text, [left, self.expr(priority[1])])

    def simple(self) -> Node:
        token = self.peek()
        if token.kind == "number":
            self.next()
            return Literal("number", token.text)
        if token.kind == "string":
            self.next()
            return Literal("string", token.text)
        if token.kind == "keyword" and token.text in ("nil", "true", "false"):
            self.next()
            return Literal(token.text, token.text)
        if self.accept("..."):
            return Literal("vararg", "...")
        if self.at("{"):
            return self.table()
        if self.accept("function"):
            return self.funcbody(token.line)
        return self.suffixed()

    def primary(self) -> Node:
        token = self.next()
        if token.kind == "name":
            name = Name(token.text, self.resolve(token.text), token.line)
            self.names.append(name)
            return name
        if token.kind == "op" and token.text == "(":
            inner = self.expr()
            self.expect(")")
            return inner
        raise LuaSyntaxError(f"line {token.line}: unexpected {token.text!r}")

    def suffixed(self) -> Node:
        node = self.primary()
        while True:
            token = self.peek()
            if self.accept("."):
                node = self.field(node, self.expect_name().text)
            elif self.accept("["):
                key = self.expr()
                self.expect("]")
                node = Index(node, key)
            elif self.accept(":"):
                method = self.field(node, self.expect_name().text)
                node = self.call(method, [node, *self.call_args()], token.line)
            elif token.kind == "string" or (token.kind == "op" and token.text in ("(", "{")):
                node = self.call(node, self.call_args(), token.line)
            else:
                return node

    def call_args(self) -> list[Node]:
        token = self.peek()
        if token.kind == "string":
            self.next()
            return [Literal("string", token.text)]
        if self.at("{"):
            return [self.table()]
        self.expect("(")
        args = [] if self.at(")") else self.explist()
        self.expect(")")
        return args

    def call(self, func: Node, args: list[Node], line: int) -> Call:
        call = Call(func, args, line, self.function)
        self.callees.add(id(func))
        self.calls.append(call)
        if isinstance(func, Name) and func.binding is not None and func.binding.params:
            for i, param in enumerate(func.binding.params):
                param.values.append(self.nth_value(args, i))
        if isinstance(func, Field) and isinstance(func.obj, Name) and func.obj.binding is None:
            builtin = f"{func.obj.name}.{func.key}"
            if builtin == "table.insert" and len(args) in (2, 3):
                self.stores.append((args[0], args[-1]))
        if isinstance(func, Name) and func.binding is None and func.name == "rawset" and args:
            self.stores.append((args[0], args[-1]))
        return call

    def table(self) -> Table:
        self.expect("{")
        table = Table()
        while not self.at("}"):
            if self.accept("["):
                self.expr()
                self.expect("]")
                self.expect("=")
                table.computed.append(self.expr())
            elif self.peek().kind == "name" and self.peek(1).text == "=":
                key = self.next().text
                self.next()
                table.named.setdefault(key, []).append(self.expr())
            else:
                table.positional.append(self.expr())
            if not (self.accept(",") or self.accept(";")):
                break
        self.expect("}")
        return table


def _is_single(node: Node) -> bool:
    return not (isinstance(node, Call) or (isinstance(node, Literal) and node.kind == "vararg"))


# --------------------------------------------------------------------------- key analysis


class NotAKey(Exception):
    """This expression is not (only) a declared key."""


@dataclass
class KeyReport:
    problems: list[str] = field(default_factory=list)
    keys_used: set[str] = field(default_factory=set)
    checked_calls: int = 0
    dead_calls: int = 0
    live_functions: set[str] = field(default_factory=set)


class KeyAnalysis:
    """Follows key arguments back to ``K.<name>``; ``K`` must be the prelude's table."""

    def __init__(self, parser: Parser) -> None:
        self.parser = parser
        self.prelude = parser.first_local
        self.live = self._live_functions()
        self._open_escaping_params()
        self._attach_stores()

    def _escaping(self) -> set[int]:
        """Local functions used as a value: callable from anywhere, with any arguments."""
        return {
            id(name.binding.function)
            for name in self.parser.names
            if name.binding is not None
            and name.binding.function is not None
            and id(name) not in self.parser.callees
        }

    def _open_escaping_params(self) -> None:
        escaping = self._escaping()
        for binding in self.parser.functions:
            if id(binding.function) in escaping:
                for param in binding.params or []:
                    param.values.append(Opaque(f"an argument of {binding.name}, called indirectly"))

    def _live_functions(self) -> set[int]:
        """Functions that can run: called from live code, or used as a value (escaping)."""
        parser = self.parser
        live: set[int] = self._escaping()
        changed = True
        while changed:
            changed = False
            for call in parser.calls:
                func = call.func
                if not (isinstance(func, Name) and func.binding and func.binding.function):
                    continue
                owner_live = call.owner is None or id(call.owner) in live
                target = id(func.binding.function)
                if owner_live and target not in live:
                    live.add(target)
                    changed = True
        # Anonymous functions (closures passed somewhere) are treated as live.
        return live

    def is_live(self, owner: Function | None) -> bool:
        while owner is not None:
            named = any(b.function is owner for b in self.parser.functions)
            if named and id(owner) not in self.live:
                return False
            owner = owner.owner
        return True

    def _attach_stores(self) -> None:
        """Record every value written into a table after construction on that table."""
        done: set[tuple[int, int]] = set()
        changed = True
        while changed:
            changed = False
            for container, value in self.parser.stores:
                try:
                    tables = self.tables_of(container, frozenset())
                except NotAKey:
                    continue
                for table in tables:
                    if (id(table), id(value)) not in done:
                        done.add((id(table), id(value)))
                        table.stored.append(value)
                        changed = True

    def is_k(self, node: Node, seen: frozenset[int]) -> bool | None:
        """True: always the prelude's K; False: possibly something else; None: never bound."""
        if not isinstance(node, Name) or node.binding is None:
            return False
        binding = node.binding
        if binding is self.prelude:
            return True
        if id(binding) in seen:
            return None
        results = [self.is_k(value, seen | {id(binding)}) for value in binding.values]
        if False in results:
            return False
        return True if True in results else None

    def key_names(self, node: Node, seen: frozenset[int]) -> set[str]:
        if isinstance(node, Field | Index):
            k = self.is_k(node.obj, frozenset())
            if k is None:
                return set()
            if k:
                if isinstance(node, Index):
                    raise NotAKey("K indexed with an expression (K[...])")
                return {node.key}
        if isinstance(node, Name):
            binding = node.binding
            if binding is None:
                raise NotAKey(f"the global {node.name!r}")
            if binding is self.prelude:
                raise NotAKey("K itself")
            if id(binding) in seen:
                return set()
            names: set[str] = set()
            for value in binding.values:
                names |= self.key_names(value, seen | {id(binding)})
            return names
        if isinstance(node, Field | Index | Elements):
            names = set()
            for value in self.element_values(node, seen):
                names |= self.key_names(value, seen)
            return names
        raise NotAKey(describe(node))

    def element_values(self, node: Field | Index | Elements, seen: frozenset[int]) -> list[Node]:
        container = node.of if isinstance(node, Elements) else node.obj
        values: list[Node] = []
        for table in self.tables_of(container, seen):
            values += table.computed + table.stored
            if isinstance(node, Field):
                values += table.named.get(node.key, [])
            elif isinstance(node, Index) and isinstance(node.key, Literal):
                if node.key.kind == "number" and node.key.value.isdigit():
                    position = int(node.key.value)
                    if 1 <= position <= len(table.positional):
                        values.append(table.positional[position - 1])
                elif node.key.kind == "string":
                    values += table.named.get(node.key.value, [])
                else:
                    raise NotAKey(f"a table indexed with {describe(node.key)}")
            else:  # dynamic index, or a loop over the table
                values += table.positional
                if not (isinstance(node, Elements) and node.positional_only):
                    for named in table.named.values():
                        values += named
        if not values:
            raise NotAKey(f"{describe(node)}, which holds no value")
        return values

    def tables_of(self, node: Node, seen: frozenset[int]) -> list[Table]:
        if isinstance(node, Table):
            return [node]
        if isinstance(node, Name):
            binding = node.binding
            if binding is None:
                raise NotAKey(f"the global {node.name!r}, not a table of keys")
            if id(binding) in seen:
                return []
            tables: list[Table] = []
            for value in binding.values:
                tables += self.tables_of(value, seen | {id(binding)})
            return tables
        if isinstance(node, Field | Index | Elements):
            tables = []
            for value in self.element_values(node, seen):
                tables += self.tables_of(value, seen)
            return tables
        raise NotAKey(f"{describe(node)}, not a table")


def describe(node: Node) -> str:
    if isinstance(node, Name):
        return node.name
    if isinstance(node, Field):
        return f"{describe(node.obj)}.{node.key}"
    if isinstance(node, Index):
        return f"{describe(node.obj)}[{describe(node.key)}]"
    if isinstance(node, Literal):
        return repr(node.value) if node.kind == "string" else node.value
    if isinstance(node, Call):
        return f"{describe(node.func)}(...)"
    if isinstance(node, Op):
        return f"an expression using {node.op!r}"
    if isinstance(node, Opaque):
        return node.why
    if isinstance(node, Elements):
        return f"an element of {describe(node.of)}"
    return type(node).__name__


def contains_concat(node: Node) -> bool:
    if isinstance(node, Op):
        return node.op == ".." or any(contains_concat(child) for child in node.operands)
    if isinstance(node, Field):
        return contains_concat(node.obj)
    if isinstance(node, Index):
        return contains_concat(node.obj) or contains_concat(node.key)
    if isinstance(node, Call):
        return contains_concat(node.func) or any(contains_concat(a) for a in node.args)
    return False


def check_prelude(source: str, declared: tuple[str, ...]) -> list[str]:
    first_line = source.split("\n", 1)[0]
    expected = ", ".join(f"{name} = KEYS[{i}]" for i, name in enumerate(declared, 1))
    match = PRELUDE_RE.match(first_line)
    if match is None or match.group(1) != expected:
        return [f"the first line is not the generated prelude: {first_line!r}"]
    return []


def analyze(source: str, declared: tuple[str, ...]) -> KeyReport:
    """Every problem with the keys of one expanded script (an empty list when clean)."""
    report = KeyReport(problems=check_prelude(source, declared))
    for token in tokenize(source):
        if token.kind == "name" and token.text == "KEYS" and token.line != 1:
            report.problems.append(f"line {token.line}: KEYS used outside the prelude")
        if token.kind == "name" and token.text in HIDING_NAMES:
            report.problems.append(f"line {token.line}: {token.text} can hide a key access")
    parser = Parser(source).parse()
    analysis = KeyAnalysis(parser)
    report.live_functions = {
        b.name for b in parser.functions if b.function and id(b.function) in analysis.live
    }
    report.problems += check_k(analysis)
    for name, line in parser.global_writes:
        report.problems.append(f"line {line}: assigns the global {name!r}")

    redis_fields = {
        id(node): node
        for node in parser.fields
        if isinstance(node.obj, Name) and node.obj.binding is None and node.obj.name == "redis"
    }
    for node in redis_fields.values():
        if node.key in ("call", "pcall") and id(node) not in parser.callees:
            report.problems.append(f"redis.{node.key} is used as a value, not called")
    field_objects = {id(node.obj) for node in parser.fields}
    for ref in parser.names:
        if ref.name == "redis" and ref.binding is None and id(ref) not in field_objects:
            report.problems.append(f"line {ref.line}: redis is used as a value")
    for call in parser.calls:
        func = call.func
        if isinstance(func, Field) and id(func) in redis_fields and func.key in ("call", "pcall"):
            check_redis_call(call, func.key, analysis, declared, report)
    return report


def check_k(analysis: KeyAnalysis) -> list[str]:
    """K is the prelude's local, bound once and never written to."""
    prelude = analysis.prelude
    if prelude is None or prelude.name != "K" or prelude.line != 1:
        return ["the first local is not the prelude's K"]
    if len(prelude.values) != 1 or not isinstance(prelude.values[0], Table):
        return ["K is assigned again after the prelude"]
    if prelude.values[0].stored:
        return ["a value is stored into K after the prelude"]
    return []


def check_redis_call(
    call: Call, kind: str, analysis: KeyAnalysis, declared: tuple[str, ...], report: KeyReport
) -> None:
    where = f"line {call.line}: redis.{kind}"
    first = call.args[0] if call.args else None
    if not (isinstance(first, Literal) and first.kind == "string"):
        report.problems.append(f"{where} with a command name that is not a literal")
        return
    command = first.value.upper()
    if command in KEYLESS_COMMANDS:
        return
    if command not in KEY_COMMANDS:
        report.problems.append(f"{where}('{command}'): unknown command, add it to the table")
        return
    if not analysis.is_live(call.owner):
        report.dead_calls += 1
        return
    report.checked_calls += 1
    for position in KEY_COMMANDS[command]:
        if position >= len(call.args):
            report.problems.append(f"{where}('{command}') has no key argument")
            continue
        arg = call.args[position]
        if contains_concat(arg):
            report.problems.append(f"{where}('{command}') builds its key with '..'")
        try:
            names = analysis.key_names(arg, frozenset())
        except NotAKey as exc:
            report.problems.append(f"{where}('{command}', {describe(arg)}): the key may be {exc}")
            continue
        if not names:
            report.problems.append(f"{where}('{command}', {describe(arg)}): no key reaches it")
        undeclared = sorted(names - set(declared))
        if undeclared:
            report.problems.append(f"{where}('{command}') uses undeclared keys {undeclared}")
        report.keys_used |= names


# --------------------------------------------------------------------------- the files


def script_files() -> set[str]:
    return {
        entry.name.removesuffix(".lua")
        for entry in SCRIPTS_DIR.iterdir()
        if entry.is_file() and entry.name.endswith(".lua")
    }


def include_files() -> set[str]:
    return {
        entry.name.removesuffix(".lua")
        for entry in SCRIPTS_DIR.joinpath("includes").iterdir()
        if entry.is_file() and entry.name.endswith(".lua")
    }


def header(name: str) -> str:
    text = SCRIPTS_DIR.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    assert text.startswith("--[["), f"{name}.lua does not start with a --[[ header comment"
    end = text.find("]]")
    assert end > 0, f"{name}.lua: unterminated header comment"
    return text[4:end]


def test_every_script_name_has_a_file_and_every_file_a_name() -> None:
    assert len(set(SCRIPT_NAMES)) == len(SCRIPT_NAMES)
    assert set(SCRIPT_NAMES) == script_files()


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_header_documents_keys_argv_and_returns(name: str) -> None:
    text = header(name)
    lines = text.splitlines()
    assert lines[1].startswith(f"{name}: "), f"{name}.lua: header should open with '{name}: ...'"
    keys_lines = [line for line in lines if line.startswith("KEYS:")]
    assert len(keys_lines) == 1, f"{name}.lua: one 'KEYS:' line expected, got {keys_lines}"
    declared = tuple(keys_lines[0].removeprefix("KEYS:").split())
    assert declared, f"{name}.lua declares no keys"
    assert set(declared) <= set(KEY_NAMES)
    assert declared == load_script(name).keys
    argv = [line for line in lines if re.match(r"ARGV\b", line)]
    assert len(argv) == 1, f"{name}.lua: one 'ARGV' section expected"
    assert [line for line in lines if line.startswith("Returns:")], f"{name}.lua: no 'Returns:'"

    # "ARGV: none" must mean it: the body reads no ARGV, and the others do.
    body_tokens = tokenize(load_script(name).source)
    uses_argv = any(t.kind == "name" and t.text == "ARGV" for t in body_tokens)
    assert uses_argv == (argv[0].strip() != "ARGV: none"), (name, argv[0])


def test_includes_have_no_header_and_are_all_used() -> None:
    included: set[str] = set()
    for name in SCRIPT_NAMES:
        included |= set(re.findall(r"--@include\s+(\w+)", load_script(name).source))
        for raw in re.findall(
            r"^--@include\s+(\w+)",
            SCRIPTS_DIR.joinpath(f"{name}.lua").read_text(encoding="utf-8"),
            re.MULTILINE,
        ):
            included.add(raw)
    for name in include_files():
        text = SCRIPTS_DIR.joinpath("includes", f"{name}.lua").read_text(encoding="utf-8")
        assert not re.search(r"^KEYS:", text, re.MULTILINE), f"include {name} has a KEYS line"
        included |= set(re.findall(r"^--@include\s+(\w+)", text, re.MULTILINE))
    assert include_files() <= included, f"unused includes: {include_files() - included}"


# --------------------------------------------------------------------------- keys


@pytest.mark.parametrize("name", SCRIPT_NAMES)
def test_keys_come_only_from_the_prelude(name: str) -> None:
    script = load_script(name)
    assert "--@include" not in script.source, "an include was left unexpanded"
    report = analyze(script.source, script.keys)
    assert report.problems == []
    assert report.checked_calls > 0
    # The header declares exactly what the body touches: no missing, no stale keys.
    assert report.keys_used == set(script.keys)


def test_every_helper_function_runs_in_some_script() -> None:
    """Calls inside functions a script never calls are skipped for that script (they cannot
    run there); each helper must then be checked as live code in at least one script."""
    defined: set[str] = set()
    live: set[str] = set()
    for name in SCRIPT_NAMES:
        script = load_script(name)
        defined |= {b.name for b in Parser(script.source).parse().functions}
        live |= analyze(script.source, script.keys).live_functions
    assert defined == live, f"never called: {sorted(defined - live)}"


SNIPPET_PRELUDE = "local K = {wait = KEYS[1], limiter = KEYS[2]}\n"
SNIPPET_KEYS = ("wait", "limiter")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("redis.call('GET', KEYS[2])", "KEYS used outside the prelude"),
        ("redis.call('GET', ARGV[1])", "may be the global 'ARGV'"),
        ("redis.call('GET', 'qc:{q}:' .. ARGV[1])", "builds its key with '..'"),
        ("redis.call('GET', K.limiter .. ':x')", "builds its key with '..'"),
        ("redis.call('GET', K[ARGV[1]])", "K indexed with an expression"),
        ("redis.call('GET', K.active)", "undeclared keys ['active']"),
        ("local k = K.wait\nif ARGV[1] then k = ARGV[1] end\nredis.call('ZCARD', k)", "ARGV"),
        ("local k\nredis.call('ZCARD', k)", "may be nil"),
        (
            "local function f(key) return redis.call('GET', key) end\nf(K.limiter)\nf(ARGV[1])",
            "ARGV",
        ),
        (
            "local t = {K.wait}\nt[#t + 1] = ARGV[1]\n"
            "for _, k in ipairs(t) do redis.call('ZCARD', k) end",
            "ARGV",
        ),
        (
            "local t = {K.wait}\ntable.insert(t, 'x')\nredis.call('ZCARD', t[1])",
            "'x'",
        ),
        ("local c = 'GET'\nredis.call(c, K.limiter)", "not a literal"),
        ("redis.call('SUNIONSTORE', K.wait, K.wait)", "unknown command"),
        ("local f = redis.call\nf('GET', K.limiter)", "used as a value"),
        ("K.limiter = ARGV[1]\nredis.call('GET', K.limiter)", "stored into K"),
        ("K = {limiter = ARGV[1]}\nredis.call('GET', K.limiter)", "K is assigned again"),
        ("x = 1\nredis.call('GET', K.limiter)", "assigns the global 'x'"),
        ("redis.call('GET', _G['K'].limiter)", "_G can hide"),
        ("redis.call('ZADD', redis.call('GET', K.limiter), 1, 'x')", "redis.call(...)"),
        ("local r = redis\nr.call('GET', ARGV[1])", "redis is used as a value"),
        ("redis['call']('GET', ARGV[1])", "redis is used as a value"),
        ("loadstring(\"return redis.call('GET', KEYS[1])\")()", "loadstring can hide"),
        (
            "local function f(key) return redis.call('GET', key) end\n"
            "f(K.limiter)\nlocal ok = pcall(f, ARGV[1])",
            "called indirectly",
        ),
        (
            "local f = function(key) return redis.call('GET', key) end\nf(K.limiter)",
            "no key reaches it",
        ),
    ],
)
def test_key_analysis_rejects(body: str, expected: str) -> None:
    problems = analyze(SNIPPET_PRELUDE + body + "\n", SNIPPET_KEYS).problems
    assert problems, "the analysis accepted a bad key"
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    "body",
    [
        "redis.call('GET', K.limiter)",
        "local k = K.wait\nif ARGV[1] then k = K.limiter end\nredis.call('GET', k)",
        "local sets = {a = K.wait, b = K.limiter}\nredis.call('ZCARD', sets[ARGV[1]])",
        "for _, pair in ipairs({{K.wait, 'w'}, {K.limiter, 'l'}}) do\n"
        "  redis.call('GET', pair[1])\nend",
        "local function f(k, key) return redis.call('GET', key) end\nf(K, K.limiter)",
        "local function f(k) return redis.call('ZCARD', k.wait) end\nf(K)",
        "local function unused(key) return redis.call('GET', key) end\nreturn redis.call('TIME')",
    ],
)
def test_key_analysis_accepts(body: str) -> None:
    assert analyze(SNIPPET_PRELUDE + body + "\n", SNIPPET_KEYS).problems == []


def test_key_analysis_rejects_a_script_without_the_prelude() -> None:
    problems = analyze("redis.call('GET', 'qc:{q}:limiter')\n", SNIPPET_KEYS).problems
    assert any("not the generated prelude" in p for p in problems), problems


# --------------------------------------------------------------------------- the loader


@pytest.fixture
def lua_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the loader's file reader at a temporary directory of crafted scripts."""
    (tmp_path / "includes").mkdir()

    def read(path: str) -> str:
        return (tmp_path / path).read_text(encoding="utf-8")

    monkeypatch.setattr(scripts_module, "_read", read)
    return tmp_path


def load_uncached(name: str) -> LuaScript:
    return load_script.__wrapped__(name)


SCRIPT_HEADER = "--[[\ncrafted: a test script.\n\nKEYS: {keys}\n\nARGV: none\n\nReturns: 1\n]]\n"


def test_loader_accepts_a_well_formed_script(lua_dir: Path) -> None:
    (lua_dir / "crafted.lua").write_text(
        SCRIPT_HEADER.format(keys="wait limiter") + "--@include helper\nreturn helper(K)\n"
    )
    (lua_dir / "includes" / "helper.lua").write_text(
        "local function helper(K)\n  return redis.call('ZCARD', K.wait)\nend\n"
    )
    script = load_uncached("crafted")
    assert script.keys == ("wait", "limiter")
    assert script.source.startswith("local K = {wait = KEYS[1], limiter = KEYS[2]}\n")
    assert "redis.call('ZCARD', K.wait)" in script.source
    assert analyze(script.source, script.keys).problems == []


def test_loader_rejects_an_undeclared_key_in_the_body(lua_dir: Path) -> None:
    (lua_dir / "crafted.lua").write_text(
        SCRIPT_HEADER.format(keys="wait") + "return redis.call('ZCARD', K.failed)\n"
    )
    with pytest.raises(ScriptError, match=r"does not declare: \['failed'\]"):
        load_uncached("crafted")


def test_loader_rejects_an_undeclared_key_in_an_include(lua_dir: Path) -> None:
    (lua_dir / "crafted.lua").write_text(
        SCRIPT_HEADER.format(keys="wait") + "--@include helper\nreturn helper(K)\n"
    )
    (lua_dir / "includes" / "helper.lua").write_text(
        "local function helper(K)\n  return redis.call('GET', K.limiter)\nend\n"
    )
    with pytest.raises(ScriptError, match=r"does not declare: \['limiter'\]"):
        load_uncached("crafted")


@pytest.mark.parametrize(
    ("keys", "message"),
    [("wait nonsense", "unknown or repeated"), ("wait wait", "unknown or repeated")],
)
def test_loader_rejects_bad_declarations(lua_dir: Path, keys: str, message: str) -> None:
    (lua_dir / "crafted.lua").write_text(SCRIPT_HEADER.format(keys=keys) + "return 1\n")
    with pytest.raises(ScriptError, match=message):
        load_uncached("crafted")


def test_loader_rejects_a_script_without_keys_line(lua_dir: Path) -> None:
    (lua_dir / "crafted.lua").write_text("--[[\ncrafted\n]]\nreturn 1\n")
    with pytest.raises(ScriptError, match="no 'KEYS:' line"):
        load_uncached("crafted")


def test_loader_validation_misses_what_the_static_analysis_catches(lua_dir: Path) -> None:
    """The loader's check is a regex over ``K.<name>``: a key reached through KEYS or ARGV
    loads fine. The static analysis above is what rejects those."""
    (lua_dir / "crafted.lua").write_text(
        SCRIPT_HEADER.format(keys="wait") + "return redis.call('GET', KEYS[1] .. ARGV[1])\n"
    )
    script = load_uncached("crafted")
    problems = analyze(script.source, script.keys).problems
    assert any("KEYS used outside the prelude" in p for p in problems), problems
    assert any("builds its key with '..'" in p for p in problems), problems


# --------------------------------------------------------------------------- on the wire

_MONITOR_LINE = re.compile(rb"^\+(\d+\.\d+) \[(\d+) ([^\]]+)\] (.*)$")
_QUOTED_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESCAPES: Final = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b"}


def unescape(raw: bytes) -> bytes:
    """Undo Redis's sdscatrepr quoting of one MONITOR argument."""
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i : i + 1] == b"\\":
            nxt = raw[i + 1 : i + 2]
            if nxt == b"x":
                out.append(int(raw[i + 2 : i + 4], 16))
                i += 4
                continue
            out += _ESCAPES.get(nxt, nxt)
            i += 2
            continue
        out.append(raw[i])
        i += 1
    return bytes(out)


@dataclass(frozen=True, slots=True)
class Monitored:
    client: str
    args: list[bytes]


class Monitor:
    """A raw MONITOR connection read by a thread until a sentinel command shows up."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sentinel = f"monitor-end-{uuid.uuid4().hex}".encode()
        self.lines: list[Monitored] = []
        self.sock.sendall(b"MONITOR\r\n")
        self._buffer = b""
        assert self._line() == b"+OK"
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("MONITOR connection closed")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\r\n", 1)
        return line

    def _run(self) -> None:
        while True:
            match = _MONITOR_LINE.match(self._line())
            assert match is not None
            args = [unescape(arg) for arg in _QUOTED_ARG.findall(match.group(4))]
            if args[:2] == [b"ECHO", self.sentinel] or args[:2] == [b"echo", self.sentinel]:
                return
            self.lines.append(Monitored(match.group(3).decode(), args))

    def stop(self, client: redis.Redis) -> list[Monitored]:
        client.echo(self.sentinel)
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "MONITOR never saw the sentinel"
        self.sock.close()
        return self.lines


@pytest.fixture(scope="module")
def monitored_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
async def workload_queue(monitored_server: RedisServer) -> AsyncIterator[Queue]:
    queue = Queue(f"wire-{uuid.uuid4().hex[:8]}", redis=monitored_server.url)
    yield queue
    await queue.close()


async def run_workload(queue: Queue, url: str) -> None:
    """Every script at least once: enqueue, process (retry, delay, failure, lock renewal,
    a manual rate limit, progress and logs), then read back."""
    attempts: dict[str, int] = {}

    async def process(job: Job) -> Any:
        attempts[job.name] = attempts.get(job.name, 0) + 1
        if job.name == "plain":
            await job.update_progress({"done": 50})
            await job.log("half way")
        elif job.name == "flaky" and attempts["flaky"] == 1:
            raise RuntimeError("first attempt fails")
        elif job.name == "deferred" and attempts["deferred"] == 1:
            raise DelayedError(0.1)
        elif job.name == "doomed":
            raise ValueError("always fails")
        elif job.name == "slow":
            await asyncio.sleep(0.7)  # longer than half the lock: the lock is renewed
        elif job.name == "hang":
            await asyncio.sleep(30)  # until cancelled
        return {"ok": job.name}

    await queue.add("plain", {"n": 1})
    await queue.add("custom", {"n": 2}, job_id="order-7")
    await queue.add("custom", {"n": 2}, job_id="order-7")  # a duplicate: nothing written
    await queue.add_bulk([JobSpec("bulk", {"i": i}, JobOptions(priority=i)) for i in range(3)])
    await queue.add("later", {"n": 3}, delay=0.3)
    await queue.add("flaky", {"n": 4}, attempts=2, backoff=Backoff.fixed(0.1))
    await queue.add("deferred", {"n": 5})
    await queue.add("doomed", {"n": 6}, attempts=1)
    await queue.add("slow", {"n": 7})

    worker = Worker(
        queue.name,
        process,
        redis=url,
        drain_delay=1,
        lock_duration=1.0,
        stalled_interval=0.5,
        shutdown_timeout=5,
    )
    async with worker:
        await worker.rate_limit(timedelta(milliseconds=20))
        await wait_counts(queue, completed=9, failed=1, timeout=20)
        assert [w.id for w in await queue.get_workers()] == [worker.id]
        hang = await queue.add("hang", {"n": 8}, dedup=Dedup("hang-key"))
        await wait_counts(queue, active=1)
        assert await queue.cancel(hang.id, "no longer needed") == "cancelling"
        await wait_counts(queue, failed=2)
        # A job scheduler: each fetch of a run makes the next (fetch_jobs.lua).
        await queue.upsert_scheduler("tick", every=0.05, limit=2)
        await wait_counts(queue, completed=11)
        # A flow: the child's outcome reaches its parent through the outbox; a parent
        # cancelled while it waits cancels its child the same way.
        async with FlowProducer(redis=url) as flows:
            child = FlowNode("child", queue.name, {"n": 13})
            tree = await flows.add(FlowNode("parent", queue.name, {"n": 12}, children=[child]))
            assert await queue.wait_until_finished(tree.job.id, timeout=10) == {"ok": "parent"}
            assert await tree.job.get_children_values() == {
                str(tree.children[0].job.ref): {"ok": "child"}
            }
            later_child = FlowNode("child", queue.name, options=JobOptions(delay=60))
            stuck = await flows.add(FlowNode("parent", queue.name, children=[later_child]))
            assert await queue.cancel(stuck.job.id) == "cancelled"
            await wait_counts(queue, completed=13, failed=4)
    assert attempts["flaky"] == 2 and attempts["deferred"] == 2
    assert await queue.wait_until_finished("order-7", timeout=5) == {"ok": "custom"}

    job = await queue.get_job("order-7")
    assert job is not None and job.return_value == {"ok": "custom"}
    (plain,) = [j for j in await queue.get_jobs("completed") if j.name == "plain"]
    assert plain.progress == {"done": 50}
    assert await plain.get_logs() == ["half way"]
    assert len(await queue.get_jobs(["completed", "failed"])) == 17
    assert await queue.get_counts() == {
        "waiting": 0,
        "active": 0,
        "delayed": 0,
        "completed": 13,
        "failed": 4,
        "waiting_children": 0,
    }
    assert (await queue.get_stats()).oldest_waiting_age is None
    # release_orphans runs only after a fetch's reply was lost: called as a worker would.
    release = load_script("release_orphans")
    assert await run_script(queue.client, release, queue.keys, [1, "nobody~1:"]) == []

    # The operator's actions and settings.
    await queue.pause()
    await queue.resume()
    await queue.set_global_concurrency(5)
    await queue.set_rate_limit(RateLimit(10, 1))
    await queue.set_events_max_length(500)
    assert (await queue.get_config()).global_concurrency == 5
    later = await queue.add("later", {"n": 9}, delay=60)
    await queue.update_job_data(later.id, {"n": 10})
    await queue.promote_job(later.id)
    await queue.remove_job(later.id)
    unwanted = await queue.add("unwanted", {"n": 11}, delay=60)
    assert await queue.cancel(unwanted.id) == "cancelled"
    (doomed,) = [j for j in await queue.get_jobs("failed") if j.name == "doomed"]
    await queue.retry_job(doomed.id)
    assert await queue.drain() == 1
    assert await queue.retry_jobs(state="completed", limit=1) == 1
    assert await queue.clean("waiting", 0) != []
    nightly = await queue.upsert_scheduler("nightly", cron="0 3 * * *", tz="Europe/Paris")
    assert await queue.get_schedulers() == [nightly, await queue.get_scheduler("tick")]  # by id
    # refill_ticks runs after a worker took a cron run short of ticks: called as it would
    # be (a stale `last`: nothing changes).
    refill = load_script("refill_ticks")
    assert await run_script(queue.client, refill, queue.keys, ["nightly", 0, 1]) == 0
    assert await queue.remove_scheduler("tick") is True
    await queue.obliterate()


async def test_argv_never_carries_a_key_name(
    monitored_server: RedisServer, workload_queue: Queue
) -> None:
    client = monitored_server.client()
    monitor = Monitor(monitored_server.port)
    try:
        await run_workload(workload_queue, monitored_server.url)
    finally:
        lines = monitor.stop(client)
        client.close()

    # The workload's clients call functions (Redis 7); the job browser and flows, EVALSHA.
    by_sha = {load_script(name).sha.encode(): load_script(name) for name in SCRIPT_NAMES}
    by_function = {library().function(name).encode(): load_script(name) for name in SCRIPT_NAMES}
    keys = QueueKeys(workload_queue.name)
    prefix = b"qc:{"
    seen: set[str] = set()
    current: set[bytes] | None = None  # KEYS of the script now running
    for line in lines:
        command = line.args[0].upper()
        if line.client == "lua":
            # A command run by a script: its keys must be among those the script was given.
            assert current is not None, f"a script command outside a script: {line.args}"
            name = command.decode()
            for position in KEY_COMMANDS.get(name, ()):
                assert line.args[position] in current, (name, line.args[position], current)
            assert name in KEY_COMMANDS or name in KEYLESS_COMMANDS, name
            continue
        current = None
        assert command not in (b"EVAL", b"EVAL_RO", b"FCALL_RO"), line.args
        if command not in (b"EVALSHA", b"FCALL"):
            continue
        script = (by_sha if command == b"EVALSHA" else by_function).get(line.args[1])
        assert script is not None, f"{command!r} of an unknown script {line.args[1]!r}"
        numkeys = int(line.args[2])
        passed = line.args[3 : 3 + numkeys]
        argv = line.args[3 + numkeys :]
        assert passed == [k.encode() for k in keys.select(script.keys)], script.name
        leaked = [arg for arg in argv if prefix in arg]
        assert leaked == [], f"{script.name} got a key name in ARGV: {leaked}"
        for name in KEY_NAMES:  # nor a bare key suffix glued to the queue name
            assert f"{{{workload_queue.name}}}:{name}".encode() not in b"".join(argv)
        seen.add(script.name)
        current = set(passed)

    assert seen == set(SCRIPT_NAMES), f"scripts not exercised: {set(SCRIPT_NAMES) - seen}"
