"""What a market data set holds, and what is wrong with it, in a few figures.

Shares are over *member-days* (a stock on a day it is a universe member):
``missing_bar_share`` = member-days with no bar / member-days (members without
any bars included), ``suspended_share`` = member-days whose bar has volume 0 /
member-days. Real data legitimately has both; they are reported as counted
warnings, not errors.
"""

from __future__ import annotations

import numpy as np

from conceptalpha.data.market_cap import market_cap
from conceptalpha.data.panel import Market
from conceptalpha.data.universe import Universe


def summarize(market: Market, membership: Universe | None = None) -> dict:
    """Summary figures of ``market`` as a JSON-ready dict.

    ``membership``: the full universe including members without bars (from
    :func:`~conceptalpha.data.loader.load_membership`); without it, members per
    day count only the members that have bars (``market.universe``).
    """
    panel = market.panel
    members = membership if membership is not None else market.universe
    member_mask = members.mask
    has_bar = _on_members(np.isfinite(panel.field("close")), panel.instruments, members.instruments)
    suspended = _on_members(panel.suspended(), panel.instruments, members.instruments) & has_bar
    member_days = int(member_mask.sum())
    missing_days = int((member_mask & ~has_bar).sum())
    suspended_days = int((member_mask & suspended).sum())
    no_bars = sorted(map(str, market.members_without_bars))
    all_missing = sorted(name for name, arr in panel.fields.items() if not np.isfinite(arr).any())
    cap = market_cap(panel, market.shares)
    _, change_unit = panel.change_fraction()
    per_day = member_mask.sum(axis=1)
    with_bars_per_day = (member_mask & has_bar).sum(axis=1)
    return {
        "name": market.name,
        "market": {"kind": market.kind, "inferred": market.kind_inferred},
        "change_field": change_unit,
        "calendar": {
            "start": str(market.calendar.start.date()),
            "end": str(market.calendar.end.date()),
            "days": len(market.calendar),
        },
        "instruments_with_data": int(np.isfinite(panel.field("close")).any(axis=0).sum()),
        "fields": sorted(panel.fields),
        "members": int(member_mask.any(axis=0).sum()),
        "members_per_day": _spread(per_day),
        "members_with_bars_per_day": _spread(with_bars_per_day),
        "members_without_bars": {"count": len(no_bars), "symbols": no_bars},
        "member_days": member_days,
        "missing_bar_share": missing_days / member_days if member_days else 0.0,
        "suspended_share": suspended_days / member_days if member_days else 0.0,
        "market_cap": {
            "stocks_with_shares": 0 if market.shares is None else int(market.shares.index.isin(panel.instruments).sum()),
            "proxy_stock_days": cap.proxy_stock_days,
            "proxy_share": cap.proxy_share,
        },
        "benchmark": None
        if market.benchmark is None
        else {"symbol": str(market.benchmark.name), "days_with_close": int(market.benchmark.notna().sum())},
        "warnings": {
            "members_without_bars": len(no_bars),
            "member_days_missing_bar": missing_days,
            "member_days_suspended": suspended_days,
            "fields_all_missing": len(all_missing),
            "market_cap_proxy_stock_days": cap.proxy_stock_days,
            "change_field_in_percent": int(change_unit == "percent"),
        },
        "fields_all_missing": all_missing,
    }


def format_summary(summary: dict) -> str:
    """Human-readable lines of a :func:`summarize` dict."""
    cal, per_day, with_bars = summary["calendar"], summary["members_per_day"], summary["members_with_bars_per_day"]
    no_bars = summary["members_without_bars"]
    cap = summary["market_cap"]
    listed = ", ".join(no_bars["symbols"][:10]) + (" ..." if no_bars["count"] > 10 else "")
    lines = [
        f"universe: {summary['name']}",
        "market: " + _market_line(summary["market"]),
        f"calendar: {cal['start']} .. {cal['end']} ({cal['days']} trading days)",
        f"instruments with data: {summary['instruments_with_data']}; fields: {', '.join(summary['fields'])}",
        f"members: {summary['members']}; per day min/median/max {per_day['min']}/{per_day['median']:g}/{per_day['max']}"
        f" (with bars {with_bars['min']}/{with_bars['median']:g}/{with_bars['max']})",
        f"members with no bars: {no_bars['count']}" + (f" ({listed})" if no_bars["count"] else ""),
        f"missing-bar share of member-days: {summary['missing_bar_share']:.2%}",
        f"suspended (volume 0) share of member-days: {summary['suspended_share']:.2%}",
        f"market cap: shares known for {cap['stocks_with_shares']} stocks; size proxy on "
        f"{cap['proxy_stock_days']} stock-days ({cap['proxy_share']:.2%})",
        "benchmark: "
        + ("none" if summary["benchmark"] is None else f"{summary['benchmark']['symbol']} ({summary['benchmark']['days_with_close']} days)"),
    ]
    if summary["change_field"] == "percent":
        lines.append("change field: in percent (read as a fraction: divided by 100)")
    if summary["fields_all_missing"]:
        lines.append(f"fields with no value at all: {', '.join(summary['fields_all_missing'])}")
    counted = {k: v for k, v in summary["warnings"].items() if v}
    lines.append("warnings: " + (", ".join(f"{k}={v}" for k, v in counted.items()) if counted else "none"))
    return "\n".join(lines)


def _market_line(market: dict) -> str:
    reason = {
        "cn": " (auto: every instrument is an A-share code)",
        "generic": " (auto: not every instrument is an A-share code)",
    }
    rules = {"cn": "A-share symbols and trading rules", "generic": "tickers as given, no price limits"}
    return f"{market['kind']}, {rules[market['kind']]}" + (reason[market["kind"]] if market["inferred"] else "")


def _on_members(values: np.ndarray, instruments: np.ndarray, members: np.ndarray) -> np.ndarray:
    """[D, N] panel columns → [D, K] member columns (False for members not in the panel)."""
    index = {s: i for i, s in enumerate(instruments)}
    pos = np.array([index.get(s, -1) for s in members], dtype=np.int64)
    out = np.zeros((values.shape[0], len(members)), dtype=bool)
    out[:, pos >= 0] = values[:, pos[pos >= 0]]
    return out


def _spread(counts: np.ndarray) -> dict:
    if counts.size == 0:
        return {"min": 0, "median": 0.0, "max": 0}
    return {"min": int(counts.min()), "median": float(np.median(counts)), "max": int(counts.max())}
