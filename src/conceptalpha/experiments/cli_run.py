"""``conceptalpha run | demo | grid | predict``: the experiment commands."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the experiment commands to the main app."""
