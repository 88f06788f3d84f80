"""``conceptalpha diagnose RUN_DIR``: why each model of a finished run wins or fails.

Reads ``predictions.parquet`` (and ``explanations.parquet`` when the run has
HIST) and writes ``diagnostics.json`` and ``diagnostics.md``: IC / RankIC /
rank-label IC by year per model and per seed ensemble, HIST's part variance
shares and part ICs, its attention entropy, and both strategies (daily top-30,
TopkDropout 50/5) with break-even cost rates. The backtests need the run's
market, reloaded from its ``config.yaml`` (relative data paths are read from
the current directory, as when the run was started).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from conceptalpha.errors import UserError
from conceptalpha.evaluation import diagnostics as dx
from conceptalpha.io import write_json, write_text

PERIOD_MEASURES = ("IC", "RankIC", "IC_rank_label")
PART_ROWS = (
    "var_share_predefined", "var_share_hidden", "var_share_individual",
    "cov_share_predefined_hidden", "cov_share_predefined_individual", "cov_share_hidden_individual",
    "concept_var_share", "sum_share_predefined", "sum_share_hidden", "sum_share_individual",
    "std_predefined", "std_hidden", "std_individual",
    "ic_score", "ic_predefined", "ic_hidden", "ic_individual",
    "rank_ic_score", "rank_ic_predefined", "rank_ic_hidden", "rank_ic_individual",
)
STRATEGY_COLUMNS = (
    "excess_annual_return_cost", "information_ratio_cost", "max_drawdown_cost", "excess_max_drawdown_cost",
    "annual_turnover", "excess_annual_return_no_cost", "break_even_cost", "cost_rate_paid",
)
BP_COLUMNS = ("break_even_cost", "cost_rate_paid")


def diagnose_run(run_dir: str | Path, with_backtests: bool = True) -> dict:
    """Compute every diagnostic of a run directory, write diagnostics.json / diagnostics.md, return the dict."""
    run_dir = Path(run_dir)
    predictions = _read(run_dir / "predictions.parquet")
    predictions = pd.concat([predictions, dx.seed_ensemble(predictions)], ignore_index=True)
    out: dict = {"run_dir": str(run_dir), "ic": dx.ic_by_period(predictions).to_dict(orient="records")}
    explanations_path = run_dir / "explanations.parquet"
    if explanations_path.exists():
        explanations = _read(explanations_path)
        out["hist_parts"] = dx.hist_part_summary(explanations, predictions)
        out["attention"] = dx.attention_summary(explanations)
    if with_backtests:
        config = _config(run_dir)
        from conceptalpha.experiments.runner import load_inputs

        market = load_inputs(config).market
        out["label"] = config.features.label
        settings = config.backtest_settings().model_dump(exclude_unset=True)
        out["costs"] = _costs(settings, market.kind)
        out["strategies"] = dx.strategies_by_model(predictions, market, config.features.label, settings)
    write_json(run_dir / "diagnostics.json", out)
    write_text(run_dir / "diagnostics.md", diagnostics_markdown(out))
    return out


def _read(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise UserError(f"{path} not found: expected a finished run directory (conceptalpha run ... --out DIR)")
    return pd.read_parquet(path)


def _costs(settings: dict, market_kind: str) -> dict[str, float]:
    """The cost fields both strategies run with (the run's backtest section, else the market's defaults)."""
    from conceptalpha.evaluation.backtest import BacktestConfig
    from conceptalpha.evaluation.market_rules import rules_for

    costs = BacktestConfig(**settings).with_market_costs(rules_for(market_kind))
    return {key: getattr(costs, key) for key in ("buy_cost", "sell_cost", "min_cost", "capital")}


def _config(run_dir: Path):
    from conceptalpha.experiments.config import load_config

    path = run_dir / "config.yaml"
    if not path.exists():
        raise UserError(f"{path} not found: the backtests need the run's config (or pass --no-backtest)")
    return load_config(path)


# ---------------------------------------------------------------- markdown


def diagnostics_markdown(diag: dict) -> str:
    """The diagnostics as markdown tables (docs/diagnostics.md explains every number)."""
    ic = pd.DataFrame(diag["ic"])
    sections = [f"# Diagnostics of {diag['run_dir']}"]
    for measure in PERIOD_MEASURES:
        sections.append(f"## {measure} by period (mean ± std over seeds; ensembles are one series)\n\n" + _period_table(ic, measure))
    for key, title in (("hist_parts", "HIST parts (test, mean over days and seeds)"), ("attention", "HIST attention (test)")):
        for model, summary in diag.get(key, {}).items():
            sections.append(f"## {title}: {model}\n\n" + _summary_table(summary, PART_ROWS if key == "hist_parts" else None))
    if "strategies" in diag:
        sections.append(
            f"## Strategies (test, label {diag['label']}, costs {diag['costs']}; mean ± std over seeds)\n\n"
            + _strategy_table(diag["strategies"])
        )
    return "\n\n".join(sections) + "\n"


def _cell(mean: float, std: float = float("nan")) -> str:
    if mean is None or not math.isfinite(mean):
        return "–"
    return f"{mean:.4f}" if std is None or not math.isfinite(std) else f"{mean:.4f} ± {std:.4f}"


def _period_table(ic: pd.DataFrame, measure: str) -> str:
    ic = ic.assign(column=ic["segment"] + " " + ic["period"], cell=[_cell(m, s) for m, s in zip(ic[f"{measure}_mean"], ic[f"{measure}_std"])])
    table = ic.pivot(index="model", columns="column", values="cell").fillna("")
    ordered = sorted(table.columns, key=lambda c: (not c.startswith("valid"), not c.endswith("all"), c))
    return table[ordered].to_markdown()


def _summary_table(summary: dict, rows: tuple[str, ...] | None) -> str:
    table = pd.DataFrame({"all": summary["all"], **summary["by_year"]})
    if rows is not None:
        table = table.reindex([r for r in rows if r in table.index])
    return table.map(_cell).to_markdown()


def _strategy_table(strategies: dict) -> str:
    """Returns and drawdowns as fractions; the two cost rates in basis points (1 bp = 0.0001 of traded value)."""
    rows = {
        (model, name): {_bp_name(key): _cell(*_scaled(key, figures[key])) for key in STRATEGY_COLUMNS}
        for model, by_strategy in strategies.items()
        for name, figures in by_strategy.items()
    }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.names = ["model", "strategy"]
    return table.reset_index().to_markdown(index=False)


def _bp_name(key: str) -> str:
    return f"{key}_bp" if key in BP_COLUMNS else key


def _scaled(key: str, figure: dict) -> tuple[float, float]:
    scale = 1e4 if key in BP_COLUMNS else 1.0
    return figure["mean"] * scale, figure["std"] * scale
