"""The point-in-time stock→concept graph.

A :class:`ConceptGraph` is a list of links (instrument, concept id, start, end)
over a concept index that is fixed for the whole period (C concepts, ids
0..C-1). For any day d and any list of N instruments it yields the sparse
membership

    M[i, k] = 1  ⇔  instrument i has a link to concept k with start ≤ d ≤ end

as a ``scipy.sparse.csr_matrix`` float32 [N, C]. Building M costs
O(N + links of those N instruments); nothing dense of size N×C is ever made.
Instruments the graph does not know get empty rows. Concepts with no member on
a day keep their (empty) column: the model drops them for that day.

Build rule (:func:`build_concept_graph`): sources are merged with concept labels
``source:kind:name``; links are kept when the instrument is a universe member
(with a bar, when ``has_bars`` is given) on at least one day where the link is
valid; a concept is kept when it has at least ``min_members`` distinct such
instruments over the build window ("members ever in the universe").
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from conceptalpha.concepts.report import coverage_report
from conceptalpha.concepts.sources import LINK_COLUMNS, ConceptSource, from_frame, unique_source_names
from conceptalpha.data.calendar import Calendar
from conceptalpha.data.symbols import market_of, normalize_symbol
from conceptalpha.data.universe import Universe
from conceptalpha.errors import DataError, UserError
from conceptalpha.io import atomic_path

DEFAULT_MIN_MEMBERS = 5
OPEN_START = np.iinfo(np.int64).min
OPEN_END = np.iinfo(np.int64).max
FORMAT = "conceptalpha-concept-graph/1"
CONCEPT_KEY = ["source", "kind", "concept"]
_SAVED_ARRAYS = (
    "instruments", "concept_name", "concept_source", "concept_kind", "concept_size", "concept_mean_daily_size",
    "link_instrument", "link_concept", "link_start", "link_end", "calendar", "universe_name", "min_members", "report",
)
CONCEPT_COLUMNS = ("id", "label", "name", "source", "kind", "size", "mean_daily_size")

Day = int | str | pd.Timestamp | np.datetime64
_NANOSECONDS_PER_DAY = 86_400 * 10**9


def sparse_to_torch(matrix: sp.spmatrix | None, device=None):
    """scipy sparse [N, C] → coalesced torch sparse COO float32 on ``device`` (default: CPU)."""
    import torch  # only for callers that want tensors: the graph itself needs no torch

    if matrix is None:
        return None
    if not (sp.issparse(matrix) and matrix.format == "csr" and matrix.has_canonical_format):
        matrix = sp.csr_matrix(matrix)
        matrix.sum_duplicates()
    # canonical CSR: its links in row-major order, each once, which is what a coalesced COO tensor holds
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    indices = torch.from_numpy(np.stack([rows, matrix.indices.astype(np.int64)]))
    values = torch.from_numpy(matrix.data.astype(np.float32))
    tensor = torch.sparse_coo_tensor(indices, values, matrix.shape, is_coalesced=True, check_invariants=False)
    return tensor if device is None else tensor.to(device)


def day_numbers(dates, open_value: int) -> np.ndarray:
    """Dates → int64 days since 1970-01-01; NaT → ``open_value``."""
    values = pd.DatetimeIndex(pd.to_datetime(dates)).normalize()
    days = values.to_numpy().astype("datetime64[D]").astype(np.int64)
    return np.where(values.isna(), open_value, days)


@dataclass
class ConceptGraph:
    """Links sorted by instrument; ``concepts`` has columns :data:`CONCEPT_COLUMNS` (row k = id k)."""

    instruments: np.ndarray  # [S] canonical symbols with at least one link, sorted
    concepts: pd.DataFrame
    link_instrument: np.ndarray  # int64 [L] row in ``instruments``
    link_concept: np.ndarray  # int64 [L] concept id
    link_start: np.ndarray  # int64 [L] day number, OPEN_START when open
    link_end: np.ndarray  # int64 [L] day number, OPEN_END when open
    calendar: Calendar  # the build window (int days index it)
    universe_name: str = ""
    min_members: int = DEFAULT_MIN_MEMBERS
    report_data: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.instruments = np.asarray(self.instruments, dtype=object)
        order = np.lexsort((self.link_start, self.link_concept, self.link_instrument))
        for name in ("link_instrument", "link_concept", "link_start", "link_end"):
            setattr(self, name, np.ascontiguousarray(np.asarray(getattr(self, name), dtype=np.int64)[order]))
        self._row_of = {symbol: row for row, symbol in enumerate(self.instruments.astype(str))}
        # CSR offsets: the links of instrument s are link_*[ptr[s]:ptr[s+1]].
        self._ptr = np.concatenate([[0], np.cumsum(np.bincount(self.link_instrument, minlength=len(self.instruments)))])

    def report(self) -> dict:
        """The coverage report made at build time (see :mod:`conceptalpha.concepts.report`)."""
        return self.report_data

    @property
    def n_concepts(self) -> int:
        return len(self.concepts)

    @property
    def n_links(self) -> int:
        return len(self.link_concept)

    def day_number(self, day: Day) -> int:
        """An int is a trading-day index of :attr:`calendar`; anything else is a date."""
        if isinstance(day, (int, np.integer)):
            if not 0 <= int(day) < len(self.calendar):
                raise UserError(f"day index {day} is outside the graph's calendar (0..{len(self.calendar) - 1})")
            day = self.calendar.dates[int(day)]
        if isinstance(day, pd.Timestamp) and day.tz is None:  # the common case, without a DatetimeIndex per call
            return int(day.normalize().value // _NANOSECONDS_PER_DAY)
        return int(day_numbers([day], 0)[0])

    def membership(self, day: Day, instruments: Sequence[str]) -> sp.csr_matrix:
        """Sparse float32 [N, C] membership of ``instruments`` (rows in that order) on ``day``.

        Unknown instruments get empty rows. Memory and time are O(N + links of the N instruments).
        """
        d = self.day_number(day)
        # a dict lookup per name: a pandas index per call costs more than the rest of this method
        rows = np.fromiter((self._row_of.get(str(symbol), -1) for symbol in instruments), np.int64, len(instruments))
        known = rows >= 0
        first = np.zeros(len(rows), dtype=np.int64)
        counts = np.zeros(len(rows), dtype=np.int64)
        first[known] = self._ptr[rows[known]]
        counts[known] = self._ptr[rows[known] + 1] - first[known]
        link = _expand_ranges(first, counts)
        row_of_link = np.repeat(np.arange(len(rows)), counts)
        valid = (self.link_start[link] <= d) & (d <= self.link_end[link])
        indptr = np.concatenate([[0], np.cumsum(np.bincount(row_of_link[valid], minlength=len(rows)))])
        matrix = sp.csr_matrix(
            (np.ones(int(valid.sum()), dtype=np.float32), self.link_concept[link[valid]], indptr),
            shape=(len(rows), self.n_concepts),
        )
        matrix.sum_duplicates()  # overlapping intervals of one link count once
        matrix.data[:] = 1.0
        return matrix

    def membership_tensor(self, day: Day, instruments: Sequence[str], device=None):
        """:meth:`membership` as a coalesced torch sparse COO float32 tensor [N, C] on ``device``."""
        return sparse_to_torch(self.membership(day, instruments), device)

    def instrument_concepts(self, symbol: str) -> pd.DataFrame:
        """One instrument's links: label, name, source, kind, size, start, end (NaT = open)."""
        row = self._row_of.get(normalize_symbol(symbol, market_of(self.instruments)), -1)
        sl = slice(self._ptr[row], self._ptr[row + 1]) if row >= 0 else slice(0, 0)
        table = self.concepts.iloc[self.link_concept[sl]][["label", "name", "source", "kind", "size"]].reset_index(drop=True)
        table["start"] = _dates_or_nat(self.link_start[sl], OPEN_START)
        table["end"] = _dates_or_nat(self.link_end[sl], OPEN_END)
        return table

    def links_frame(self) -> pd.DataFrame:
        """All links as a long table: instrument, concept (label), concept_id, start, end."""
        return pd.DataFrame({
            "instrument": self.instruments[self.link_instrument],
            "concept": self.concepts["label"].to_numpy()[self.link_concept],
            "concept_id": self.link_concept,
            "start": _dates_or_nat(self.link_start, OPEN_START),
            "end": _dates_or_nat(self.link_end, OPEN_END),
        })

    def link_day_span(self) -> tuple[np.ndarray, np.ndarray]:
        """Each link's first and last trading-day index in :attr:`calendar` (lo > hi: never valid there)."""
        return _day_span(self.link_start, self.link_end, self.calendar)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> None:
        """Write one ``.npz`` file (no pickled objects), atomically."""
        arrays = {
            "format": np.array(FORMAT),
            "instruments": _text_array(self.instruments),
            "concept_name": _text_array(self.concepts["name"]),
            "concept_source": _text_array(self.concepts["source"]),
            "concept_kind": _text_array(self.concepts["kind"]),
            "concept_size": self.concepts["size"].to_numpy(np.int64),
            "concept_mean_daily_size": self.concepts["mean_daily_size"].to_numpy(np.float64),
            "link_instrument": self.link_instrument,
            "link_concept": self.link_concept,
            "link_start": self.link_start,
            "link_end": self.link_end,
            "calendar": day_numbers(self.calendar.dates, 0),
            "universe_name": np.array(self.universe_name),
            "min_members": np.array(self.min_members, dtype=np.int64),
            "report": np.array(json.dumps(self.report_data, ensure_ascii=False)),
        }
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        with atomic_path(path) as tmp:
            tmp.write_bytes(buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> "ConceptGraph":
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "file not found")
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except (ValueError, OSError, EOFError) as err:
            raise DataError(path, f"not a concept graph file ({err})") from None
        if str(arrays.get("format", "")) != FORMAT:
            raise DataError(path, f"not a concept graph file (expected format {FORMAT!r})")
        missing = sorted(set(_SAVED_ARRAYS) - set(arrays))
        if missing:
            raise DataError(path, f"concept graph file lacks arrays {missing}")
        concepts = concept_table(arrays["concept_name"], arrays["concept_source"], arrays["concept_kind"],
                                 arrays["concept_size"], arrays["concept_mean_daily_size"])
        return cls(
            instruments=arrays["instruments"].astype(object),
            concepts=concepts,
            link_instrument=arrays["link_instrument"],
            link_concept=arrays["link_concept"],
            link_start=arrays["link_start"],
            link_end=arrays["link_end"],
            calendar=Calendar(pd.DatetimeIndex(arrays["calendar"].astype("datetime64[D]"))),
            universe_name=str(arrays["universe_name"]),
            min_members=int(arrays["min_members"]),
            report_data=json.loads(str(arrays["report"])),
        )


