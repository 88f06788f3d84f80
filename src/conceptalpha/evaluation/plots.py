"""Report figures (matplotlib, object API on the Agg canvas: no GUI, no global pyplot state).

Every function takes already-computed series and returns a
``matplotlib.figure.Figure``; :func:`png_bytes` renders it.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

ROLLING_DAYS = 20
_WIDE = (9.0, 3.4)


def _figure(size: tuple[float, float] = _WIDE) -> tuple[Figure, object]:
    fig = Figure(figsize=size, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (no timestamp metadata, so identical inputs give identical files)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _finish(ax, title: str, ylabel: str = "", percent: bool = False) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if percent:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")


def _wealth(returns: pd.Series) -> pd.Series:
    return (1.0 + returns.fillna(0.0)).cumprod() - 1.0


def cumulative_return_figure(daily: pd.DataFrame, title: str) -> Figure:
    """Cumulative return with and without costs, the benchmark and the excess (net)."""
    fig, ax = _figure()
    ax.plot(daily.index, _wealth(daily["return_net"]), label="with cost", color="tab:blue")
    ax.plot(daily.index, _wealth(daily["return_gross"]), label="without cost", color="tab:blue", ls="--", alpha=0.7)
    if daily["benchmark"].notna().any():
        ax.plot(daily.index, _wealth(daily["benchmark"]), label="benchmark", color="grey")
        ax.plot(daily.index, _wealth(daily["excess_net"]), label="excess (with cost)", color="tab:green")
    ax.axhline(0.0, color="black", lw=0.6)
    _finish(ax, title, "cumulative return", percent=True)
    return fig


def drawdown_figure(daily: pd.DataFrame, title: str) -> Figure:
    """Drawdown of the compounded value (with cost), and of the excess when a benchmark is known."""
    fig, ax = _figure()
    for column, label, color in (("return_net", "portfolio", "tab:red"), ("excess_net", "excess", "tab:orange")):
        if daily[column].notna().all():
            wealth = (1.0 + daily[column]).cumprod()
            ax.fill_between(daily.index, wealth / wealth.cummax() - 1.0, 0.0, alpha=0.35, label=label, color=color)
    _finish(ax, title, "drawdown", percent=True)
    return fig


def daily_ic_figure(ic: pd.Series, rank_ic: pd.Series, title: str) -> Figure:
    """Daily IC as bars with the rolling means of IC and RankIC."""
    fig, ax = _figure()
    ax.bar(ic.index, ic.to_numpy(), width=1.0, color="lightsteelblue", label="daily IC")
    ax.plot(ic.index, ic.rolling(ROLLING_DAYS, min_periods=1).mean(), color="tab:blue", label=f"IC, {ROLLING_DAYS}-day mean")
    ax.plot(rank_ic.index, rank_ic.rolling(ROLLING_DAYS, min_periods=1).mean(), color="tab:orange", label=f"RankIC, {ROLLING_DAYS}-day mean")
    ax.axhline(float(ic.mean()), color="tab:blue", ls=":", lw=1, label=f"mean IC {ic.mean():.4f}")
    ax.axhline(0.0, color="black", lw=0.6)
    _finish(ax, title, "IC")
    return fig


def ic_by_year_figure(table: pd.DataFrame, title: str) -> Figure:
    """Mean IC and RankIC per year (``table`` indexed by year with columns IC, RankIC)."""
    fig, ax = _figure((6.5, 3.2))
    x = np.arange(len(table))
    ax.bar(x - 0.2, table["IC"], width=0.4, label="IC")
    ax.bar(x + 0.2, table["RankIC"], width=0.4, label="RankIC")
    ax.set_xticks(x, [str(y) for y in table.index])
    ax.axhline(0.0, color="black", lw=0.6)
    _finish(ax, title, "mean daily IC")
    return fig


def quantile_figure(quantile_ret: pd.DataFrame, long_short: pd.Series, title: str) -> Figure:
    """Compounded return of each score group (mean raw label per day) and of long-short."""
    fig, ax = _figure()
    colors = [str(c) for c in np.linspace(0.75, 0.0, len(quantile_ret.columns))]
    for (group, returns), color in zip(quantile_ret.items(), colors):
        ax.plot(returns.index, _wealth(returns), label=f"group {group}", color=color if group not in (1, len(colors)) else None)
    ax.plot(long_short.index, _wealth(long_short), label="long-short", color="tab:purple", ls="--")
    ax.axhline(0.0, color="black", lw=0.6)
    _finish(ax, title, "cumulative label return", percent=True)
    return fig


def turnover_figure(daily: pd.DataFrame, top_turnover: pd.Series, title: str) -> Figure:
    """Portfolio turnover (Σ|Δw|) and top-group turnover of the factor, rolling means."""
    fig, ax = _figure()
    ax.plot(daily.index, daily["turnover"].rolling(ROLLING_DAYS, min_periods=1).mean(), label="portfolio turnover Σ|Δw|")
    ax.plot(top_turnover.index, top_turnover.rolling(ROLLING_DAYS, min_periods=1).mean(), label="top-group turnover")
    _finish(ax, f"{title} ({ROLLING_DAYS}-day means)", "turnover")
    return fig


def comparison_figure(curves: dict[str, pd.Series], title: str, ylabel: str) -> Figure:
    """One line per model (e.g. cumulative excess return or cumulative IC)."""
    fig, ax = _figure()
    for name, curve in curves.items():
        ax.plot(curve.index, curve.to_numpy(), label=name)
    ax.axhline(0.0, color="black", lw=0.6)
    _finish(ax, title, ylabel)
    return fig


def prediction_parts_figure(shares: pd.DataFrame, title: str) -> Figure:
    """Share of |prediction| from each HIST part over time (stacked, rolling mean)."""
    fig, ax = _figure()
    smooth = shares.rolling(ROLLING_DAYS, min_periods=1).mean()
    ax.stackplot(smooth.index, smooth.T.to_numpy(), labels=[c.removeprefix("part_") for c in smooth.columns], alpha=0.8)
    ax.set_ylim(0, 1)
    _finish(ax, title, "share of |prediction|", percent=True)
    return fig


def concept_heatmap_figure(weights: pd.DataFrame, title: str) -> Figure:
    """Heatmap of concept weight (rows: concepts, columns: months)."""
    fig, ax = _figure((9.0, 0.35 * len(weights) + 1.6))
    image = ax.imshow(weights.to_numpy(), aspect="auto", cmap="viridis")
    ax.set_yticks(np.arange(len(weights)), [str(c) for c in weights.index], fontsize=8)
    step = max(1, len(weights.columns) // 12)
    ax.set_xticks(np.arange(0, len(weights.columns), step), [str(c) for c in weights.columns[::step]], fontsize=8, rotation=45)
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_title(title, fontsize=11)
    return fig
