"""The browser's session: one signed cookie holding the CSRF secret and, after a token
login, the user. Signed (itsdangerous), not encrypted: it holds no password or token.

Every form carries the session's CSRF value and every POST must send it back: the cookie
alone (which a browser attaches to any cross-site request) is never enough to act.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from queue_core.ui.render import base_of

__all__ = ["COOKIE", "Session", "SessionStore"]

COOKIE = "queue_core_ui"
MAX_AGE_S = 12 * 3600


@dataclass
class Session:
    csrf: str
    user: str | None = None
    changed: bool = False

    def csrf_ok(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(str(sent).encode(), self.csrf.encode())


class SessionStore:
    def __init__(self, secret_key: str | None) -> None:
        # No key given: a random one, so sessions end when the process does.
        self._signer = URLSafeTimedSerializer(
            secret_key or secrets.token_hex(32), salt="queue_core.ui.session"
        )

    def load(self, request: Request) -> Session:
        raw = request.cookies.get(COOKIE)
        if raw:
            try:
                value = self._signer.loads(raw, max_age=MAX_AGE_S)
            except BadSignature:
                value = None
            if isinstance(value, dict) and isinstance(value.get("c"), str):
                user = value.get("u")
                return Session(value["c"], user if isinstance(user, str) else None)
        return Session(secrets.token_urlsafe(24), changed=True)

    def save(self, request: Request, response: Response, session: Session) -> None:
        if not session.changed:
            return
        response.set_cookie(
            COOKIE,
            self._signer.dumps({"c": session.csrf, "u": session.user}),
            max_age=MAX_AGE_S,
            path=base_of(request) + "/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