def concept_table(names, sources, kinds, sizes, mean_daily_sizes) -> pd.DataFrame:
    """The concepts table (row k = concept id k) with labels ``source:kind:name``."""
    frame = pd.DataFrame({
        "id": np.arange(len(names), dtype=np.int64),
        "name": np.asarray(names, dtype=object),
        "source": np.asarray(sources, dtype=object),
        "kind": np.asarray(kinds, dtype=object),
        "size": np.asarray(sizes, dtype=np.int64),
        "mean_daily_size": np.asarray(mean_daily_sizes, dtype=np.float64),
    })
    frame["label"] = frame["source"] + ":" + frame["kind"] + ":" + frame["name"]
    return frame.loc[:, list(CONCEPT_COLUMNS)]


# ---------------------------------------------------------------------- building


def build_concept_graph(
    sources: Sequence[ConceptSource | pd.DataFrame],
    universe: Universe,
    has_bars: np.ndarray | None = None,
    min_members: int = DEFAULT_MIN_MEMBERS,
) -> ConceptGraph:
    """Merge sources, restrict them to the universe and keep concepts with ≥ ``min_members`` members.

    ``has_bars`` (bool [D, N], aligned to ``universe``) limits membership to
    member-days that have a bar. The coverage report is attached (``graph.report()``).
    """
    if min_members < 1:
        raise UserError(f"min_members must be at least 1, got {min_members}")
    sources = _as_sources(sources, universe)
    active = _active_member_days(universe, has_bars)
    links = pd.concat([s.links for s in sources], ignore_index=True) if sources else _empty_links()
    col = pd.Index(universe.instruments.astype(str)).get_indexer(links["instrument"].astype(str))
    _check_sources_meet_universe(sources, links, col >= 0, universe)
    lo, hi = _day_span(day_numbers(links["start"], OPEN_START), day_numbers(links["end"], OPEN_END), universe.calendar)
    active_days = _active_days_in_span(active, col, lo, hi)
    links = links.assign(active_days=active_days)
    stats = {s.name: _read_stats(s, links) for s in sources}
    in_universe = links[links["active_days"] > 0]

    kept = _concepts_with_min_members(in_universe, [s.name for s in sources], min_members)
    concepts = concept_table(kept["concept"], kept["source"], kept["kind"], kept["size"],
                             kept["days"] / max(len(universe.calendar), 1))
    concept_id = pd.MultiIndex.from_frame(kept[CONCEPT_KEY]).get_indexer(pd.MultiIndex.from_frame(in_universe[CONCEPT_KEY]))
    graph_links = in_universe[concept_id >= 0].assign(concept_id=concept_id[concept_id >= 0])
    for name, row in stats.items():
        row["concepts_kept"] = int((kept["source"] == name).sum())
        row["concepts_below_min_members"] = row["concepts_in_universe"] - row["concepts_kept"]
        row["links_kept"] = int((graph_links["source"] == name).sum())
    instruments, instrument_row = np.unique(graph_links["instrument"].to_numpy(dtype=str), return_inverse=True)
    graph = ConceptGraph(
        instruments=instruments.astype(object),
        concepts=concepts,
        link_instrument=instrument_row,
        link_concept=graph_links["concept_id"].to_numpy(),
        link_start=day_numbers(graph_links["start"], OPEN_START),
        link_end=day_numbers(graph_links["end"], OPEN_END),
        calendar=universe.calendar,
        universe_name=universe.name,
        min_members=min_members,
    )
    graph.report_data = coverage_report(graph, universe, active, sources, stats)
    return graph


