"""A worker module whose own import of a dependency fails (the worker command's tests)."""

from __future__ import annotations

import no_such_dependency_of_the_fixture  # noqa: F401
