"""Train one job: data → dataset → concepts → model → predictions, saved in its job directory.

The run-directory layout is :mod:`conceptalpha.experiments.layout`; which jobs a
config holds is :mod:`conceptalpha.experiments.jobs`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from conceptalpha.concepts.graph import ConceptGraph, build_concept_graph
from conceptalpha.concepts.sources import read_source, unique_source_names
from conceptalpha.data.panel import Market
from conceptalpha.experiments.config import ExperimentConfig, ModelEntry
from conceptalpha.experiments.jobs import Job, config_for_universe
from conceptalpha.experiments.layout import JobFiles, RunFiles
from conceptalpha.features.dataset import DatasetConfig, build_dataset
from conceptalpha.io import atomic_path, write_json

log = logging.getLogger("conceptalpha")

SNAPSHOT_NOTE = (
    "Concept tables are single snapshots applied to every past day: a look-ahead "
    "(survivorship) bias shared with the HIST paper's own concept matrix."
)


@dataclass
class Inputs:
    """The market and its concept graph, loaded once per run."""

    market: Market
    graph: ConceptGraph
    oracle: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)

    def membership(self, day) -> Any:
        """The day's stock→concept matrix [N, C] (scipy sparse), rows in the day's order."""
        return self.graph.membership(day.date, day.instruments)


# ---------------------------------------------------------------- data


def load_inputs(config: ExperimentConfig) -> Inputs:
    """Load the market (synthetic or from files), apply a derived universe, build the concept graph."""
    market, tables, oracle, notes = _market_and_concept_tables(config)
    market = _apply_derived_universe(config, market, notes)
    if config.features.market_context:
        from conceptalpha.features.market_context import context_notes

        notes.extend(context_notes(market))
    has_bars = np.isfinite(market.panel.field("close"))
    graph = build_concept_graph(tables, market.universe, has_bars=has_bars, min_members=config.concepts.min_members)
    return Inputs(market, graph, oracle, notes)


def _market_and_concept_tables(config: ExperimentConfig) -> tuple[Market, list[pd.DataFrame], np.ndarray | None, list[str]]:
    if config.is_synthetic:
        from conceptalpha.concepts.sources import from_frame
        from conceptalpha.data.synthetic import SynthConfig, generate

        syn = config.data.synthetic
        synth = generate(SynthConfig(seed=syn.seed, n_stocks=syn.n_stocks, n_years=syn.n_years, market=syn.market, **syn.extra))
        tables = [from_frame(synth.concepts, source="synthetic", market=synth.market.kind)]
        notes = ["Synthetic market: the oracle IC is the ceiling any model can reach on it.", market_note(synth.market)]
        return synth.market, tables, synth.oracle(config.features.label), notes
    from conceptalpha.data.loader import load_market
    from conceptalpha.data.qlib import MARKET_DEFAULT

    market = load_market(
        config.data.provider,
        universe=config.data.universe,
        start=config.data.start,
        end=config.data.end,
        shares=config.data.shares,
        st_table=config.data.st_table,
        vwap_proxy=config.data.vwap_proxy,
        market=config.data.market,
        benchmark=config.data.benchmark or MARKET_DEFAULT,
    )
    sources = config.concepts.sources
    names = unique_source_names([src.kind for src in sources])
    tables = [read_source(src.kind, src.path, source=name, market=market.kind) for src, name in zip(sources, names)]
    notes = [SNAPSHOT_NOTE] if tables else ["No concept source configured: HIST runs without predefined concepts."]
    return market, tables, None, [*(notes if _uses_concepts(config) else []), market_note(market)]


def _uses_concepts(config: ExperimentConfig) -> bool:
    from conceptalpha.models.registry import get_model_spec

    return any(get_model_spec(entry.name).uses_concepts for entry in config.models)


def market_note(market: Market) -> str:
    """One line for the report: the market's rules and what excess returns are measured against."""
    from conceptalpha.evaluation.backtest import benchmark_label
    from conceptalpha.evaluation.market_rules import rules_for

    how = " (inferred from the symbols)" if market.kind_inferred else ""
    rules = "A-share price limits by board, date, ST status and listing age" if market.kind == "cn" else "no price limits, no stamp duty"
    benchmark = benchmark_label(market, rules_for(market.kind))
    excess = "no benchmark series: no excess returns" if benchmark == "none" else f"backtest excess returns are against {benchmark}"
    return f"Market {market.kind}{how}: {rules}; {excess}."


