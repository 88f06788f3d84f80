"""``conceptalpha data ...`` commands: summarise market data, write the synthetic market."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from conceptalpha.data.loader import load_market, load_membership
from conceptalpha.data.summary import format_summary, summarize

app = typer.Typer(no_args_is_help=True)


@app.command()
def summary(
    provider: Path = typer.Option(..., "--provider", help="Qlib provider directory, or a .csv/.parquet bar table."),
    universe: str = typer.Option("csi300", "--universe", help="Instruments file name (Qlib) or intervals file / 'all' (table)."),
    start: str | None = typer.Option(None, "--start", help="First date (YYYY-MM-DD)."),
    end: str | None = typer.Option(None, "--end", help="Last date (YYYY-MM-DD)."),
    shares: list[Path] = typer.Option([], "--shares", help="Share-count table (repeatable; the first that knows a stock wins)."),
    market_kind: str = typer.Option("auto", "--market", help="cn (A-shares), generic (any tickers) or auto (cn when every code is an A-share code)."),
    benchmark: str | None = typer.Option(None, "--benchmark", help="Benchmark instrument, e.g. SPY (default: SH000300 for cn, none for generic)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Market, calendar, members per day, members without bars, missing and suspended shares, market-cap proxy use."""
    from conceptalpha.data.qlib import MARKET_DEFAULT

    market = load_market(provider, universe, start, end, shares=shares, market=market_kind, benchmark=benchmark or MARKET_DEFAULT)
    figures = summarize(market, load_membership(provider, universe, market.calendar, market.kind))
    typer.echo(json.dumps(figures, indent=2, ensure_ascii=False) if as_json else format_summary(figures))


@app.command()
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the synthetic market into."),
    seed: int = typer.Option(0, "--seed"),
    stocks: int = typer.Option(300, "--stocks", min=2),
    years: int = typer.Option(6, "--years", min=1),
    market: str = typer.Option("cn", "--market", help="cn: A-share codes and concept boards; us: US-style tickers, an industry table, no benchmark."),
) -> None:
    """Write a synthetic market with known structure (Qlib layout + concepts + shares + oracle)."""
    from conceptalpha.data.synthetic import SynthConfig, write_synthetic_market

    result = write_synthetic_market(out, SynthConfig(seed=seed, n_stocks=stocks, n_years=years, market=market))
    typer.echo(json.dumps(result, indent=2, ensure_ascii=False, default=str))
