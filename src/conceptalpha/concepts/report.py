"""Coverage report of a concept graph: as a JSON-ready dict and as text.

Coverage is measured on *active member-days*: days a stock is a universe member
(and has a bar, when bars were given). A member-day is covered when the stock
has at least one valid link to a kept concept that day.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from conceptalpha.data.universe import Universe

if TYPE_CHECKING:
    from conceptalpha.concepts.graph import ConceptGraph
    from conceptalpha.concepts.sources import ConceptSource

LARGEST = 10
LISTED_UNCOVERED = 30
LOOK_AHEAD = (
    "snapshot source(s) {names} carry no dates: their links are applied to every day of the window, "
    "including years before the snapshot was taken (look-ahead / survivorship bias)"
)


def coverage_report(graph: ConceptGraph, universe: Universe, active: np.ndarray,
                    sources: list[ConceptSource], source_stats: dict[str, dict]) -> dict:
    """The report dict (JSON-serialisable); ``active`` is bool [D, U] aligned to ``universe``."""
    lo, hi = graph.link_day_span()
    col = pd.Index(universe.instruments.astype(str)).get_indexer(graph.instruments.astype(str))[graph.link_instrument]
    source_of_link = graph.concepts["source"].to_numpy()[graph.link_concept]
    covered = _covered_days(active.shape, col, lo, hi) & active
    sources_out = {}
    for source in sources:
        own = source_of_link == source.name
        alone = _covered_days(active.shape, col[own], lo[own], hi[own]) & active
        sources_out[source.name] = {
            **source_stats[source.name],
            "share_of_links": _ratio(int(own.sum()), graph.n_links),
            "coverage_alone": _ratio(int(alone.sum()), int(active.sum())),
        }
    return {
        "universe": _universe_summary(universe, active),
        "min_members": graph.min_members,
        "min_members_rule": "distinct instruments linked on at least one active member-day of the window",
        "concepts": _concept_summary(graph),
        "links": graph.n_links,
        "sources": sources_out,
        "coverage": _coverage_summary(universe, active, covered),
        "warnings": _warnings(sources, source_stats),
    }


def _covered_days(shape: tuple[int, int], col: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """bool [D, U]: day t of column u lies in some link interval [lo, hi] of that column."""
    ok = (col >= 0) & (lo <= hi)
    diff = np.zeros((shape[0] + 1, shape[1]), dtype=np.int32)
    np.add.at(diff, (lo[ok], col[ok]), 1)
    np.add.at(diff, (hi[ok] + 1, col[ok]), -1)
    return np.cumsum(diff[:-1], axis=0) > 0


def _universe_summary(universe: Universe, active: np.ndarray) -> dict:
    dates = universe.calendar.dates
    return {
        "name": universe.name,
        "start": str(dates[0].date()) if len(dates) else None,
        "end": str(dates[-1].date()) if len(dates) else None,
        "days": len(dates),
        "member_instruments": int(universe.mask.any(axis=0).sum()),
        "member_days": int(universe.mask.sum()),
        "active_member_days": int(active.sum()),
    }


def _concept_summary(graph: ConceptGraph) -> dict:
    concepts = graph.concepts
    sizes = concepts["size"].to_numpy()
    largest = concepts.sort_values(["size", "id"], ascending=[False, True]).head(LARGEST)
    return {
        "total": graph.n_concepts,
        "by_kind": {str(k): int(v) for k, v in concepts["kind"].value_counts().sort_index().items()},
        "by_source": {str(k): int(v) for k, v in concepts["source"].value_counts(sort=False).items()},
        "members_per_concept": _distribution(sizes),
        "mean_daily_members_per_concept": _distribution(concepts["mean_daily_size"].to_numpy()),
        "largest": [{"label": str(r.label), "size": int(r.size)} for r in largest.itertuples()],
    }


def _coverage_summary(universe: Universe, active: np.ndarray, covered: np.ndarray) -> dict:
    total = int(active.sum())
    uncovered_days = (active & ~covered).sum(axis=0)
    by_instrument = pd.Series(uncovered_days, index=universe.instruments.astype(str))
    by_instrument = by_instrument[by_instrument > 0].sort_values(ascending=False, kind="stable")
    never = active.any(axis=0) & ~covered.any(axis=0)
    return {
        "active_member_days": total,
        "covered": int(covered.sum()),
        "uncovered": total - int(covered.sum()),
        "share_covered": _ratio(int(covered.sum()), total),
        "instruments_with_uncovered_days": len(by_instrument),
        "uncovered_days_by_instrument": {k: int(v) for k, v in by_instrument.head(LISTED_UNCOVERED).items()},
        "instruments_without_any_concept": sorted(universe.instruments[never].astype(str).tolist()),
    }


def _warnings(sources: list[ConceptSource], stats: dict[str, dict]) -> list[str]:
    warnings = []
    snapshots = [s.name for s in sources if s.is_snapshot]
    if snapshots:
        warnings.append(LOOK_AHEAD.format(names=", ".join(snapshots)))
    for name, row in stats.items():
        bad = row["unparsed_symbols"]
        if bad["rows"]:
            listed = ", ".join(list(bad["listed"])[:10])
            warnings.append(f"{name}: {bad['rows']} row(s) with {bad['distinct']} symbol(s) that cannot be normalised ({listed})")
        for reason, rows in row["dropped_rows"].items():
            if reason != "unparsed symbol":
                warnings.append(f"{name}: {rows} row(s) dropped: {reason}")
    return warnings


def _distribution(values: np.ndarray) -> dict:
    if len(values) == 0:
        return {"min": None, "p25": None, "median": None, "p75": None, "max": None, "mean": None}
    q = np.percentile(values, [0, 25, 50, 75, 100])
    return {"min": float(q[0]), "p25": float(q[1]), "median": float(q[2]), "p75": float(q[3]),
            "max": float(q[4]), "mean": float(np.mean(values))}


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def report_text(report: dict) -> str:
    """Human-readable rendering of :func:`coverage_report`'s dict."""
    u, c, cov = report["universe"], report["concepts"], report["coverage"]
    dist = c["members_per_concept"]
    lines = [
        f"universe {u['name']} {u['start']}..{u['end']}: {u['member_instruments']} member instruments, "
        f"{u['active_member_days']:,} active member-days (of {u['member_days']:,} member-days)",
        f"concepts: {c['total']} ({_pairs(c['by_kind'])}); {report['links']:,} links; "
        f"min members {report['min_members']} ({report['min_members_rule']})",
        f"members per concept: min {_num(dist['min'])}, median {_num(dist['median'])}, "
        f"p75 {_num(dist['p75'])}, max {_num(dist['max'])}, mean {_num(dist['mean'])}",
        f"coverage: {_pct(cov['share_covered'])} of active member-days have at least one concept; "
        f"{cov['uncovered']:,} do not ({cov['instruments_with_uncovered_days']} instruments)",
    ]
    if without := cov["instruments_without_any_concept"]:
        more = f" … and {len(without) - LISTED_UNCOVERED} more (see --json)" if len(without) > LISTED_UNCOVERED else ""
        lines.append(f"  {len(without)} instruments without any concept: {', '.join(without[:LISTED_UNCOVERED])}{more}")
    if cov["uncovered_days_by_instrument"]:
        lines.append("  most uncovered days: " + _pairs(cov["uncovered_days_by_instrument"]))
    lines.append("sources:")
    for name, s in report["sources"].items():
        lines.append(
            f"  {name}: {s['rows_read']:,} rows, {s['links_read']:,} links read, {s['links_outside_universe']:,} outside the "
            f"universe/window, {s['concepts_kept']} concepts kept ({s['concepts_below_min_members']} below min members), "
            f"{_pct(s['share_of_links'])} of links, alone covers {_pct(s['coverage_alone'])}"
            + (" [snapshot]" if s["snapshot"] else "")
        )
    lines.append("largest concepts: " + ", ".join(f"{x['label']} ({x['size']})" for x in c["largest"]))
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)


def _pairs(mapping: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in mapping.items())


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:g}"
