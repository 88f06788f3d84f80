"""Exports of predictions for other tools: Qlib's ``pred.pkl`` and an alphalens factor.

Both keep one model and seed: pass a filtered prediction table.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from conceptalpha.errors import UserError
from conceptalpha.evaluation.backtest import one_run_scores
from conceptalpha.io import atomic_path


def _single_run(predictions: pd.DataFrame) -> pd.DataFrame:
    """The (datetime, instrument, score) rows, checked to be one model/seed (no duplicate keys)."""
    frame = one_run_scores(predictions, "prediction table", "export")
    out = frame.assign(datetime=pd.to_datetime(frame["datetime"]), instrument=frame["instrument"].astype(str))
    return out.sort_values(["datetime", "instrument"], kind="stable")


def qlib_pred_frame(predictions: pd.DataFrame) -> pd.DataFrame:
    """Qlib's prediction layout: index (datetime [ns], instrument [object]), one float column ``score``."""
    frame = _single_run(predictions)
    index = pd.MultiIndex.from_arrays(
        [pd.DatetimeIndex(frame["datetime"]).as_unit("ns"), pd.Index(frame["instrument"].to_numpy(dtype=object), dtype=object)],
        names=["datetime", "instrument"],
    )
    return pd.DataFrame({"score": frame["score"].to_numpy(dtype="float64")}, index=index)


def export_qlib_pred(predictions: pd.DataFrame, path: str | Path) -> Path:
    """Write the Qlib-layout frame: ``.pkl`` → pickle (Qlib's ``pred.pkl``), ``.parquet`` → parquet.

    A pickle only loads under the pandas major version that wrote it: a
    ``pred.pkl`` written with pandas 3 does not unpickle under pandas 2 (which
    Qlib 0.9 runs on). Across versions use ``pred.parquet``:
    ``pd.read_parquet("pred.parquet")`` gives back the same indexed frame.
    """
    path = Path(path)
    if path.suffix not in (".pkl", ".parquet"):
        raise UserError(f"{path}: a prediction export must end in .pkl or .parquet")
    frame = qlib_pred_frame(predictions)
    with atomic_path(path) as tmp:
        if path.suffix == ".pkl":
            frame.to_pickle(tmp)
        else:
            frame.to_parquet(tmp)
    return path


def to_alphalens_factor(predictions: pd.DataFrame) -> pd.Series:
    """The factor as alphalens expects it: a Series indexed (date, asset), NaN scores dropped.

    Pass it to ``alphalens.utils.get_clean_factor_and_forward_returns(factor, prices)``.
    """
    frame = _single_run(predictions).dropna(subset=["score"])
    factor = frame.set_index(["datetime", "instrument"])["score"].astype("float64")
    factor.index = factor.index.set_names(["date", "asset"])
    return factor.rename("factor")