def _concepts_with_min_members(links: pd.DataFrame, source_order: list[str], min_members: int) -> pd.DataFrame:
    """Concepts (source, kind, concept, size, days) with ≥ ``min_members`` distinct instruments, in id order.

    ``days`` sums the links' active member-days; ids follow the source order given, then kind, then name.
    """
    sizes = links.groupby(CONCEPT_KEY, sort=False).agg(size=("instrument", "nunique"), days=("active_days", "sum"))
    kept = sizes[sizes["size"] >= min_members].reset_index()
    rank = kept["source"].map({name: i for i, name in enumerate(source_order)})
    return kept.assign(rank=rank).sort_values(["rank", "kind", "concept"], ignore_index=True)


def _as_sources(sources: Sequence[ConceptSource | pd.DataFrame], universe: Universe) -> list[ConceptSource]:
    """Wrap plain tables (symbols read in the universe's market); source names must be unique
    (plain tables are named ``table``, ``table_2``…)."""
    frame_names = iter(unique_source_names(["table"] * sum(isinstance(s, pd.DataFrame) for s in sources)))
    market = market_of(universe.instruments)
    wrapped = [from_frame(s, next(frame_names), market) if isinstance(s, pd.DataFrame) else s for s in sources]
    names = [s.name for s in wrapped]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise UserError(f"concept source name(s) {duplicated} given more than once; each source needs its own name")
    return wrapped


