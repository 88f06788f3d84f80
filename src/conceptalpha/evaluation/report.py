"""The run report: one self-contained ``report.html`` plus the same figures as PNG.

:func:`render_report` takes explicit inputs; :func:`build_report` loads them
from a run directory. The HTML embeds every figure as a base64 ``data:`` URI
and carries its CSS inline: it has no external reference and opens offline.

Metrics are recomputed from the saved predictions (the test segment when the
table has a ``segment`` column) and the saved daily backtests, so a report
always matches the data it shows. For each model the figures show its first
seed; the comparison table shows mean ± std over all seeds.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from conceptalpha.errors import DataError, UserError
from conceptalpha.evaluation import plots
from conceptalpha.evaluation.backtest import lag_for_label, summarize_backtest
from conceptalpha.evaluation.metrics import factor_report, summarize_by_year, summarize_series
from conceptalpha.io import write_bytes, write_json, write_text

PARTS = ("part_predefined", "part_hidden", "part_individual")
TOP_CONCEPTS = 12
_BACKTEST_KEY = re.compile(r"^(?P<model>.+)_seed(?P<seed>-?\d+)$")

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


def backtest_key(model: str, seed: int) -> str:
    """The key of a (model, seed) backtest, as in ``backtest_<model>_seed<k>.parquet``."""
    return f"{model}_seed{seed}"


def _parse_backtest_key(key: str) -> tuple[str, int]:
    match = _BACKTEST_KEY.match(key)
    if not match:
        raise UserError(f"backtest key {key!r} is not of the form '<model>_seed<k>'")
    return match["model"], int(match["seed"])


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


def evaluate_run(model: str, seed: int, predictions: pd.DataFrame, backtest: pd.DataFrame | None, days_per_year: int = 238) -> RunEvaluation:
    """Factor metrics of one model/seed plus backtest summaries prefixed ``net_`` / ``gross_``."""
    series = factor_report(predictions)
    metrics = summarize_series(series)
    backtest = _daily_frame(backtest)
    if backtest is not None and len(backtest):
        metrics |= {f"net_{k}": v for k, v in summarize_backtest(backtest, True, days_per_year).items()}
        metrics |= {f"gross_{k}": v for k, v in summarize_backtest(backtest, False, days_per_year).items()}
    return RunEvaluation(model, seed, series, metrics, backtest, summarize_by_year(series))


def _daily_frame(backtest: pd.DataFrame | None) -> pd.DataFrame | None:
    """A saved daily backtest indexed by datetime (it may have been saved with the index as a column)."""
    if backtest is None or "datetime" not in backtest.columns:
        return backtest
    return backtest.set_index(pd.DatetimeIndex(pd.to_datetime(backtest["datetime"]), name="datetime")).drop(columns="datetime")


def evaluate_all(
    predictions: pd.DataFrame, backtests: Mapping[str, pd.DataFrame], segment: str = "test"
) -> dict[str, dict[int, RunEvaluation]]:
    """model → seed → :class:`RunEvaluation` for every (model, seed) of the predictions."""
    frame = evaluation_segment(predictions, segment)
    by_key = {_parse_backtest_key(k): v for k, v in backtests.items()}
    out: dict[str, dict[int, RunEvaluation]] = {}
    for (model, seed), rows in frame.groupby(["model", "seed"], sort=True):
        out.setdefault(model, {})[int(seed)] = evaluate_run(model, int(seed), rows, by_key.get((model, int(seed))))
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
) -> Path:
    """Write ``report.html``, ``figures/*.png``, ``comparison.md`` and ``report_metrics.json`` to ``out_dir``.

    ``backtests`` maps ``"<model>_seed<k>"`` to a daily backtest frame
    (:class:`~conceptalpha.evaluation.backtest.BacktestResult.daily`).
    ``explanations``: HIST's additive parts (datetime, instrument,
    part_predefined, part_hidden, part_individual [, model, seed]);
    ``concept_weights``: long (datetime, concept, weight [, model, seed]); when
    absent and ``explanations`` has a ``top_concept`` column, the weight is the
    share of the day's stocks whose most attended concept it is.
    Returns the path of ``report.html``.
    """
    out_dir = Path(out_dir)
    evaluations = evaluate_all(predictions, backtests, segment)
    if concept_weights is None:
        concept_weights = concept_weights_from_explanations(explanations)
    metrics = {m: {s: r.metrics for s, r in runs.items()} for m, runs in evaluations.items()}
    write_text(out_dir / "comparison.md", comparison_table(metrics))
    write_json(
        out_dir / "report_metrics.json",
        {m: {str(s): {"all": r.metrics, "by_year": r.by_year} for s, r in runs.items()} for m, runs in evaluations.items()},
    )
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
        f"{comparison_frame(metrics).to_html(escape=True)}"
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


def _read_table(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several types for a corrupt or foreign file
        raise DataError(path, f"cannot be read as a parquet table ({type(err).__name__}: {err})") from None


def _run_config(run_dir: Path) -> dict:
    """The run's resolved config (YAML or JSON), {} when absent."""
    for name in ("resolved_config.yaml", "config.yaml", "config.json"):
        path = run_dir / name
        if path.exists():
            try:
                loaded = json.loads(path.read_text("utf-8")) if path.suffix == ".json" else yaml.safe_load(path.read_text("utf-8"))
            except (yaml.YAMLError, json.JSONDecodeError) as err:
                raise DataError(path, f"is not valid {path.suffix[1:].upper()}: {err}") from None
            return loaded if isinstance(loaded, dict) else {}
    return {}


def _run_notes(run_dir: Path, config: Mapping) -> list[str]:
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
    data_json = run_dir / "data.json"
    if data_json.exists():
        try:
            saved = json.loads(data_json.read_text("utf-8"))
        except json.JSONDecodeError as err:
            raise DataError(data_json, f"is not valid JSON: {err}") from None
        notes += [str(n) for n in saved.get("notes", [])] if isinstance(saved, dict) else []
    return notes


def build_report(run_dir: str | Path) -> Path:
    """Rebuild ``RUN_DIR/report.html`` (and figures) from the run's saved files; returns its path.

    Reads ``predictions.parquet`` (required), ``backtest_<model>_seed<k>.parquet``,
    ``explanations.parquet`` and ``concept_weights.parquet`` (optional), the
    config (``resolved_config.yaml``, ``config.yaml`` or ``config.json``) for the
    title and label, and the notes of ``data.json``.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    predictions_path = run_dir / "predictions.parquet"
    if not predictions_path.exists():
        raise UserError(f"{run_dir} is not a run directory: predictions.parquet is missing")
    predictions = _read_table(predictions_path)
    backtests = {p.stem.removeprefix("backtest_"): _read_table(p) for p in sorted(run_dir.glob("backtest_*_seed*.parquet"))}
    optional = {name: _read_table(run_dir / f"{name}.parquet") if (run_dir / f"{name}.parquet").exists() else None for name in ("explanations", "concept_weights")}
    config = _run_config(run_dir)
    title = f"conceptalpha report: {config.get('name', run_dir.name)}"
    return render_report(run_dir, predictions, backtests, optional["explanations"], title, _run_notes(run_dir, config), optional["concept_weights"])
