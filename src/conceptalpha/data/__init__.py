"""Stage 1 — market data: sources, calendar, universe, symbols, market cap, synthetic market."""

from conceptalpha.data.calendar import Calendar
from conceptalpha.data.derived import largest_members
from conceptalpha.data.loader import load_market, load_membership
from conceptalpha.data.market_cap import MarketCap, market_cap, merge_shares, read_shares
from conceptalpha.data.panel import BarPanel, Market
from conceptalpha.data.qlib import load_qlib, write_qlib
from conceptalpha.data.summary import format_summary, summarize
from conceptalpha.data.table import load_table
from conceptalpha.data.universe import Universe

__all__ = [
    "BarPanel",
    "Calendar",
    "Market",
    "MarketCap",
    "Universe",
    "format_summary",
    "largest_members",
    "load_market",
    "load_membership",
    "load_qlib",
    "load_table",
    "market_cap",
    "merge_shares",
    "read_shares",
    "summarize",
    "write_qlib",
]
