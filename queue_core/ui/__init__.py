"""The job browser: every queue's counts, jobs and actions on a web page, with each job's
trace one click away. Needs the ``ui`` extra: ``pip install 'queue-core[ui]'``.

    from queue_core.ui import TokenAuth, queue_ui

    app.mount("/queues", queue_ui(redis="redis://localhost:6379/0", auth=TokenAuth(token)))
"""

from queue_core.ui.app import queue_ui
from queue_core.ui.auth import BasicAuth, TokenAuth, hash_password

__all__ = ["BasicAuth", "TokenAuth", "hash_password", "queue_ui"]
