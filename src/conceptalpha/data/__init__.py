"""Stage 1 — market data: sources, calendar, universe, symbols, market cap, synthetic market."""

from conceptalpha.data.calendar import Calendar
from conceptalpha.data.panel import BarPanel, Market
from conceptalpha.data.universe import Universe

__all__ = ["BarPanel", "Calendar", "Market", "Universe"]
