"""Stage 6 — evaluation: factor metrics, A-share backtest, reports, exports.

- :mod:`~conceptalpha.evaluation.metrics`: IC / RankIC / ICIR, precision@k,
  quantile returns, turnover, rank autocorrelation (pure functions over a
  (datetime, instrument, score, label) table).
- :mod:`~conceptalpha.evaluation.backtest`: daily long-only top-k / TopkDropout
  backtest with costs, limit moves and suspensions.
- :mod:`~conceptalpha.evaluation.market_rules`: trading rules per market
  (A-share price limits by board and date; generic markets without limits).
- :mod:`~conceptalpha.evaluation.summary`: a run's metrics computed once (per seed,
  mean ± std over seeds, oracle) and its tables.
- :mod:`~conceptalpha.evaluation.report`: the self-contained HTML report.
- :mod:`~conceptalpha.evaluation.diagnostics`: seed ensembles, IC by year, HIST's
  part shares and attention entropy, both strategies with break-even costs.
- :mod:`~conceptalpha.evaluation.export`: Qlib ``pred.pkl`` and alphalens factor.
"""

from conceptalpha.evaluation.backtest import BacktestConfig, BacktestResult, backtest, lag_for_label, summarize_backtest
from conceptalpha.evaluation.export import export_qlib_pred, to_alphalens_factor
from conceptalpha.evaluation.market_rules import CnRules, GenericRules, MarketRules, rules_for
from conceptalpha.evaluation.metrics import daily_ic, factor_report, factor_summary, ic_summary
from conceptalpha.evaluation.report import comparison_table, render_report
from conceptalpha.evaluation.summary import results_table, summarise_run

__all__ = [
    "BacktestConfig",
    "BacktestResult",
    "CnRules",
    "GenericRules",
    "MarketRules",
    "backtest",
    "comparison_table",
    "daily_ic",
    "export_qlib_pred",
    "factor_report",
    "factor_summary",
    "ic_summary",
    "lag_for_label",
    "render_report",
    "rules_for",
    "results_table",
    "summarise_run",
    "summarize_backtest",
    "to_alphalens_factor",
]
