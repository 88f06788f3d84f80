"""One experiment end to end: windows × models × seeds → predictions → metrics, backtests, report."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from conceptalpha.errors import UserError
from conceptalpha.experiments.config import ExperimentConfig, dump_config
from conceptalpha.experiments.runner import Inputs, build_window_dataset, load_inputs, run_one
from conceptalpha.io import atomic_path, write_json, write_text

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
log = logging.getLogger("conceptalpha")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]
    table: str


# ---------------------------------------------------------------- windows


def windows(config: ExperimentConfig) -> list[dict[str, tuple[str, str]]]:
    """Segments of each training window: one for a plain run, several for walk-forward retraining.

    Rolling: test windows of ``step_months`` from the configured test start to the
    test end; each is preceded by ``valid_months`` of validation and ``train_months``
    of training (``fixed``) or everything from the configured train start (``expanding``).
    """
    seg = config.segments
    if not config.rolling.enabled:
        return [seg.model_dump()]
    roll = config.rolling
    test_start, test_end = pd.Timestamp(seg.test[0]), pd.Timestamp(seg.test[1])
    out = []
    start = test_start
    while start <= test_end:
        stop = min(start + pd.DateOffset(months=roll.step_months) - pd.Timedelta(days=1), test_end)
        valid_start = start - pd.DateOffset(months=roll.valid_months)
        train_start = pd.Timestamp(seg.train[0]) if roll.mode == "expanding" else valid_start - pd.DateOffset(months=roll.train_months)
        out.append(
            {
                "train": (_d(train_start), _d(valid_start - pd.Timedelta(days=1))),
                "valid": (_d(valid_start), _d(start - pd.Timedelta(days=1))),
                "test": (_d(start), _d(stop)),
            }
        )
        start = stop + pd.Timedelta(days=1)
    return out


def _d(ts: pd.Timestamp) -> str:
    return ts.strftime("%Y-%m-%d")


# ---------------------------------------------------------------- run


def run_experiment(config: ExperimentConfig, out_dir: str | Path | None = None, resume: bool = False, progress: bool = True) -> RunResult:
    run_dir = Path(out_dir or config.output)
    config = config.model_copy(update={"output": str(run_dir)})
    _claim_run_dir(run_dir, config, resume)
    _setup_logging(run_dir)
    _set_threads(config.threads)
    log.info("run %s → %s", config.name, run_dir)
    inputs = load_inputs(config)
    predictions, explanations, seconds = [], [], {}
    for w, segments in enumerate(windows(config)):
        dataset = build_window_dataset(inputs, config, segments)
        if config.workers > 1:
            _train_in_workers(config, w, run_dir)
        for entry in config.models:
            for seed in config.seeds:
                job = job_dir(run_dir, config, entry.name, seed, w)
                preds, expl, secs = _run_or_reuse(inputs, dataset, segments, config, entry, seed, job, progress)
                predictions.append(preds.assign(window=w))
                if expl is not None:
                    explanations.append(expl.assign(model=entry.name, seed=seed))
                seconds.setdefault(entry.name, []).append(secs)
    predictions = pd.concat(predictions, ignore_index=True)
    _write_parquet(run_dir / "predictions.parquet", predictions)
    if explanations:
        _write_parquet(run_dir / "explanations.parquet", pd.concat(explanations, ignore_index=True))
    metrics = evaluate_run(predictions, inputs, config, run_dir, seconds)
    write_json(run_dir / "metrics.json", metrics)
    write_json(run_dir / "data.json", {"notes": inputs.notes, "concepts": inputs.graph.report()})
    table = metrics_table(metrics)
    write_text(run_dir / "results.md", table + "\n")
    _build_report(run_dir)
    return RunResult(run_dir, metrics, table)


def _train_in_workers(config: ExperimentConfig, window: int, run_dir: Path) -> None:
    """Train one window's unfinished jobs in ``config.workers`` processes; the caller then
    collects their saved results exactly as it reuses a finished job's.

    Each process rebuilds the inputs (the dataset comes from the run's cache) and seeds
    its job as a serial run does, so predictions do not depend on ``workers``.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    jobs = [
        (i, seed)
        for i, entry in enumerate(config.models)
        for seed in config.seeds
        if not _finished(job_dir(run_dir, config, entry.name, seed, window))
    ]
    if len(jobs) < 2:
        return
    jobs.sort(key=lambda job: not _is_neural(config.models[job[0]].name))  # longest first
    payload = config.model_dump_json()
    log.info("training %d jobs in %d worker processes (progress bars off; see run.log)", len(jobs), config.workers)
    context = multiprocessing.get_context("spawn")  # fork would copy torch's thread pools
    with ProcessPoolExecutor(max_workers=min(config.workers, len(jobs)), mp_context=context) as pool:
        futures = {pool.submit(_train_job, payload, window, i, seed): (i, seed) for i, seed in jobs}
        for done, future in enumerate(as_completed(futures), 1):
            i, seed = futures[future]
            future.result()  # a failed job raises here, as it would in a serial run
            log.info("finished %s seed %d (%d/%d)", config.models[i].name, seed, done, len(jobs))


def _train_job(config_json: str, window: int, model_index: int, seed: int) -> None:
    """Worker process: one model × seed of one window, saved in its job directory."""
    config = ExperimentConfig.model_validate_json(config_json)
    run_dir = Path(config.output)
    _setup_logging(run_dir)
    _set_threads(config.threads)
    inputs = load_inputs(config)
    segments = windows(config)[window]
    dataset = build_window_dataset(inputs, config, segments)
    entry = config.models[model_index]
    job = job_dir(run_dir, config, entry.name, seed, window)
    _run_or_reuse(inputs, dataset, segments, config, entry, seed, job, progress=False)


def _set_threads(threads: int) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _claim_run_dir(run_dir: Path, config: ExperimentConfig, resume: bool) -> None:
    saved = run_dir / "config.yaml"
    text = dump_config(config)
    if saved.exists() and not _same_run(saved, config):
        raise UserError(
            f"{run_dir} holds a run of a different config; use another --out (or delete it) to start a new run"
        )
    if saved.exists() and not resume:
        raise UserError(
            f"{run_dir} already holds this run; pass --resume to continue it (finished models are reused, "
            "unfinished ones resume from their last checkpoint) or choose another --out"
        )
    write_text(saved, text)


def _same_run(saved: Path, config: ExperimentConfig) -> bool:
    """Whether a saved config describes this run (where the directory lives does not count)."""
    import yaml

    before = yaml.safe_load(saved.read_text(encoding="utf-8"))
    now = config.model_dump(mode="json")
    before.pop("output", None)
    now.pop("output", None)
    return before == now


def job_dir(run_dir: Path, config: ExperimentConfig, model: str, seed: int, window: int) -> Path:
    """Where one model × seed of one training window keeps its checkpoints and results."""
    job = run_dir / "models" / model / f"seed{seed}"
    return job / f"window{window}" if config.rolling.enabled else job


def _run_or_reuse(inputs: Inputs, dataset, segments: dict, config, entry, seed, job: Path, progress: bool):
    """A finished job's saved results, or train it (resuming from its checkpoint when there is one)."""
    done = job / "predictions.parquet"
    if _finished(job):
        meta = json.loads((job / "job.json").read_text(encoding="utf-8"))
        expl = job / "explanations.parquet"
        return pd.read_parquet(done), (pd.read_parquet(expl) if expl.exists() else None), meta["train_seconds"]
    log.info("train %s seed %d in %s", entry.name, seed, job)
    if not progress:
        entry = entry.model_copy(update={"trainer": entry.trainer.model_copy(update={"show_progress": False})})
    out = run_one(inputs, dataset, segments, config, entry, seed, job, resume=True)
    if out["explanations"] is not None:
        _write_parquet(job / "explanations.parquet", out["explanations"])
    write_json(job / "job.json", {"train_seconds": out["train_seconds"]})
    _write_parquet(done, out["predictions"])  # last: its presence marks the job finished
    return out["predictions"], out["explanations"], out["train_seconds"]


def _finished(job: Path) -> bool:
    """A job is finished once its predictions are saved (written last, atomically)."""
    return (job / "predictions.parquet").exists()


def _is_neural(name: str) -> bool:
    from conceptalpha.models.registry import get_model_spec

    return get_model_spec(name).kind == "neural"


def _write_parquet(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def _setup_logging(run_dir: Path) -> None:
    log.setLevel(logging.INFO)
    for handler in list(log.handlers):
        log.removeHandler(handler)
    file_handler = logging.FileHandler(run_dir / "run.log", encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(file_handler)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(stream)


# ---------------------------------------------------------------- evaluation

HEADLINE = ("IC", "ICIR", "RankIC", "RankICIR", "precision@30")


def evaluate_run(predictions: pd.DataFrame, inputs: Inputs, config: ExperimentConfig, run_dir: Path, seconds: dict) -> dict:
    """metrics.json: per model, test/valid factor metrics (mean ± std over seeds) and backtests."""
    from conceptalpha.evaluation.metrics import factor_summary

    out: dict[str, Any] = {
        "name": config.name,
        "label": config.features.label,
        "universe": inputs.market.universe.name,
        "segments": config.segments.model_dump(),
        "rolling": config.rolling.enabled,
        "notes": inputs.notes,
        "models": {},
    }
    for name, by_model in predictions.groupby("model", sort=False):
        per_seed: dict[str, dict] = {"test": {}, "valid": {}}
        backtests: list[dict] = []
        backtests_no_cost: list[dict] = []
        for seed, frame in by_model.groupby("seed"):
            for segment in ("test", "valid"):
                seg = frame[frame["segment"] == segment]
                if not seg.empty:
                    per_seed[segment][int(seed)] = factor_summary(seg)
            daily, with_cost, no_cost = _backtest(frame[frame["segment"] == "test"], inputs, config)
            _write_parquet(run_dir / f"backtest_{name}_seed{int(seed)}.parquet", daily)
            backtests.append(with_cost)
            backtests_no_cost.append(no_cost)
        out["models"][name] = {
            "test": _mean_std(per_seed["test"]),
            "valid": _mean_std(per_seed["valid"]),
            "test_by_year": _by_year_mean(per_seed["test"]),
            "backtest": _mean_dicts(backtests),
            "backtest_no_cost": _mean_dicts(backtests_no_cost),
            "train_seconds": float(np.mean(seconds.get(name, [np.nan]))),
            "seeds": sorted(int(s) for s in by_model["seed"].unique()),
        }
    if inputs.oracle is not None:
        out["oracle"] = {"test": _oracle_summary(predictions, inputs)}
    return out


def _backtest(test: pd.DataFrame, inputs: Inputs, config: ExperimentConfig) -> tuple[pd.DataFrame, dict, dict]:
    from conceptalpha.evaluation.backtest import backtest

    result = backtest(test[["datetime", "instrument", "score"]], inputs.market, config.backtest_settings())
    return result.daily.reset_index(), _with_annual(result.summary(with_cost=True)), _with_annual(result.summary(with_cost=False))


def _with_annual(summary: dict) -> dict:
    """metrics.json names the compounded annualised return ``annual_return``."""
    return {"annual_return": summary["annualized_return"], **summary}


def _oracle_summary(predictions: pd.DataFrame, inputs: Inputs) -> dict:
    """The oracle's test metrics on exactly the rows the models were scored on."""
    from conceptalpha.evaluation.metrics import factor_summary

    first = predictions[(predictions["segment"] == "test")]
    first = first[(first["model"] == first["model"].iloc[0]) & (first["seed"] == first["seed"].iloc[0])]
    panel = inputs.market.panel
    t = panel.calendar.dates.get_indexer(pd.to_datetime(first["datetime"]))
    i = panel.instrument_positions(first["instrument"].to_numpy())
    frame = first[["datetime", "instrument", "label"]].assign(score=inputs.oracle[t, i])
    summary = factor_summary(frame)["all"]
    return {k: summary[k] for k in ("IC", "ICIR", "RankIC", "RankICIR", "precision@30")}


def _mean_std(by_seed: dict[int, dict]) -> dict[str, dict[str, float]]:
    if not by_seed:
        return {}
    frame = pd.DataFrame({seed: s["all"] for seed, s in by_seed.items()}).T
    return {k: {"mean": float(frame[k].mean()), "std": float(frame[k].std(ddof=1)) if len(frame) > 1 else 0.0} for k in frame.columns}


def _by_year_mean(by_seed: dict[int, dict]) -> dict[str, dict[str, float]]:
    years = sorted({y for s in by_seed.values() for y in s["by_year"]})
    return {
        str(y): {k: float(np.mean([s["by_year"][y][k] for s in by_seed.values() if y in s["by_year"]])) for k in ("IC", "RankIC")}
        for y in years
    }


def _mean_dicts(dicts: list[dict]) -> dict[str, float]:
    return {k: float(np.mean([d[k] for d in dicts])) for k in dicts[0]} if dicts else {}


def metrics_table(metrics: dict) -> str:
    """Markdown table: one row per model, mean ± std over seeds."""
    rows = []
    for name, m in metrics["models"].items():
        test = m["test"]
        row = {"model": name, "seeds": len(m["seeds"])}
        for key in HEADLINE:
            row[key] = f"{test[key]['mean']:.4f} ± {test[key]['std']:.4f}" if key in test else "n/a"
        bt = m["backtest"]
        row["annual return (cost)"] = f"{bt.get('annual_return', float('nan')):.2%}"
        row["excess annual"] = f"{bt.get('excess_annualized_return', float('nan')):.2%}"
        row["IR"] = f"{bt.get('information_ratio', float('nan')):.2f}"
        row["max DD"] = f"{bt.get('max_drawdown', float('nan')):.2%}"
        row["train s"] = f"{m['train_seconds']:.0f}"
        rows.append(row)
    if "oracle" in metrics:
        o = metrics["oracle"]["test"]
        rows.append({"model": "oracle (ceiling)", "seeds": "", **{k: f"{o[k]:.4f}" for k in HEADLINE}})
    table = pd.DataFrame(rows).fillna("")
    return f"Test window, label {metrics['label']}, universe {metrics['universe']}\n\n" + table.to_markdown(index=False)


def _build_report(run_dir: Path) -> Path | None:
    from conceptalpha.evaluation.report import build_report

    return build_report(run_dir)


def print_summary(result: RunResult) -> None:
    print(result.table)
    print(f"\nrun directory: {result.run_dir}")
    report = result.run_dir / "report.html"
    if report.exists():
        print(f"report: {report.resolve()}")
