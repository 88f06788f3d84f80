"""``conceptalpha report RUN_DIR``: rebuild a run's report from saved predictions."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the report command to the main app."""
