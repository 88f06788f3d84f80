"""The run report: one self-contained ``report.html`` plus the same figures as PNG.

:func:`render_report` takes explicit inputs (``conceptalpha report`` loads them
from a run directory). The HTML embeds every figure as a base64 ``data:`` URI
and carries its CSS inline: it has no external reference and opens offline.

The tables show the metrics of :func:`~conceptalpha.evaluation.summary.summarise_run`
(a run's ``metrics.json``; computed here when not given); the figures plot the
daily series of the predictions and backtests. For each model the figures show
its first seed; the comparison table shows mean ± std over all seeds.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from conceptalpha.errors import UserError
from conceptalpha.evaluation import plots
from conceptalpha.evaluation.metrics import factor_report
from conceptalpha.evaluation.summary import daily_backtest, parse_backtest_key, summarise_run
from conceptalpha.io import write_bytes, write_text

PARTS = ("part_predefined", "part_hidden", "part_individual")
TOP_CONCEPTS = 12

COMPARISON_COLUMNS: dict[str, str] = {
    "IC": "IC",
    "ICIR": "ICIR",
    "RankIC": "RankIC",
    "RankICIR": "RankICIR",
    "precision@30": "Prec@30",
    "long_short": "Long-short (daily)",
    "net_excess_annualized_return": "Excess ann. return (cost)",
    "net_information_ratio": "IR (cost)",
    "net_max_drawdown": "Max DD (cost)",
    "gross_excess_annualized_return": "Excess ann. return (no cost)",
    "net_mean_turnover": "Turnover",
}
"""Default columns of the comparison table: metric key → column header."""

_PERCENT_KEYS = ("return", "drawdown", "turnover", "cost", "volatility", "tracking_error", "long_short", "quantile_")


def evaluation_segment(predictions: pd.DataFrame, segment: str = "test") -> pd.DataFrame:
    """The rows of ``segment`` (all rows when there is no segment column); checks the columns."""
    missing = {"datetime", "instrument", "score", "label"} - set(predictions.columns)
    if missing:
        raise UserError(f"prediction table lacks columns {sorted(missing)}")
    frame = predictions.assign(
        model=predictions["model"].astype(str) if "model" in predictions else "model",
        seed=predictions["seed"].astype(int) if "seed" in predictions else 0,
        datetime=pd.to_datetime(predictions["datetime"]),
    )
    if "segment" in frame.columns:
        if not (frame["segment"] == segment).any():
            raise UserError(f"prediction table has no {segment!r} rows (segments: {sorted(frame['segment'].unique())})")
        frame = frame[frame["segment"] == segment]
    return frame


@dataclass
class RunEvaluation:
    """Daily series and flat metrics of one (model, seed)."""

    model: str
    seed: int
    series: dict[str, pd.Series | pd.DataFrame]
    metrics: dict[str, float]
    backtest: pd.DataFrame | None = None
    by_year: dict[int, dict[str, float]] = field(default_factory=dict)


def evaluate_all(
    predictions: pd.DataFrame, backtests: Mapping[str, pd.DataFrame], segment: str = "test", metrics: Mapping | None = None
) -> dict[str, dict[int, RunEvaluation]]:
    """model → seed → :class:`RunEvaluation` for every (model, seed) of the predictions.

    ``metrics``: the run's :func:`~conceptalpha.evaluation.summary.summarise_run` (computed from the
    segment's rows when absent).
    """
    frame = evaluation_segment(predictions, segment)
    daily = {parse_backtest_key(k): daily_backtest(v) for k, v in backtests.items()}
    if metrics is None:
        metrics = summarise_run(frame.assign(segment="test"), backtests)
    out: dict[str, dict[int, RunEvaluation]] = {}
    for (model, seed), rows in frame.groupby(["model", "seed"], sort=True):
        saved = metrics["models"][model]["per_seed"][str(int(seed))]
        by_year = {int(y): m for y, m in saved.get("test_by_year", {}).items()}
        out.setdefault(model, {})[int(seed)] = RunEvaluation(
            model, int(seed), factor_report(rows), saved["test"], daily.get((model, int(seed))), by_year
        )
    return out


def _format(key: str, value: float) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if key.endswith("n_days"):
        return str(int(value))
    if any(word in key for word in _PERCENT_KEYS) and not key.endswith("tstat"):
        return f"{100 * value:.2f}%"
    return f"{value:.4f}"


def comparison_frame(metrics_by_model_seed: Mapping[str, Mapping[int, Mapping[str, float]]], columns: Mapping[str, str] = COMPARISON_COLUMNS) -> pd.DataFrame:
    """Table model × metric of "mean ± std" strings over seeds (std with ddof=1; "–" where undefined)."""
    rows = {}
    for model, by_seed in metrics_by_model_seed.items():
        table = pd.DataFrame.from_dict({s: dict(m) for s, m in by_seed.items()}, orient="index")
        row = {"seeds": str(len(table))}
        for key, header in columns.items():
            values = table[key].astype("float64") if key in table else pd.Series(dtype="float64")
            mean = _format(key, values.mean())
            row[header] = mean if len(values.dropna()) < 2 else f"{mean} ± {_format(key, values.std(ddof=1))}"
        rows[model] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "model"
    return frame


def comparison_table(metrics_by_model_seed: Mapping[str, Mapping[int, Mapping[str, float]]], columns: Mapping[str, str] = COMPARISON_COLUMNS) -> str:
    """Markdown table comparing models: mean ± std over seeds of each metric (``model → seed → metrics``)."""
    frame = comparison_frame(metrics_by_model_seed, columns).reset_index()
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


@dataclass
class _Figure:
    name: str
    caption: str
    png: bytes


def _rendered(name: str, caption: str, fig) -> _Figure:
    return _Figure(name, caption, plots.png_bytes(fig))


def _slug(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", model)


def _run_figures(run: RunEvaluation) -> list[_Figure]:
    """Backtest and factor figures of one (model, seed)."""
    label, slug, series, daily = f"{run.model} (seed {run.seed})", _slug(run.model), run.series, run.backtest
    has_backtest = daily is not None and len(daily) > 0
    figures = []
    if has_backtest:
        figures += [
            _rendered(f"{slug}_cumulative_return", f"{label}: cumulative return vs benchmark", plots.cumulative_return_figure(daily, f"{label}: cumulative return")),
            _rendered(f"{slug}_drawdown", f"{label}: drawdown (with cost)", plots.drawdown_figure(daily, f"{label}: drawdown")),
        ]
    by_year = pd.DataFrame.from_dict(run.by_year, orient="index")
    figures += [
        _rendered(f"{slug}_daily_ic", f"{label}: daily IC and rolling mean", plots.daily_ic_figure(series["ic"], series["rank_ic"], f"{label}: daily IC")),
        _rendered(f"{slug}_ic_by_year", f"{label}: IC by year", plots.ic_by_year_figure(by_year, f"{label}: IC by year")),
        _rendered(f"{slug}_quantiles", f"{label}: quantile cumulative returns", plots.quantile_figure(series["quantile"], series["long_short"], f"{label}: quantile returns")),
    ]
    if has_backtest:
        figures.append(_rendered(f"{slug}_turnover", f"{label}: turnover", plots.turnover_figure(daily, series["top_turnover"], f"{label}: turnover")))
    return figures


def prediction_part_shares(explanations: pd.DataFrame) -> pd.DataFrame:
    """Per day, each part's share of Σ|part| over the day's stocks: frame [datetime × part] with rows summing to 1."""
    magnitude = explanations[list(PARTS)].abs().groupby(pd.to_datetime(explanations["datetime"])).sum()
    return magnitude.div(magnitude.sum(axis=1).where(lambda s: s > 0), axis=0).dropna()


def concept_weights_from_explanations(explanations: pd.DataFrame) -> pd.DataFrame | None:
    """From a ``top_concept`` column (each stock's most attended concept): per day, each concept's share of stocks.

    Long frame (datetime, concept, weight [, model, seed]); None without that column.
    """
    if explanations is None or "top_concept" not in explanations.columns:
        return None
    keys = [c for c in ("model", "seed") if c in explanations.columns]
    rows = explanations.dropna(subset=["top_concept"]).assign(datetime=lambda f: pd.to_datetime(f["datetime"]))
    counts = rows.groupby([*keys, "datetime", "top_concept"]).size().rename("count").reset_index()
    per_day = explanations.assign(datetime=lambda f: pd.to_datetime(f["datetime"])).groupby([*keys, "datetime"]).size().rename("n")
    counts = counts.join(per_day, on=[*keys, "datetime"])
    return counts.assign(weight=counts["count"] / counts["n"]).rename(columns={"top_concept": "concept"})[[*keys, "datetime", "concept", "weight"]]


def monthly_concept_weights(concept_weights: pd.DataFrame, top: int = TOP_CONCEPTS) -> pd.DataFrame:
    """Mean weight of the ``top`` concepts (largest total weight) per month: frame [concept × month]."""
    frame = concept_weights.assign(month=pd.to_datetime(concept_weights["datetime"]).dt.to_period("M"))
    leaders = frame.groupby("concept")["weight"].sum().nlargest(top).index
    table = frame[frame["concept"].isin(leaders)].pivot_table(index="concept", columns="month", values="weight", aggfunc="mean")
    return table.reindex(leaders).fillna(0.0)


def _explanation_figures(model: str, explanations: pd.DataFrame | None, concept_weights: pd.DataFrame | None) -> tuple[list[_Figure], str]:
    """HIST figures (parts, concepts) of one model and an HTML legend of concept names."""
    slug = _slug(model)
    figures, legend = [], ""
    if explanations is not None and len(explanations):
        shares = prediction_part_shares(explanations)
        figures.append(_rendered(f"{slug}_prediction_parts", f"{model}: share of the prediction from predefined / hidden / individual parts", plots.prediction_parts_figure(shares, f"{model}: where the prediction comes from")))
    if concept_weights is not None and len(concept_weights):
        table = monthly_concept_weights(concept_weights)
        codes = [f"C{i + 1}" for i in range(len(table))]
        legend = "<table><tr><th>row</th><th>concept</th><th>mean weight</th></tr>" + "".join(
            f"<tr><td>{c}</td><td>{html.escape(str(name))}</td><td>{table.loc[name].mean():.4f}</td></tr>" for c, name in zip(codes, table.index)
        ) + "</table>"
        # Rows are labelled by code: concept names are often Chinese and the plotting font may lack the glyphs.
        figures.append(_rendered(f"{slug}_concepts", f"{model}: most influential concepts by month (names in the table below)", plots.concept_heatmap_figure(table.set_axis(codes), f"{model}: concept weight by month")))
    return figures, legend


def _rows_of_model(frame: pd.DataFrame | None, model: str, first_seed: int) -> pd.DataFrame | None:
    """The rows of one model (and its first seed) of an optional table that may lack model/seed columns."""
    if frame is None:
        return None
    if "model" in frame.columns:
        frame = frame[frame["model"].astype(str) == model]
    if "seed" in frame.columns:
        frame = frame[frame["seed"].astype(int) == first_seed]
    return frame


_CSS = """
body{font-family:Helvetica,Arial,sans-serif;margin:24px auto;max-width:1000px;color:#222}
h1{font-size:24px}h2{font-size:19px;border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;font-size:13px;margin:10px 0}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child{text-align:left}figure{margin:14px 0}img{max-width:100%;height:auto}
figcaption{font-size:12px;color:#555}.notes li{font-size:13px}
"""


def _figure_html(fig: _Figure) -> str:
    data = base64.b64encode(fig.png).decode("ascii")
    caption = html.escape(fig.caption)
    return f'<figure id="{fig.name}"><img alt="{caption}" src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>'


BY_YEAR_COLUMNS = ("IC", "ICIR", "RankIC", "RankICIR", "precision@30", "long_short", "top_turnover", "n_days")


def _metrics_html(run: RunEvaluation) -> str:
    """The factor metrics by year (visible) and every metric of the run (folded)."""
    years = "".join(
        f"<tr><td>{year}</td>" + "".join(f"<td>{_format(k, float(row[k]))}</td>" for k in BY_YEAR_COLUMNS) + "</tr>"
        for year, row in run.by_year.items()
    )
    header = "".join(f"<th>{html.escape(k)}</th>" for k in BY_YEAR_COLUMNS)
    cells = "".join(f"<tr><td>{html.escape(k)}</td><td>{_format(k, float(v))}</td></tr>" for k, v in run.metrics.items())
    return (
        f"<table><tr><th>year</th>{header}</tr>{years}</table>"
        f"<details><summary>all metrics of seed {run.seed}</summary><table>{cells}</table></details>"
    )


def _comparison_figures(evaluations: Mapping[str, Mapping[int, RunEvaluation]]) -> list[_Figure]:
    first = {model: runs[min(runs)] for model, runs in evaluations.items()}
    cumulative_ic = {m: r.series["ic"].fillna(0.0).cumsum() for m, r in first.items()}
    figures = [_rendered("all_cumulative_ic", "Cumulative daily IC of every model (first seed)", plots.comparison_figure(cumulative_ic, "cumulative IC", "Σ daily IC"))]
    excess = {m: (1.0 + r.backtest["excess_net"]).cumprod() - 1.0 for m, r in first.items() if r.backtest is not None and r.backtest["excess_net"].notna().all()}
    if excess:
        figures.append(_rendered("all_cumulative_excess", "Cumulative excess return over the benchmark, with cost (first seed)", plots.comparison_figure(excess, "cumulative excess return (with cost)", "excess return")))
    return figures


def render_report(
    out_dir: str | Path,
    predictions: pd.DataFrame,
    backtests: Mapping[str, pd.DataFrame],
    explanations: pd.DataFrame | None = None,
    title: str = "conceptalpha report",
    notes: Sequence[str] = (),
    concept_weights: pd.DataFrame | None = None,
    segment: str = "test",
    metrics: Mapping | None = None,
) -> Path:
    """Write ``report.html``, ``figures/*.png`` and ``comparison.md`` to ``out_dir``.

    ``backtests`` maps ``"<model>_seed<k>"`` to a daily backtest frame
    (:class:`~conceptalpha.evaluation.backtest.BacktestResult.daily`).
    ``explanations``: HIST's additive parts (datetime, instrument,
    part_predefined, part_hidden, part_individual [, model, seed]);
    ``concept_weights``: long (datetime, concept, weight [, model, seed]); when
    absent and ``explanations`` has a ``top_concept`` column, the weight is the
    share of the day's stocks whose most attended concept it is.
    ``metrics``: the run's ``metrics.json`` (computed from the frames when absent).
    Returns the path of ``report.html``.
    """
    out_dir = Path(out_dir)
    evaluations = evaluate_all(predictions, backtests, segment, metrics)
    if concept_weights is None:
        concept_weights = concept_weights_from_explanations(explanations)
    per_seed = {m: {s: r.metrics for s, r in runs.items()} for m, runs in evaluations.items()}
    write_text(out_dir / "comparison.md", comparison_table(per_seed))
    overview = _comparison_figures(evaluations)
    sections, section_figures = [], []
    for model, runs in evaluations.items():
        first_seed = min(runs)
        figures = _run_figures(runs[first_seed])
        extra, legend = _explanation_figures(
            model, _rows_of_model(explanations, model, first_seed), _rows_of_model(concept_weights, model, first_seed)
        )
        figures += extra
        section_figures += figures
        body = "".join(_figure_html(f) for f in figures)
        sections.append(
            f'<section id="model-{html.escape(model)}"><h2>{html.escape(model)}</h2>'
            f"{_metrics_html(runs[first_seed])}{body}{legend}</section>"
        )
    for fig in overview + section_figures:
        write_bytes(out_dir / "figures" / f"{fig.name}.png", fig.png)
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in [*notes, *STANDARD_NOTES])
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<h2>Model comparison ({html.escape(segment)} segment, mean ± std over seeds)</h2>"
        f"{comparison_frame(per_seed).to_html(escape=True)}"
        + "".join(_figure_html(f) for f in overview)
        + f'<h2>Notes</h2><ul class="notes">{notes_html}</ul>'
        + "".join(sections)
        + "</body></html>"
    )
    path = out_dir / "report.html"
    write_text(path, page)
    return path


STANDARD_NOTES = (
    "IC and RankIC are computed per day against the raw label (no normalisation), then averaged; ICIR = mean / std of the daily series.",
    "Precision@k: share of the k best-scored stocks whose raw label is > 0; recall@k: share of the day's stocks with label > 0 that are in the top k.",
    "Backtest: long-only, daily at the close, costs buy 0.05% / sell 0.15% / minimum 5 per trade unless configured otherwise; "
    "no buy at limit-up, no sell at limit-down, no trade on suspended days. 'Without cost' = the same trades before costs.",
    "Figures of each model show its first seed; the comparison table aggregates all seeds.",
)