def _check_sources_meet_universe(sources: list[ConceptSource], links: pd.DataFrame, known: np.ndarray, universe: Universe) -> None:
    """A source with rows but no symbol of the universe is a wrong file or a wrong market, not an empty graph."""
    for source in sources:
        own = (links["source"] == source.name).to_numpy()
        if source.issues.rows_read == 0 or known[own].any():
            continue
        where = source.path or f"concept source {source.name!r}"
        example = links["instrument"][own].iloc[0] if own.any() else next(iter(source.issues.unparsed_symbols), "?")
        raise UserError(
            f"{where}: none of its symbols (e.g. {example!r}) is an instrument of universe {universe.name!r} "
            f"(e.g. {universe.instruments[0] if len(universe.instruments) else '-'!r}); wrong file, or wrong data.market?"
        )


def _active_member_days(universe: Universe, has_bars: np.ndarray | None) -> np.ndarray:
    """bool [D, U]: member on day t (and has a bar, when ``has_bars`` is given)."""
    if has_bars is None:
        return universe.mask
    if has_bars.shape != universe.mask.shape:
        raise UserError(f"has_bars has shape {has_bars.shape}, the universe mask {universe.mask.shape}")
    return universe.mask & has_bars


def _day_span(start: np.ndarray, end: np.ndarray, calendar: Calendar) -> tuple[np.ndarray, np.ndarray]:
    """First/last calendar index within [start, end] (day numbers; open ends → calendar ends)."""
    cal = day_numbers(calendar.dates, 0)
    lo = np.searchsorted(cal, start, side="left")
    hi = np.searchsorted(cal, end, side="right") - 1
    return lo.astype(np.int64), hi.astype(np.int64)


