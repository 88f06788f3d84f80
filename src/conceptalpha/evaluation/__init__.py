"""Stage 6 — evaluation: factor metrics, A-share backtest, reports, exports."""
