"""The Typer application that every command module registers on."""

from __future__ import annotations

import typer

__all__ = ["app", "main"]

app = typer.Typer(
    name="queue-core",
    help="Run workers and operate queue_core queues.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    """The console script's entry point: registers the commands, then runs the app."""
    # Imported for their registrations on `app`; each module owns its commands.
    from queue_core.cli import admin, ui, worker  # noqa: F401, PLC0415

    app()