def _active_days_in_span(active: np.ndarray, col: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """For each link: active member-days of its instrument (column ``col``, -1 = none) in [lo, hi]."""
    # Prefix sums over days: active days in [lo, hi] = cum[hi + 1] - cum[lo].
    cum = np.vstack([np.zeros((1, active.shape[1]), dtype=np.int32), np.cumsum(active, axis=0, dtype=np.int32)])
    ok = (col >= 0) & (lo <= hi)
    days = np.zeros(len(col), dtype=np.int64)
    days[ok] = cum[hi[ok] + 1, col[ok]] - cum[lo[ok], col[ok]]
    return days


def _read_stats(source: ConceptSource, links: pd.DataFrame) -> dict:
    """Per-source counts before the min-members rule."""
    own = links[links["source"] == source.name]
    inside = own[own["active_days"] > 0]
    return {
        "path": source.path,
        "snapshot": source.is_snapshot,
        **source.issues.to_dict(),
        "links_read": len(own),
        "instruments_read": int(own["instrument"].nunique()),
        "concepts_read": int(own.groupby(["kind", "concept"]).ngroups),
        "links_outside_universe": int(len(own) - len(inside)),
        "concepts_in_universe": int(inside.groupby(["kind", "concept"]).ngroups),
    }


def _expand_ranges(first: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(first[i], first[i] + counts[i]) over i, without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(first - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return offsets + np.arange(total, dtype=np.int64)


def _dates_or_nat(days: np.ndarray, open_value: int) -> pd.DatetimeIndex:
    safe = np.where(days == open_value, 0, days).astype("datetime64[D]")
    return pd.DatetimeIndex(np.where(days == open_value, np.datetime64("NaT"), safe)).as_unit("ns")


def _text_array(values) -> np.ndarray:
    """Fixed-width unicode array (loadable without pickle)."""
    values = [str(v) for v in values]
    return np.array(values, dtype=f"<U{max([len(v) for v in values], default=1) or 1}")


def _empty_links() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="datetime64[ns]" if c in ("start", "end") else object) for c in LINK_COLUMNS})
