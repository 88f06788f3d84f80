"""``conceptalpha report RUN_DIR``: rebuild a run's report from saved predictions."""

from __future__ import annotations

from pathlib import Path

import typer


def report(run_dir: Path = typer.Argument(..., help="A run directory (holds predictions.parquet).")) -> None:
    """Rebuild RUN_DIR/report.html, figures/*.png and comparison.md from the run's saved predictions and backtests."""
    from conceptalpha.experiments.run_report import build_report

    typer.echo(build_report(run_dir))


def register(app: typer.Typer) -> None:
    """Add the report command to the main app."""
    app.command("report")(report)
