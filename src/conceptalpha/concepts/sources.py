"""Concept sources: vendor and user tables → one canonical long table of links.

Every adapter returns a :class:`ConceptSource` whose ``links`` table has the
columns of :data:`LINK_COLUMNS`:

- ``instrument``: canonical symbol (``SH600000``), see :mod:`conceptalpha.data.symbols`;
- ``concept``: the vendor's concept / industry name (non-empty text);
- ``kind``: ``industry``, ``concept`` or ``keyword`` (derived from company text);
- ``source``: the source id (the adapter kind, e.g. ``tushare_concepts``);
- ``start``, ``end``: the link is valid on [start, end] (inclusive); NaT = open.
  Every vendor snapshot shipped with the project has no dates: applying it to
  earlier years is a look-ahead (survivorship) bias.

Problems that do not invalidate a file are counted in :class:`SourceIssues`
(symbols that cannot be normalised are listed, never silently dropped);
problems that do (missing file or columns, non-text concept names, start after
end, unknown kind) raise :class:`~conceptalpha.errors.DataError` /
:class:`~conceptalpha.errors.UserError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from conceptalpha.concepts.keywords import KeywordSettings, company_keywords
from conceptalpha.data.symbols import normalize_symbols
from conceptalpha.errors import DataError, UserError

LINK_COLUMNS = ("instrument", "concept", "kind", "source", "start", "end")
KINDS = ("industry", "concept", "keyword")
MAX_LISTED_SYMBOLS = 50
_PROFILE_UNKNOWN = "-"
_PROFILE_INDEX_INDUSTRY = "A股指数"  # rows of market indices, not companies


@dataclass
class SourceIssues:
    """What an adapter counted while reading one file.

    ``dropped`` maps a reason to a number of rows; ``unparsed_symbols`` maps each
    symbol that could not be normalised to its number of rows.
    """

    rows_read: int = 0
    unparsed_symbols: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, rows: int) -> None:
        if rows:
            self.dropped[reason] = self.dropped.get(reason, 0) + int(rows)

    def to_dict(self) -> dict:
        listed = sorted(self.unparsed_symbols.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_LISTED_SYMBOLS]
        return {
            "rows_read": self.rows_read,
            "unparsed_symbols": {"distinct": len(self.unparsed_symbols), "rows": sum(self.unparsed_symbols.values()),
                                 "listed": dict(listed)},
            "dropped_rows": dict(self.dropped),
        }


@dataclass
class ConceptSource:
    """One source's links (columns :data:`LINK_COLUMNS`) and what was counted while reading it."""

    name: str
    links: pd.DataFrame
    issues: SourceIssues = field(default_factory=SourceIssues)
    path: str | None = None

    @property
    def is_snapshot(self) -> bool:
        """True when no link carries a date: the table is one snapshot applied to every day."""
        return bool(self.links["start"].isna().all() and self.links["end"].isna().all())


def from_frame(frame: pd.DataFrame, source: str = "table", market: str = "cn") -> ConceptSource:
    """An in-memory long table (instrument, concept[, kind, start, end]) as a source named ``source``."""
    issues = SourceIssues(rows_read=len(frame))
    return ConceptSource(source, _links_from_generic(frame, source, f"<{source} table>", issues, market), issues)


# --------------------------------------------------------------------------- reading files


