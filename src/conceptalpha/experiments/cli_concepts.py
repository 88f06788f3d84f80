"""``conceptalpha concepts ...`` commands: build the stock→concept graph, inspect it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import typer

from conceptalpha.concepts.graph import DEFAULT_MIN_MEMBERS, ConceptGraph, build_concept_graph
from conceptalpha.concepts.keywords import KeywordSettings
from conceptalpha.concepts.report import report_text
from conceptalpha.concepts.sources import SOURCE_KINDS, parse_source_spec, read_source, unique_source_names
from conceptalpha.data.panel import BarPanel
from conceptalpha.data.universe import Universe

app = typer.Typer(no_args_is_help=True)


@app.command()
def build(
    provider: Path = typer.Option(..., "--provider", help="Market data: a Qlib directory or a bar table."),
    universe: str = typer.Option("csi300", "--universe", help="Universe name (instruments/<name>.txt)."),
    source: list[str] = typer.Option(..., "--source", help=f"KIND:PATH, repeatable. Kinds: {', '.join(SOURCE_KINDS)}."),
    out: Path = typer.Option(..., "--out", help="Graph file to write (.npz)."),
    min_members: int = typer.Option(DEFAULT_MIN_MEMBERS, "--min-members", help="Drop concepts with fewer members in the universe."),
    start: str = typer.Option(None, "--start", help="First day of the build window (default: data start)."),
    end: str = typer.Option(None, "--end", help="Last day of the build window (default: data end)."),
    keywords_top_k: int = typer.Option(KeywordSettings.top_k, "--keywords-top-k", help="Keywords kept per company (text sources)."),
    keywords_min_support: int = typer.Option(KeywordSettings.min_support, "--keywords-min-support",
                                             help="Companies a keyword needs to become a concept (text sources)."),
    as_json: bool = typer.Option(False, "--json", help="Print the coverage report as JSON."),
) -> None:
    """Build a concept graph from one or more sources and print its coverage report."""
    from conceptalpha.data.loader import load_market, load_membership

    specs = [parse_source_spec(s) for s in source]
    names = unique_source_names([kind for kind, _ in specs])
    settings = KeywordSettings(top_k=keywords_top_k, min_support=keywords_min_support)
    market = load_market(provider, universe, start, end, fields=["close"])
    sources = [read_source(kind, path, name, settings, market.kind) for (kind, path), name in zip(specs, names)]
    members = load_membership(provider, universe, market.calendar, market.kind)
    members = market.universe if members is None else members
    graph = build_concept_graph(sources, members, has_bars_on(members, market.panel), min_members)
    graph.save(out)
    typer.echo(json.dumps(graph.report(), indent=2, ensure_ascii=False) if as_json else report_text(graph.report()))
    if not as_json:
        typer.echo(f"wrote {out}")


@app.command()
def show(
    file: Path = typer.Argument(..., help="A graph file written by `concepts build`."),
    instrument: str = typer.Option(None, "--instrument", help="Show this stock's concepts and their sizes."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print a graph's coverage report, or one instrument's concepts."""
    graph = ConceptGraph.load(file)
    if instrument is None:
        typer.echo(json.dumps(graph.report(), indent=2, ensure_ascii=False) if as_json else report_text(graph.report()))
        return
    table = graph.instrument_concepts(instrument)
    if as_json:
        typer.echo(table.to_json(orient="records", date_format="iso", force_ascii=False))
    elif table.empty:
        typer.echo(f"{instrument}: no concept in this graph")
    else:
        typer.echo(table.to_string(index=False))


def has_bars_on(universe: Universe, panel: BarPanel) -> np.ndarray:
    """bool [D, U]: instrument u of ``universe`` has a close on day t (False where the panel lacks it)."""
    cols = panel.instrument_positions(universe.instruments)
    has = np.zeros(universe.mask.shape, dtype=bool)
    has[:, cols >= 0] = np.isfinite(panel.field("close")[:, cols[cols >= 0]])
    return has
