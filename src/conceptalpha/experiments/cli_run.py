"""``conceptalpha run | demo | grid | predict``: the experiment commands."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer


CHECK_HELP = "Only validate the config (with --set) and print it resolved, every default filled in; run nothing."


def print_resolved(path: Path, config) -> None:
    """The resolved config as YAML (itself a valid config of the same run), for ``--check``."""
    import yaml

    from conceptalpha.experiments.config import resolved_config

    typer.echo(f"# {path}: valid. Every default filled in; models[].params/trainer are what each model uses.")
    typer.echo(yaml.safe_dump(resolved_config(config), sort_keys=False, allow_unicode=True), nl=False)


def register(app: typer.Typer) -> None:
    """Add the experiment commands to the main app."""
    app.command("run")(run)
    app.command("demo")(demo)
    app.command("grid")(grid)
    app.command("predict")(predict)


def run(
    config: Path = typer.Argument(..., help="Experiment config (YAML)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default: the config's output)."),
    set_: list[str] = typer.Option([], "--set", help="Override: key.path=value (repeatable); models=HIST,GRU."),
    resume: bool = typer.Option(False, "--resume", help="Continue a killed run from its checkpoints."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    check: bool = typer.Option(False, "--check", help=CHECK_HELP),
) -> None:
    """Run the whole pipeline of one config: data, concepts, models × seeds, evaluation, report.

    SIGINT/SIGTERM stop every worker, keep the checkpoints and print how to resume.
    """
    from conceptalpha.experiments.config import load_config
    from conceptalpha.experiments.orchestrate import print_summary, run_experiment

    cfg = load_config(config, list(set_))
    if check:
        return print_resolved(config, cfg)
    with _stops_cleanly():
        result = run_experiment(cfg, out_dir=out, resume=resume, progress=not quiet)
    print_summary(result)


@contextmanager
def _stops_cleanly():
    """An interrupted run ends with one line saying how to resume, exit code 128 + the signal."""
    from conceptalpha.experiments.orchestrate import RunInterrupted

    try:
        yield
    except RunInterrupted as stop:
        typer.secho(str(stop), err=True)
        sys.exit(128 + stop.signum)


def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory."),
    seeds: int = typer.Option(1, "--seeds", min=1, help="Number of seeds per model."),
    set_: list[str] = typer.Option([], "--set", help="Override: key.path=value (repeatable)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    """The main job on the built-in synthetic market: HIST vs GRU vs LightGBM, evaluated, backtested, reported.

    Re-running it into the same directory continues (and reuses) what is there.
    """
    from conceptalpha.experiments.config import load_config
    from conceptalpha.experiments.orchestrate import DEMO_CONFIG, print_summary, run_experiment

    cfg = load_config(DEMO_CONFIG, [f"seeds={list(range(seeds))}", *set_])
    with _stops_cleanly():
        result = run_experiment(cfg, out_dir=out, resume=True, progress=not quiet)
    print_summary(result)


def grid(
    config: Path = typer.Argument(..., help="Grid config: an experiment config whose `grid` lists are expanded."),
    out: Optional[Path] = typer.Option(None, "--out", help="Grid directory."),
    set_: list[str] = typer.Option([], "--set", help="Override: key.path=value (repeatable)."),
    executor: str = typer.Option("ray", "--executor", help="ray (local or --ray-address), local (processes, no Ray) or serial."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address (default: local)."),
    max_parallel: int = typer.Option(2, "--max-parallel", min=1, help="Jobs at once (local processes or local Ray)."),
    check: bool = typer.Option(False, "--check", help=CHECK_HELP),
) -> None:
    """Expand models × seeds × universes × windows into jobs, run them, aggregate one table."""
    from conceptalpha.experiments.config import load_config
    from conceptalpha.experiments.grid import run_grid

    if check:
        return print_resolved(config, load_config(config, list(set_)))
    with _stops_cleanly():
        run_grid(config, overrides=list(set_), out_dir=out, executor=executor, ray_address=ray_address, max_parallel=max_parallel)


def predict(
    run_dir: Path = typer.Argument(..., help="A finished run directory."),
    date: str = typer.Option(..., "--date", help="Trading date to score (YYYY-MM-DD)."),
    model: str = typer.Option("HIST", "--model", help="Which trained model of the run."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Which seed (default: the first)."),
    out: Optional[Path] = typer.Option(None, "--out", help="CSV path (default RUN_DIR/predict_DATE_MODEL.csv)."),
) -> None:
    """Score the universe on a date with a trained model; write a ranked CSV with explanations."""
    from conceptalpha.experiments.predict import predict_date

    path = predict_date(run_dir, date, model=model, seed=seed, out=out)
    typer.echo(f"wrote {path}")
