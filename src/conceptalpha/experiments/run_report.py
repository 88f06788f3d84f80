"""``conceptalpha report RUN_DIR``: render a run's report from the files the run wrote.

Reads ``predictions.parquet`` (required), ``metrics.json`` (the metrics the run
computed; recomputed from the frames when absent), ``backtest_<model>_seed<k>.parquet``,
``explanations.parquet``, ``config.yaml`` (title, label, backtest settings) and
the notes of ``data.json`` — the names of :mod:`conceptalpha.experiments.layout`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import yaml

from conceptalpha.errors import DataError, UserError
from conceptalpha.evaluation.backtest import lag_for_label
from conceptalpha.evaluation.report import render_report
from conceptalpha.experiments.layout import RunFiles


def build_report(run_dir: str | Path) -> Path:
    """Rebuild ``RUN_DIR/report.html`` (and figures) from the run's saved files; returns its path."""
    files = RunFiles(Path(run_dir))
    if not files.root.is_dir():
        raise UserError(f"run directory {files.root} does not exist")
    if not files.predictions.exists():
        raise UserError(f"{files.root} is not a run directory: predictions.parquet is missing")
    predictions = _read_table(files.predictions)
    backtests = {p.stem.removeprefix("backtest_"): _read_table(p) for p in files.backtests()}
    explanations = _read_table(files.explanations) if files.explanations.exists() else None
    config = _read_mapping(files.config, yaml.safe_load)
    metrics = _read_mapping(files.metrics, json.loads) or None
    title = f"conceptalpha report: {config.get('name', files.root.name)}"
    return render_report(files.root, predictions, backtests, explanations, title, _run_notes(files, config), metrics=metrics)


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a corrupt or foreign file
        raise DataError(path, f"cannot be read as a parquet table ({type(err).__name__}: {err})") from None


def _read_mapping(path: Path, parse) -> dict:
    """A saved YAML/JSON mapping, {} when the file is absent."""
    if not path.exists():
        return {}
    try:
        loaded = parse(path.read_text("utf-8"))
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise DataError(path, f"is not valid {path.suffix[1:].upper()}: {err}") from None
    return loaded if isinstance(loaded, dict) else {}


def _run_notes(files: RunFiles, config: Mapping) -> list[str]:
    """Label protocol and backtest settings from the config, plus the notes saved in data.json."""
    notes = []
    features = config.get("features")
    label = features.get("label") if isinstance(features, dict) else None
    if label:
        try:
            timing = f"; the backtest trades a score dated t at the close of day t+{lag_for_label(str(label))}"
        except UserError:
            timing = ""
        notes.append(f"Label protocol: {label} (evaluated against the raw forward return){timing}.")
    if config.get("backtest"):
        notes.append(f"Backtest settings: {json.dumps(config['backtest'], ensure_ascii=False)}")
    return notes + [str(n) for n in _read_mapping(files.data, json.loads).get("notes", [])]