def _apply_derived_universe(config: ExperimentConfig, market: Market, notes: list[str]) -> Market:
    spec = config.data.derived_universe
    if spec is None:
        return market
    from conceptalpha.data.derived import largest_members
    from conceptalpha.data.market_cap import market_cap

    caps = market_cap(market.panel, market.shares).values
    market.universe = largest_members(market, caps, n=spec.n, months=tuple(spec.months), name=spec.name)
    notes.append(
        f"Universe {spec.name}: the {spec.n} largest {config.data.universe} members by market cap, "
        f"re-selected at the end of months {spec.months} using only data known then."
    )
    return market


def build_window_dataset(inputs: Inputs, config: ExperimentConfig, segments: dict[str, tuple[str, str]], entry: ModelEntry | None = None):
    """The daily dataset of one set of segments (processors fit on its train window only), with the
    feature set and label normalisation of ``entry`` where it sets its own."""
    feature_set, window, label_norm = config.data_for(entry)
    ds_cfg = DatasetConfig(
        feature_set=feature_set,
        label=config.features.label,
        label_norm=label_norm,
        segments=segments,
        market_context=config.features.market_context,
        window=window,
    )
    return build_dataset(inputs.market, ds_cfg, cache_dir=cache_dir(config))


def cache_dir(config: ExperimentConfig) -> Path:
    return Path(config.cache_dir) if config.cache_dir else RunFiles(Path(config.output)).cache


# ---------------------------------------------------------------- jobs

progress_log = logging.getLogger("conceptalpha.progress")


class JobContext:
    """What a process needs to train jobs: each universe's inputs and the latest dataset, loaded once.

    Jobs come window by window, so keeping one dataset reuses it for every model
    and seed of a window without holding every window's arrays at once.
    """

    def __init__(self, config: ExperimentConfig):
        self.config = config
        self._inputs: dict[str, Inputs] = {}
        self._dataset: tuple[tuple, Any] = ((), None)

    def inputs(self, universe: str) -> Inputs:
        if universe not in self._inputs:
            self._inputs[universe] = load_inputs(config_for_universe(self.config, universe))
        return self._inputs[universe]

    def dataset(self, job: Job):
        key = (job.universe, job.segments)
        if self._dataset[0] != key:
            self._dataset = ((), None)  # free the previous window's arrays first
            self._dataset = (key, build_window_dataset(self.inputs(job.universe), self.config, job.segment_dates))
        return self._dataset[1]


def train_job(context: JobContext, job: Job, files: JobFiles, progress: bool) -> None:
    """Train one job into its directory unless it is finished; a killed job resumes from its checkpoint."""
    if files.finished():
        return
    config = context.config
    entry = config.models[job.model_index]
    log.info("train %s in %s", job.describe(), files.root)
    if not progress and is_neural(entry.name):
        entry = entry.model_copy(update={"trainer": entry.trainer.model_copy(update={"show_progress": False})})
    out = run_one(
        context.inputs(job.universe), context.dataset(job), job.segment_dates, config, entry, job.seed, files.root,
        resume=True, on_epoch=lambda epoch: log_epoch(job, epoch),
    )
    if out["explanations"] is not None:
        write_parquet(files.explanations, out["explanations"])
    write_json(files.meta, {"train_seconds": out["train_seconds"]})
    write_parquet(files.predictions, out["predictions"])  # last: its presence marks the job finished


def log_epoch(job: Job, epoch: dict) -> None:
    """One line per epoch, to run.log (and the console when no progress bar is shown)."""
    progress_log.info(
        "%s epoch %d/%d: train loss %.4f, valid IC %.4f, %.1f s, best %.4f (epoch %d)",
        job.describe(), epoch["epoch"], epoch["max_epochs"], epoch["train_loss"], epoch["valid_ic"],
        epoch["seconds"], epoch["best_ic"], epoch["best_epoch"],
    )


def load_job(job: Job, files: JobFiles) -> tuple[pd.DataFrame, pd.DataFrame | None, float]:
    """A finished job's predictions (with its rolling window), explanations and training seconds."""
    meta = json.loads(files.meta.read_text(encoding="utf-8"))
    predictions = pd.read_parquet(files.predictions).assign(window=job.window)
    explanations = pd.read_parquet(files.explanations) if files.explanations.exists() else None
    if explanations is not None:
        explanations = explanations.assign(model=job.model, seed=job.seed)
    return predictions, explanations, meta["train_seconds"]


def setup_run_log(path: Path, console: bool = True, epochs_on_console: bool = True) -> None:
    """Log to ``path`` (every line) and to stderr (without the per-epoch lines when a progress bar shows them)."""
    log.setLevel(logging.INFO)
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(path, encoding="utf-8")
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(file_handler)
    if console:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter("%(message)s"))
        if not epochs_on_console:
            stream.addFilter(lambda record: record.name != progress_log.name)
        log.addHandler(stream)


