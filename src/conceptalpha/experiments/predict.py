"""``conceptalpha predict RUN_DIR --date D``: a ranked list for one day from a trained run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from conceptalpha.errors import UserError
from conceptalpha.experiments.config import validate_config
from conceptalpha.experiments.jobs import Job, expand_jobs
from conceptalpha.experiments.layout import JobFiles, RunFiles
from conceptalpha.experiments.runner import build_neural_model, build_window_dataset, explain_day, load_inputs
from conceptalpha.io import atomic_path


def predict_date(run_dir: str | Path, date: str, model: str = "HIST", seed: int | None = None, out: str | Path | None = None) -> Path:
    """Score every universe member on ``date`` with a run's trained model; write a ranked CSV.

    For HIST each row carries the additive split of the score (predefined /
    hidden / individual) and the stock's most attended predefined concepts.
    """
    files = RunFiles(Path(run_dir))
    config = _load_run_config(files)
    entry = next((m for m in config.models if m.name == model), None)
    if entry is None:
        raise UserError(f"run {run_dir} has no model {model!r} (it has: {', '.join(m.name for m in config.models)})")
    seed = config.seeds[0] if seed is None else seed
    if seed not in config.seeds:
        raise UserError(f"run {run_dir} has no seed {seed} (it has: {config.seeds})")
    when = pd.Timestamp(date)
    job = _job_for(expand_jobs(config), model, seed, when)
    inputs = load_inputs(config)
    dataset = build_window_dataset(inputs, config, job.segment_dates, entry)
    t = dataset.calendar.index_of(when)
    day = dataset.day(t)
    if day.n == 0:
        raise UserError(f"no universe member has data on {when.date()}")
    ranked = _score_day(inputs, dataset, entry, files.job(job.dir_parts), day)
    path = Path(out) if out else files.root / f"predict_{when.date()}_{model}.csv"
    with atomic_path(path) as tmp:
        ranked.to_csv(tmp, index=False)
    return path


def _load_run_config(files: RunFiles):
    if not files.config.exists():
        raise UserError(f"{files.root} is not a run directory (no config.yaml)")
    return validate_config(yaml.safe_load(files.config.read_text(encoding="utf-8")), source=str(files.config))


def _job_for(jobs: list[Job], model: str, seed: int, when: pd.Timestamp) -> Job:
    """The model/seed's job whose test segment holds the date (the last window's after the test end)."""
    mine = [job for job in jobs if job.model == model and job.seed == seed]
    if len(mine) == 1:
        return mine[0]
    for job in mine:
        test = job.segment_dates["test"]
        if pd.Timestamp(test[0]) <= when <= pd.Timestamp(test[1]):
            return job
    return mine[-1]


def _score_day(inputs, dataset, entry, job: JobFiles, day) -> pd.DataFrame:
    from conceptalpha.models.registry import get_model_spec

    spec = get_model_spec(entry.name)
    frame = pd.DataFrame({"instrument": day.instruments})
    if spec.kind == "gbdt":
        from conceptalpha.models.gbdt import LightGBMModel

        model_file = job.gbdt_model
        if not model_file.exists():
            raise UserError(f"{model_file} is missing: was {entry.name} trained in this run?")
        frame["score"] = LightGBMModel.load(model_file).predict(day.x.reshape(day.n, -1))
    else:
        import torch

        best = job.best
        if not best.exists():
            raise UserError(f"{best} is missing: was {entry.name} trained in this run?")
        model = build_neural_model(entry, dataset)
        model.load_state_dict(torch.load(best, map_location="cpu", weights_only=True))
        model.eval()
        if hasattr(model, "explain"):
            frame = pd.concat([frame, explain_day(model, inputs, day).drop(columns=["instrument"])], axis=1)
        else:
            market = {"market": torch.from_numpy(day.market)} if spec.uses_market else {}
            with torch.no_grad():
                frame["score"] = model(torch.from_numpy(day.x), **market).numpy()
    frame.insert(0, "date", day.date.date())
    frame = frame.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame
