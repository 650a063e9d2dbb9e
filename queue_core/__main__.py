"""``python -m queue_core``: the ``queue-core`` command line."""

from queue_core.cli import main

main()
