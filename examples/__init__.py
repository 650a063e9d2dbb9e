"""Runnable examples.

- ``python -m examples.demo`` (``make demo``): the example application (``examples.app``:
  an API, workers for five queues, a load generator) live on this machine, with a summary
  per queue and the telemetry in local files.
- ``python -m examples.quickstart``: one producer and one worker, a handful of jobs.
"""
