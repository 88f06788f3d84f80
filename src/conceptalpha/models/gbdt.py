"""LightGBM baseline: gradient-boosted trees on the flattened feature rows (Qlib's LGBModel).

Each (day, stock) row is one sample: Alpha158 rows [F] or Alpha360 windows
flattened to [T·F]. Training stacks every train day's members that have a
training label; early stopping watches the valid days' MSE.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from conceptalpha.errors import DataError, UserError
from conceptalpha.features.daydata import DayDataset
from conceptalpha.io import write_text

#: Qlib benchmark parameters for CSI300 Alpha158 (workflow_config_lightgbm_Alpha158.yaml), except
#: num_threads (20 there). ``subsample`` only acts with ``subsample_freq`` > 0, which Qlib leaves at 0:
#: kept as published so results stay comparable.
ALPHA158_PARAMS: dict[str, Any] = {
    "loss": "mse",
    "colsample_bytree": 0.8879,
    "learning_rate": 0.2,
    "subsample": 0.8789,
    "lambda_l1": 205.6999,
    "lambda_l2": 580.9768,
    "max_depth": 8,
    "num_leaves": 210,
    "num_threads": 2,
    "num_boost_round": 1000,
    "early_stopping_rounds": 50,
}
#: The Alpha360 config differs only in its learning rate.
ALPHA360_PARAMS: dict[str, Any] = {**ALPHA158_PARAMS, "learning_rate": 0.0421}

_OBJECTIVES = {"mse": "regression"}


def lightgbm_parameter_names() -> frozenset[str] | None:
    """Every parameter name and alias LightGBM knows, or None if this LightGBM cannot list them."""
    try:
        aliases = lgb.basic._ConfigAliases._get_all_param_aliases()
    except AttributeError:  # a private API: without it, LightGBM's own (silent) handling applies
        return None
    return frozenset(aliases) | frozenset(alias for group in aliases.values() for alias in group)


def check_parameter_names(params: dict[str, Any]) -> None:
    """``UserError`` naming the nearest valid name for a parameter LightGBM would silently ignore."""
    known = lightgbm_parameter_names()
    if known is None:
        return
    for name in params:
        if name not in known:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"unknown LightGBM parameter {name!r}{hint}")


class LightGBMModel:
    """LightGBM regressor with early stopping on a validation set.

    ``params`` are LightGBM parameters plus ``loss`` (only "mse"),
    ``num_boost_round`` and ``early_stopping_rounds``.
    """

    def __init__(self, **params: Any):
        settings = {**ALPHA158_PARAMS, **params}
        loss = settings.pop("loss")
        if loss not in _OBJECTIVES:
            raise UserError(f"LightGBM loss {loss!r} is not supported; expected one of {sorted(_OBJECTIVES)}")
        self.num_boost_round = int(settings.pop("num_boost_round"))
        self.early_stopping_rounds = int(settings.pop("early_stopping_rounds"))
        check_parameter_names(settings)
        self.params = {"objective": _OBJECTIVES[loss], "verbosity": -1, "deterministic": True, **settings}
        self.booster: lgb.Booster | None = None

    def fit(
        self,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_valid: np.ndarray,
        y_valid: np.ndarray,
        seed: int = 0,
    ) -> "LightGBMModel":
        """Boost up to ``num_boost_round`` trees; keep the iteration with the lowest valid MSE."""
        train_set = lgb.Dataset(x_train, label=y_train)
        valid_set = lgb.Dataset(x_valid, label=y_valid, reference=train_set)
        self.booster = lgb.train(
            {**self.params, "seed": seed},
            train_set,
            num_boost_round=self.num_boost_round,
            valid_sets=[valid_set],
            valid_names=["valid"],
            callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)],
        )
        return self

    @property
    def best_iteration(self) -> int:
        return self._fitted().best_iteration

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Scores [n] for rows ``x`` [n, F], with the best iteration's trees."""
        booster = self._fitted()
        return booster.predict(x, num_iteration=booster.best_iteration or None)

    def save(self, path: str | Path) -> None:
        """Write the booster, up to its best iteration, in LightGBM's text model format (atomically)."""
        write_text(path, self._fitted().model_to_string())

    @classmethod
    def load(cls, path: str | Path, **params: Any) -> "LightGBMModel":
        """A model whose booster is read from a LightGBM text model file."""
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "LightGBM model file not found")
        model = cls(**params)
        try:
            model.booster = lgb.Booster(model_str=path.read_text(encoding="utf-8"))
        except lgb.basic.LightGBMError as err:
            raise DataError(path, f"not a LightGBM text model ({err})") from None
        return model

    def _fitted(self) -> lgb.Booster:
        if self.booster is None:
            raise RuntimeError("LightGBMModel is not fitted")
        return self.booster


