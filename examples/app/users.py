"""Where the API keeps users in Redis: one hash per user, and an index by email.

- ``app:user:{id}``: id, email, name, created_at, welcome_sent_at, reminder_sent_at;
- ``app:users:by_email``: email -> id, so that a repeated signup finds the first user.
"""

from __future__ import annotations

from typing import Final

EMAIL_INDEX: Final = "app:users:by_email"


def user_key(user_id: str) -> str:
    return f"app:user:{user_id}"
