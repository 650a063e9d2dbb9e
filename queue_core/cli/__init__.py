"""``queue-core``: the command line (console script and ``python -m queue_core``).

Built with Typer (commands, arguments, help) and rich (tables, progress bars). Each
command lives in the module named for it: ``worker.py`` runs workers (and supervises
worker processes), ``admin.py`` operates queues (stats, jobs, pause, drain...), ``ui.py``
serves the job browser (``queue_core.ui``, imported only by that command).
"""

from __future__ import annotations

from queue_core.cli.app import app, main

__all__ = ["app", "main"]
