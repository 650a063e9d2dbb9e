"""Grafana dashboards as code.

``python -m grafana.build_dashboards`` (from the repository root) writes
``grafana/dashboards/*.json``; see that module.
"""
