"""Who may use the job browser: a shared token, users with hashed passwords (HTTP basic
auth), or the host application's own check (a callable given the request).

Secrets are compared in constant time; passwords are stored only as scrypt hashes
(``hash_password``), so a settings file or an environment variable never holds one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import inspect
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from starlette.requests import Request

__all__ = ["Auth", "BasicAuth", "TokenAuth", "authenticate", "hash_password", "verify_password"]

# scrypt's cost: ~50 ms and 16 MiB per check; a login is rare, a brute force is not.
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    """An scrypt hash of ``password`` for ``BasicAuth`` (``scrypt$n$r$p$salt$hash``)."""
    if not password:
        raise ValueError("a password must not be empty")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P)
    return "$".join(["scrypt", str(_N), str(_R), str(_P), salt.hex(), digest.hex()])


def verify_password(password: str, hashed: str) -> bool:
    """True when ``password`` matches ``hashed`` (from ``hash_password``)."""
    try:
        scheme, n, r, p, salt, digest = hashed.split("$")
        if scheme != "scrypt":
            return False
        expected = bytes.fromhex(digest)
        actual = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p)
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


def check_hash(hashed: str) -> None:
    """Raise ``ValueError`` unless ``hashed`` is a hash ``hash_password`` made."""
    parts = hashed.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("not a password hash from queue_core.ui.hash_password")
    try:
        int(parts[1]), int(parts[2]), int(parts[3]), bytes.fromhex(parts[4])
        bytes.fromhex(parts[5])
    except ValueError:
        raise ValueError("not a password hash from queue_core.ui.hash_password") from None


@dataclass(frozen=True)
class TokenAuth:
    """One shared token: sent as ``Authorization: Bearer <token>`` or typed once into the
    login page, which then keeps a signed session cookie. ``user`` names who acted."""

    token: str = field(repr=False)
    user: str = "token"

    def __post_init__(self) -> None:
        if len(self.token) < 8:
            raise ValueError("a TokenAuth token needs at least 8 characters")

    def matches(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.token.encode())


@dataclass(frozen=True)
class BasicAuth:
    """HTTP basic auth for ``users``: name -> hash from ``hash_password``."""

    users: Mapping[str, str] = field(repr=False)
    realm: str = "queue_core"

    def __post_init__(self) -> None:
        if not self.users:
            raise ValueError("BasicAuth needs at least one user")
        for hashed in self.users.values():
            check_hash(hashed)

    def check(self, header: str) -> str | None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            name, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        hashed = self.users.get(name)
        if not sep or hashed is None:
            verify_password(password, _DUMMY_HASH)  # the same time for unknown names
            return None
        return name if verify_password(password, hashed) else None


Checker = Callable[[Request], "str | Awaitable[str | None] | None"]
Auth = TokenAuth | BasicAuth | Checker

_DUMMY_HASH = "$".join(["scrypt", str(_N), str(_R), str(_P), "00" * 16, "00" * 64])


async def authenticate(auth: Auth | None, request: Request, session_user: str | None) -> str | None:
    """The user behind ``request``, or None. Without ``auth`` everyone is ``anonymous``
    (the command line serves that on loopback addresses only)."""
    if auth is None:
        return "anonymous"
    header = request.headers.get("authorization", "")
    if isinstance(auth, TokenAuth):
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and auth.matches(token.strip()):
            return auth.user
        return session_user
    if isinstance(auth, BasicAuth):
        return auth.check(header) if header else None
    user = auth(request)
    if inspect.isawaitable(user):
        user = await user
    return user if isinstance(user, str) and user else None