def read_table_file(path: str | Path) -> pd.DataFrame:
    """Read a CSV (``.csv``, ``.csv.gz``, ``.txt``) or Parquet (``.parquet``, ``.pq``) file.

    CSV cells are read as text (so ``000001`` keeps its zeros); an empty cell is "".
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    suffixes = "".join(path.suffixes).lower()
    try:
        if suffixes.endswith((".parquet", ".pq")):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except (UnicodeDecodeError, ValueError, OSError) as err:
        raise DataError(path, f"cannot read as a {'Parquet' if 'parquet' in suffixes else 'CSV'} table: {err}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def require_columns(frame: pd.DataFrame, columns: tuple[str, ...], path: str | Path) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(path, f"missing column(s) {missing}; found {list(frame.columns)}")


def _text_column(frame: pd.DataFrame, column: str, path: str | Path) -> pd.Series:
    """The column as stripped text; non-text values (numbers from Parquet) are an error."""
    values = frame[column]
    is_text = values.map(lambda v: isinstance(v, str) or v is None or (isinstance(v, float) and np.isnan(v)))
    if not bool(is_text.all()):
        bad = values[~is_text].iloc[0]
        raise DataError(path, f"column {column!r} must hold text, found {type(bad).__name__} value {bad!r}")
    return values.fillna("").astype(str).str.strip()


# --------------------------------------------------------------------------- canonical links


def finalise_links(raw: pd.DataFrame, source: str, path: str | Path, issues: SourceIssues, market: str = "cn") -> pd.DataFrame:
    """Normalise symbols (of ``market``), drop and count bad rows, validate dates → canonical links.

    ``raw`` has columns symbol (any accepted spelling), concept (text), kind,
    start, end (datetime64, NaT = open).
    """
    empty = raw["concept"].eq("")
    issues.drop("empty concept name", int(empty.sum()))
    raw = raw[~empty]
    canon, ok = normalize_symbols(raw["symbol"].to_numpy(), market)
    if not ok.all():
        bad = pd.Series(raw["symbol"].to_numpy()[~ok]).astype(str).value_counts()
        for symbol, rows in bad.items():
            issues.unparsed_symbols[symbol] = issues.unparsed_symbols.get(symbol, 0) + int(rows)
        issues.drop("unparsed symbol", int((~ok).sum()))
    links = pd.DataFrame({
        "instrument": pd.Series(canon[ok], dtype=str),
        "concept": raw["concept"].to_numpy()[ok],
        "kind": raw["kind"].to_numpy()[ok],
        "source": source,
        "start": pd.to_datetime(raw["start"].to_numpy()[ok]).astype("datetime64[ns]"),
        "end": pd.to_datetime(raw["end"].to_numpy()[ok]).astype("datetime64[ns]"),
    })
    _check_dates(links, path)
    before = len(links)
    links = links.drop_duplicates(ignore_index=True)
    issues.drop("duplicate link", before - len(links))
    return links.loc[:, list(LINK_COLUMNS)]


def _check_dates(links: pd.DataFrame, path: str | Path) -> None:
    reversed_ = links["start"].notna() & links["end"].notna() & (links["start"] > links["end"])
    if reversed_.any():
        row = links[reversed_].iloc[0]
        raise DataError(
            path,
            f"{int(reversed_.sum())} link(s) start after they end, e.g. {row['instrument']} / {row['concept']}: "
            f"start {row['start'].date()} > end {row['end'].date()}",
        )


def _snapshot(symbols: pd.Series, concepts: pd.Series, kind: str) -> pd.DataFrame:
    return pd.DataFrame({
        "symbol": symbols.to_numpy(), "concept": concepts.to_numpy(), "kind": kind,
        "start": pd.NaT, "end": pd.NaT,
    })


def _parse_dates(values: pd.Series, column: str, path: str | Path) -> pd.Series:
    text = values.astype("string").str.strip().replace("", pd.NA)
    parsed = pd.to_datetime(text, errors="coerce", format="mixed")
    bad = parsed.isna() & text.notna()
    if bad.any():
        raise DataError(path, f"column {column!r} has {int(bad.sum())} value(s) that are not dates, e.g. {text[bad].iloc[0]!r}")
    return parsed.dt.normalize()


def _links_from_generic(frame: pd.DataFrame, source: str, path: str | Path, issues: SourceIssues, market: str) -> pd.DataFrame:
    require_columns(frame, ("instrument", "concept"), path)
    concepts = _text_column(frame, "concept", path)
    if "kind" in frame.columns:
        kinds = _text_column(frame, "kind", path).str.lower()
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown:
            raise DataError(path, f"column 'kind' has value(s) {unknown}; expected one of {list(KINDS)}")
    else:
        kinds = pd.Series("concept", index=frame.index)
    n = len(frame)
    raw = pd.DataFrame({
        "symbol": frame["instrument"].to_numpy(),
        "concept": concepts.to_numpy(),
        "kind": kinds.to_numpy(),
        "start": _parse_dates(frame["start"], "start", path).to_numpy() if "start" in frame else np.full(n, np.datetime64("NaT", "ns")),
        "end": _parse_dates(frame["end"], "end", path).to_numpy() if "end" in frame else np.full(n, np.datetime64("NaT", "ns")),
    })
    return finalise_links(raw, source, path, issues, market)


# --------------------------------------------------------------------------- adapters


def _vendor_reader(symbol_column: str, concept_column: str, kind: str) -> Callable[[Path, str, str], ConceptSource]:
    """An adapter for a vendor snapshot with one symbol column and one name column."""

    def read(path: Path, source: str, market: str) -> ConceptSource:
        frame = read_table_file(path)
        require_columns(frame, (symbol_column, concept_column), path)
        issues = SourceIssues(rows_read=len(frame))
        raw = _snapshot(frame[symbol_column], _text_column(frame, concept_column, path), kind)
        return ConceptSource(source, finalise_links(raw, source, path, issues, market), issues, str(path))

    read.__doc__ = f"Snapshot table: column {symbol_column!r} → {kind} named by column {concept_column!r}."
    return read


def read_generic_table(path: Path, source: str, market: str) -> ConceptSource:
    """Long table (instrument, concept[, kind, start, end]); ``kind`` defaults to ``concept``."""
    frame = read_table_file(path)
    issues = SourceIssues(rows_read=len(frame))
    return ConceptSource(source, _links_from_generic(frame, source, path, issues, market), issues, str(path))


def read_profile_industry(path: Path, source: str, market: str) -> ConceptSource:
    """company_profile_2017.csv: ``market`` + ``symbol`` → ``industry`` ("-" = unknown; index rows dropped)."""
    frame = read_table_file(path)
    require_columns(frame, ("symbol", "market", "industry"), path)
    issues = SourceIssues(rows_read=len(frame))
    industry = _text_column(frame, "industry", path)
    unknown = industry.eq(_PROFILE_UNKNOWN)
    index_rows = industry.eq(_PROFILE_INDEX_INDUSTRY)
    issues.drop("industry unknown ('-')", int(unknown.sum()))
    issues.drop("market index, not a company", int(index_rows.sum()))
    keep = ~(unknown | index_rows)
    symbols = frame["market"].astype(str).str.strip() + frame["symbol"].astype(str).str.strip()
    raw = _snapshot(symbols[keep], industry[keep], "industry")
    return ConceptSource(source, finalise_links(raw, source, path, issues, market), issues, str(path))


TABLE_READERS: dict[str, Callable[[Path, str, str], ConceptSource]] = {
    "table": read_generic_table,
    "tushare_concepts": _vendor_reader("ts_code", "concept_name", "concept"),
    "tushare_industry": _vendor_reader("ts_code", "industry", "industry"),
    "tushare_basic": _vendor_reader("ts_code", "industry", "industry"),
    "eastmoney": _vendor_reader("股票代码", "板块名称", "concept"),
    "sina_concepts": _vendor_reader("code", "concept", "concept"),
    "sina_industry": _vendor_reader("code", "industry", "industry"),
    "profile_industry": read_profile_industry,
}
"""Adapters for tables of links, by source kind."""


def _keyword_source(symbols: pd.Series, texts: pd.Series, source: str, path: Path,
                    issues: SourceIssues, settings: KeywordSettings, market: str) -> ConceptSource:
    """Keyword links from one text per row; several rows of one symbol are joined."""
    joined = texts.groupby(symbols.to_numpy(), sort=True).agg(" ".join)
    keywords = company_keywords(joined.index.to_numpy(), joined.to_numpy(), settings)
    issues.drop("no text", int(texts.eq("").sum()))
    raw = _snapshot(keywords["instrument"], keywords["keyword"], "keyword")
    return ConceptSource(source, finalise_links(raw, source, path, issues, market), issues, str(path))


def read_profile_keywords(path: Path, source: str, settings: KeywordSettings, market: str) -> ConceptSource:
    """company_profile_2017.csv: keywords of ``co_business`` + ``co_intro`` ("-" = no text)."""
    frame = read_table_file(path)
    require_columns(frame, ("symbol", "market", "co_business", "co_intro"), path)
    issues = SourceIssues(rows_read=len(frame))
    parts = [_text_column(frame, c, path).replace(_PROFILE_UNKNOWN, "") for c in ("co_business", "co_intro")]
    texts = (parts[0] + " " + parts[1]).str.strip()
    symbols = frame["market"].astype(str).str.strip() + frame["symbol"].astype(str).str.strip()
    return _keyword_source(symbols, texts, source, path, issues, settings, market)


def read_text_keywords(path: Path, source: str, settings: KeywordSettings, market: str) -> ConceptSource:
    """Generic (instrument, text) table → keyword concepts."""
    frame = read_table_file(path)
    require_columns(frame, ("instrument", "text"), path)
    issues = SourceIssues(rows_read=len(frame))
    texts = _text_column(frame, "text", path)
    return _keyword_source(frame["instrument"].astype(str).str.strip(), texts, source, path, issues, settings, market)


TEXT_READERS: dict[str, Callable[[Path, str, KeywordSettings, str], ConceptSource]] = {
    "profile_keywords": read_profile_keywords,
    "text": read_text_keywords,
}
"""Adapters that derive keyword concepts from company descriptions, by source kind."""

SOURCE_KINDS = tuple(sorted({**TABLE_READERS, **TEXT_READERS}))


def read_source(kind: str, path: str | Path, source: str | None = None,
                keyword_settings: KeywordSettings | None = None, market: str = "cn") -> ConceptSource:
    """Read one concept source of a given kind (see :data:`SOURCE_KINDS`); ``source`` defaults to the kind.

    ``market`` (``cn`` or ``generic``) is the spelling its symbols are read in:
    the market of the data the graph is built for.
    """
    source = source or kind
    if kind in TABLE_READERS:
        return TABLE_READERS[kind](Path(path), source, market)
    if kind in TEXT_READERS:
        return TEXT_READERS[kind](Path(path), source, keyword_settings or KeywordSettings(), market)
    raise UserError(f"unknown concept source kind {kind!r}; valid kinds: {', '.join(SOURCE_KINDS)}")


def parse_source_spec(spec: str) -> tuple[str, Path]:
    """``KIND:PATH`` → (kind, path). The kind is checked by :func:`read_source`."""
    kind, sep, path = spec.partition(":")
    if not sep or not kind or not path:
        raise UserError(f"source {spec!r}: expected KIND:PATH, e.g. tushare_concepts:data/tushare_concepts.csv")
    return kind.strip(), Path(path)


def unique_source_names(kinds: list[str]) -> list[str]:
    """Source ids: the kind, with ``_2``, ``_3``… appended when a kind is given more than once."""
    seen: dict[str, int] = {}
    names = []
    for kind in kinds:
        seen[kind] = seen.get(kind, 0) + 1
        names.append(kind if seen[kind] == 1 else f"{kind}_{seen[kind]}")
    return names
