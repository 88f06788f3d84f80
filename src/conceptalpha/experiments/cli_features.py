"""``conceptalpha features ...`` commands."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import typer

from conceptalpha.data.qlib import load_qlib, read_calendar
from conceptalpha.errors import UserError
from conceptalpha.features.alpha import FEATURE_SETS, build_feature_table, check_feature_set
from conceptalpha.io import atomic_path

app = typer.Typer(no_args_is_help=True)


@app.command("build")
def build(
    provider: Path = typer.Option(..., help="Qlib-layout data directory (calendars/, instruments/, features/)."),
    universe: str = typer.Option("csi300", help="Universe: instruments/<name>.txt of the provider."),
    features: str = typer.Option("alpha360", help=f"Feature set: {' | '.join(FEATURE_SETS)}."),
    start: str = typer.Option(None, help="First day of the table (YYYY-MM-DD); default: the calendar's first."),
    end: str = typer.Option(None, help="Last day of the table (YYYY-MM-DD); default: the calendar's last."),
    out: Path = typer.Option(..., help="Output .parquet file, indexed (datetime, instrument)."),
) -> None:
    """Write the unprocessed Alpha360/Alpha158 table (Qlib's column names) for the universe's members."""
    check_feature_set(features)
    if out.suffix != ".parquet":
        raise UserError(f"--out {out}: expected a .parquet file name")
    calendar = read_calendar(provider / "calendars" / "day.txt")
    days = calendar.window(start, end)
    # All history from the calendar's first day: rolling results (pandas' running sums) then do
    # not depend on the requested start, and equal the dataset's and Qlib's full-range values.
    market = load_qlib(provider, universe, start=None, end=calendar.dates[days.stop - 1])
    table = build_feature_table(market, features, calendar.dates[days.start], calendar.dates[days.stop - 1])
    with atomic_path(out) as tmp:
        table.to_parquet(tmp)
    dates = table.index.get_level_values("datetime")
    typer.echo(
        f"wrote {out}: {len(table):,} rows × {table.shape[1]} {features} columns, "
        f"{dates.nunique()} days {pd.Timestamp(dates.min()).date()}..{pd.Timestamp(dates.max()).date()}, "
        f"{table.index.get_level_values('instrument').nunique()} instruments"
    )
