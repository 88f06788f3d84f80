"""Exports of predictions for other tools: Qlib's ``pred.pkl`` and an alphalens factor.

Both keep one model and seed: pass a filtered prediction table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from conceptalpha.errors import UserError
from conceptalpha.io import atomic_path


def _single_run(predictions: pd.DataFrame) -> pd.DataFrame:
    """The (datetime, instrument, score) rows, checked to be one model/seed (no duplicate keys)."""
    frame = predictions.reset_index() if "datetime" not in predictions.columns else predictions
    missing = {"datetime", "instrument", "score"} - set(frame.columns)
    if missing:
        raise UserError(f"prediction table lacks columns {sorted(missing)}")
    if frame.duplicated(["datetime", "instrument"]).any():
        raise UserError("prediction table has duplicate (datetime, instrument) rows: export one model and seed at a time")
    out = frame.assign(datetime=pd.to_datetime(frame["datetime"]), instrument=frame["instrument"].astype(str))
    return out.sort_values(["datetime", "instrument"], kind="stable")


def qlib_pred_frame(predictions: pd.DataFrame) -> pd.DataFrame:
    """Qlib's prediction layout: index (datetime, instrument), one float column ``score``."""
    frame = _single_run(predictions)
    return frame.set_index(["datetime", "instrument"])[["score"]].astype("float64")


def export_qlib_pred(predictions: pd.DataFrame, path: str | Path) -> Path:
    """Write ``pred.pkl`` as Qlib's recorder stores it (a pickled DataFrame; our own output, written atomically)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        qlib_pred_frame(predictions).to_pickle(tmp)
    return path


def to_alphalens_factor(predictions: pd.DataFrame) -> pd.Series:
    """The factor as alphalens expects it: a Series indexed (date, asset), NaN scores dropped.

    Pass it to ``alphalens.utils.get_clean_factor_and_forward_returns(factor, prices)``.
    """
    frame = _single_run(predictions).dropna(subset=["score"])
    factor = frame.set_index(["datetime", "instrument"])["score"].astype("float64")
    factor.index = factor.index.set_names(["date", "asset"])
    return factor.rename("factor")
