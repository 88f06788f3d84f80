"""``conceptalpha predict RUN_DIR --date D``: a ranked list for one day from a trained run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from conceptalpha.errors import UserError
from conceptalpha.experiments.config import validate_config
from conceptalpha.experiments.orchestrate import job_dir, windows
from conceptalpha.experiments.runner import build_neural_model, build_window_dataset, explain_day, load_inputs
from conceptalpha.io import atomic_path


def predict_date(run_dir: str | Path, date: str, model: str = "HIST", seed: int | None = None, out: str | Path | None = None) -> Path:
    """Score every universe member on ``date`` with a run's trained model; write a ranked CSV.

    For HIST each row carries the additive split of the score (predefined /
    hidden / individual) and the stock's most attended predefined concepts.
    """
    run_dir = Path(run_dir)
    config = _load_run_config(run_dir)
    entry = next((m for m in config.models if m.name == model), None)
    if entry is None:
        raise UserError(f"run {run_dir} has no model {model!r} (it has: {', '.join(m.name for m in config.models)})")
    seed = config.seeds[0] if seed is None else seed
    if seed not in config.seeds:
        raise UserError(f"run {run_dir} has no seed {seed} (it has: {config.seeds})")
    when = pd.Timestamp(date)
    window = _window_for(config, when)
    job = job_dir(run_dir, config, model, seed, window)
    inputs = load_inputs(config)
    dataset = build_window_dataset(inputs, config, windows(config)[window], entry.features)
    t = dataset.calendar.index_of(when)
    day = dataset.day(t)
    if day.n == 0:
        raise UserError(f"no universe member has data on {when.date()}")
    ranked = _score_day(inputs, dataset, entry, job, day)
    path = Path(out) if out else run_dir / f"predict_{when.date()}_{model}.csv"
    with atomic_path(path) as tmp:
        ranked.to_csv(tmp, index=False)
    return path


def _load_run_config(run_dir: Path):
    path = run_dir / "config.yaml"
    if not path.exists():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml)")
    return validate_config(yaml.safe_load(path.read_text(encoding="utf-8")), source=str(path))


def _window_for(config, when: pd.Timestamp) -> int:
    """The rolling window whose test segment holds the date (the single window otherwise)."""
    segs = windows(config)
    if len(segs) == 1:
        return 0
    for w, seg in enumerate(segs):
        if pd.Timestamp(seg["test"][0]) <= when <= pd.Timestamp(seg["test"][1]):
            return w
    return len(segs) - 1


def _score_day(inputs, dataset, entry, job: Path, day) -> pd.DataFrame:
    from conceptalpha.models.registry import get_model_spec

    spec = get_model_spec(entry.name)
    frame = pd.DataFrame({"instrument": day.instruments})
    if spec.kind == "gbdt":
        from conceptalpha.models.gbdt import LightGBMModel

        model_file = job / "model.txt"
        if not model_file.exists():
            raise UserError(f"{model_file} is missing: was {entry.name} trained in this run?")
        frame["score"] = LightGBMModel.load(model_file).predict(day.x.reshape(day.n, -1))
    else:
        import torch

        best = job / "best.pt"
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
