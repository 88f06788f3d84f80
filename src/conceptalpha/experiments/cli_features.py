"""``conceptalpha features ...`` commands."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer

from conceptalpha.data.loader import load_market
from conceptalpha.errors import UserError
from conceptalpha.features.alpha import FEATURE_SETS, build_feature_table, check_feature_set
from conceptalpha.io import atomic_path

app = typer.Typer(no_args_is_help=True)


@app.command("build")
def build(
    provider: Path = typer.Option(..., help="Qlib-layout directory, or a long CSV/Parquet bar table."),
    universe: str = typer.Option("csi300", help="Universe: instruments/<name>.txt of a Qlib folder (or an intervals file for a table)."),
    features: str = typer.Option("alpha360", help=f"Feature set: {' | '.join(FEATURE_SETS)}."),
    start: str = typer.Option(None, help="First day of the table (YYYY-MM-DD); default: the calendar's first."),
    end: str = typer.Option(None, help="Last day of the table (YYYY-MM-DD); default: the calendar's last."),
    out: Path = typer.Option(..., help="Output .parquet file, indexed (datetime, instrument)."),
) -> None:
    """Write the unprocessed Alpha360/Alpha158 table (Qlib's column names) for the universe's members."""
    check_feature_set(features)
    if out.suffix != ".parquet":
        raise UserError(f"--out {out}: expected a .parquet file name")
    # History before --start feeds the first rows' windows (Alpha158 reads 61 days back).
    market = load_market(provider, universe, start=None, end=None)
    days = market.calendar.window(start, end)
    table = build_feature_table(market, features, market.calendar.dates[days.start], market.calendar.dates[days.stop - 1])
    with atomic_path(out) as tmp:
        table.to_parquet(tmp)
    dates = table.index.get_level_values("datetime")
    typer.echo(
        f"wrote {out}: {len(table):,} rows × {table.shape[1]} {features} columns, "
        f"{dates.nunique()} days {pd.Timestamp(dates.min()).date()}..{pd.Timestamp(dates.max()).date()}, "
        f"{table.index.get_level_values('instrument').nunique()} instruments"
    )
