"""``conceptalpha report RUN_DIR``: rebuild a run's report from saved predictions;
``conceptalpha diagnose RUN_DIR``: why each model wins or fails (docs/diagnostics.md)."""

from __future__ import annotations

from pathlib import Path

import typer


def report(run_dir: Path = typer.Argument(..., help="A run directory (holds predictions.parquet).")) -> None:
    """Rebuild RUN_DIR/report.html, figures/*.png and comparison.md from the run's saved predictions and backtests."""
    from conceptalpha.experiments.run_report import build_report

    typer.echo(build_report(run_dir))


def diagnose(
    run_dir: Path = typer.Argument(..., help="A finished run directory (holds predictions.parquet)."),
    backtest: bool = typer.Option(True, "--backtest/--no-backtest", help="Run both strategies on the run's market (reloads its data)."),
) -> None:
    """Write RUN_DIR/diagnostics.json and diagnostics.md: IC by year, seed ensembles, HIST parts and attention, strategies and break-even costs."""
    from conceptalpha.experiments.diagnose import diagnose_run

    diagnose_run(run_dir, with_backtests=backtest)
    typer.echo((run_dir / "diagnostics.md").read_text(encoding="utf-8"))
    typer.echo(f"written: {run_dir / 'diagnostics.json'}, {run_dir / 'diagnostics.md'}")


def register(app: typer.Typer) -> None:
    """Add the report and diagnose commands to the main app."""
    app.command("report")(report)
    app.command("diagnose")(diagnose)
