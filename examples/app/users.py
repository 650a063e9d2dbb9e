"""Where the API keeps users in Redis: one hash per user, and an index by email, under
the app's key prefix (``KEY_PREFIX``, ``qc`` by default):

- ``<prefix>:app:user:{id}``: id, email, name, created_at, welcome_sent_at,
  reminder_sent_at;
- ``<prefix>:app:users:by_email``: email -> id, so that a repeated signup finds the first
  user.
"""

from __future__ import annotations


def email_index(prefix: str) -> str:
    return f"{prefix}:app:users:by_email"


def user_key(prefix: str, user_id: str) -> str:
    return f"{prefix}:app:user:{user_id}"
