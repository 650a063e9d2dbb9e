"""One adapter per library, each run as ``python -P -m bench.peers.<name>`` in its own venv.

An adapter defines a ``_kit.Peer`` (how its library enqueues one job, a bulk of jobs, and
how its worker process is started) and calls ``_kit.main(peer)``. ``_kit`` holds the
measurements, so that every library goes through exactly the same code. Adapters import
only the standard library, redis-py (every library here depends on it) and their own
library: the module is run with ``-P`` and ``PYTHONPATH`` set to the repository root, so
``bench/peers/arq.py`` does not shadow the ``arq`` package.
"""