def is_neural(name: str) -> bool:
    from conceptalpha.models.registry import get_model_spec

    return get_model_spec(name).kind == "neural"


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


# ---------------------------------------------------------------- models


def build_neural_model(entry, dataset) -> Any:
    """A neural model for the dataset's features (and its market vector, for a model that reads one), seeded by the caller."""
    from conceptalpha.models.registry import build_model, get_model_spec

    market = {"d_market": dataset.d_market} if get_model_spec(entry.name).uses_market else {}
    return build_model(entry.name, d_feat=dataset.d_feat, seq_len=dataset.seq_len, **{**entry.params, **market})

def run_one(inputs: Inputs, dataset, segments: dict, config: ExperimentConfig, entry, seed: int, job_dir: Path, resume: bool, on_epoch=None) -> dict:
    """Train one model with one seed; returns predictions (valid+test), explanations, timing."""
    from conceptalpha.models.registry import get_model_spec

    spec = get_model_spec(entry.name)
    if config.data_for(entry) != config.data_for():
        dataset = build_window_dataset(inputs, config, segments, entry)
    started = time.perf_counter()
    explanations = None
    if spec.kind == "gbdt":
        from conceptalpha.models.gbdt import fit_predict_gbdt

        preds = fit_predict_gbdt(dataset, params={**spec.defaults, **entry.params}, seed=seed, out_dir=job_dir)
    else:
        from conceptalpha.training.seed import set_seed
        from conceptalpha.training.trainer import fit, predict, segment_predictions

        set_seed(seed)  # weights are drawn at construction: seed first, or runs differ
        model = build_neural_model(entry, dataset)
        tcfg = config.trainer_for(entry, seed)
        membership = inputs.membership if spec.uses_concepts else None
        result = fit(model, dataset, membership, tcfg, job_dir, resume=resume, on_epoch=on_epoch)
        # the selected weights were scored on the validation days during training, and HIST's
        # explanations carry its test scores: neither pass is run twice
        if result.valid_scores is not None:
            valid = segment_predictions(dataset, "valid", result.valid_scores)
        else:
            valid = predict(model, dataset, "valid", membership=membership)
        if hasattr(model, "explain"):
            explanations = explain_segment(model, dataset, inputs, "test")
            test = segment_predictions(dataset, "test", explanations["score"].to_numpy())
        else:
            test = predict(model, dataset, "test", membership=membership)
        preds = pd.concat([valid.assign(segment="valid"), test.assign(segment="test")], ignore_index=True)
    seconds = time.perf_counter() - started
    preds = preds.assign(model=entry.name, seed=seed)
    if "segment" not in preds:
        raise RuntimeError("predictions lack a segment column")
    return {"predictions": preds, "explanations": explanations, "train_seconds": seconds}


def explain_segment(model, dataset, inputs: Inputs, segment: str) -> pd.DataFrame:
    """HIST's additive split of every prediction of a segment, with each stock's top concept."""
    frames = [explain_day(model, inputs, dataset.day(t)).assign(datetime=dataset.day(t).date) for t in dataset.days(segment)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def explain_day(model, inputs: Inputs, day) -> pd.DataFrame:
    """One day's scores split into predefined / hidden / individual parts (they sum to score − bias).

    ``top_concepts`` lists the stock's most attended predefined concepts with their
    attention weight; ``attention_entropy(_norm)`` the entropy of that attention (see
    ``HISTExplanation``); ``hidden_neighbours`` the stocks it shares a hidden concept with.
    """
    import torch

    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        ex = model.explain(
            torch.from_numpy(day.x).to(device),
            inputs.membership(day),
            torch.from_numpy(day.market_cap).to(device),
        )
    frame = ex.to_frame(day.instruments, inputs.graph.concepts.sort_values("id")["label"].to_numpy())
    return pd.DataFrame(
        {
            "instrument": frame["instrument"],
            "score": frame["prediction"],
            "part_predefined": frame["predefined"],
            "part_hidden": frame["hidden"],
            "part_individual": frame["individual"],
            "bias": frame["bias"],
            "attention_entropy": frame["attention_entropy"],
            "attention_entropy_norm": frame["attention_entropy_norm"],
            "top_concept": [links[0][0] if links else None for links in frame["top_concepts"]],
            "top_concepts": [_pairs(links, "{:.3g}") for links in frame["top_concepts"]],
            "hidden_neighbours": [_pairs(links, "{:.2f}") for links in frame["hidden_neighbours"]],
        }
    )


def _pairs(pairs, fmt: str) -> str:
    return "; ".join(f"{name} ({fmt.format(value)})" for name, value in pairs)