def resolve_params(params: dict[str, Any], seq_len: int | None) -> dict[str, Any]:
    """``params`` with ``learning_rate="auto"`` replaced by Qlib's rate for the feature layout:
    the Alpha360 one for sequence features (``seq_len`` set), the Alpha158 one for flat features."""
    if params.get("learning_rate", "auto") != "auto":
        return dict(params)
    reference = ALPHA360_PARAMS if seq_len else ALPHA158_PARAMS
    return {**params, "learning_rate": reference["learning_rate"]}


def stack_segment(
    dataset: DayDataset, segment: str, labelled_only: bool
) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """All rows of a segment's days: features [n, F'] (windows flattened), training label [n], and the
    row index (datetime, instrument, raw label). With ``labelled_only``, rows whose training label is
    missing are dropped."""
    xs, ys, frames = [], [], []
    for t in dataset.days(segment):
        day = dataset.day(t)
        keep = np.isfinite(day.y_train) if labelled_only else np.ones(day.n, dtype=bool)
        xs.append(day.x.reshape(day.n, -1)[keep])
        ys.append(day.y_train[keep])
        frames.append(
            pd.DataFrame({"datetime": day.date, "instrument": day.instruments[keep], "label": day.y_raw[keep]})
        )
    if not xs:
        raise UserError(f"the {segment!r} segment has no trading days")
    return (
        np.concatenate(xs).astype(np.float32, copy=False),
        np.concatenate(ys).astype(np.float32, copy=False),
        pd.concat(frames, ignore_index=True),
    )


def fit_lightgbm(model: LightGBMModel, dataset: DayDataset, seed: int = 0) -> LightGBMModel:
    """Fit on every train-day member with a training label; early-stop on the valid days likewise."""
    x_train, y_train, _ = stack_segment(dataset, "train", labelled_only=True)
    x_valid, y_valid, _ = stack_segment(dataset, "valid", labelled_only=True)
    if len(y_train) == 0 or len(y_valid) == 0:
        raise UserError("LightGBM needs labelled rows in both the train and the valid segment")
    return model.fit(x_train, y_train, x_valid, y_valid, seed=seed)


def predict_lightgbm(model: LightGBMModel, dataset: DayDataset, segment: str) -> pd.DataFrame:
    """Scores for every member of every day of ``segment``: DataFrame(datetime, instrument, score, label)
    with the raw label, as the shared trainer's ``predict`` returns."""
    x, _, rows = stack_segment(dataset, segment, labelled_only=False)
    rows.insert(2, "score", model.predict(x).astype(np.float32))
    return rows


def fit_predict_gbdt(dataset: DayDataset, params: dict[str, Any], seed: int, out_dir: str | Path) -> pd.DataFrame:
    """Fit LightGBM on ``dataset`` (see :func:`fit_lightgbm`), save it to ``out_dir/model.txt`` and
    return the valid and test predictions: DataFrame(datetime, instrument, score, label, segment)."""
    model = fit_lightgbm(LightGBMModel(**resolve_params(params, getattr(dataset, "seq_len", None))), dataset, seed)
    model.save(Path(out_dir) / "model.txt")
    return pd.concat(
        [predict_lightgbm(model, dataset, segment).assign(segment=segment) for segment in ("valid", "test")],
        ignore_index=True,
    )
