"""Diagnostics on tiny hand-checkable frames, and ``conceptalpha diagnose`` on a tiny synthetic run."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conceptalpha.data.calendar import Calendar
from conceptalpha.data.panel import BarPanel, Market
from conceptalpha.data.universe import Universe
from conceptalpha.evaluation import diagnostics as dx
from conceptalpha.evaluation.metrics import daily_ic

DAY = pd.Timestamp("2020-01-02")


def _preds(model, seed, scores: dict, labels: dict | None = None, day=DAY) -> pd.DataFrame:
    labels = labels or {k: 0.01 * i for i, k in enumerate(scores)}
    return pd.DataFrame(
        {"datetime": day, "instrument": list(scores), "model": model, "seed": seed, "segment": "test",
         "score": list(scores.values()), "label": [labels[k] for k in scores]}
    )


# ---------------------------------------------------------------- ensemble


def test_seed_ensemble_averages_daily_z_scores_and_skips_missing_stocks():
    seed0 = _preds("M", 0, {"A": 1.0, "B": 2.0, "C": 3.0})  # z = −1, 0, 1
    seed1 = _preds("M", 1, {"A": -1.0, "B": 1.0, "C": -1.0, "D": 1.0})  # z = ∓√3/2
    single = _preds("Solo", 0, {"A": 5.0, "B": 1.0})
    out = dx.seed_ensemble(pd.concat([seed0, seed1, single], ignore_index=True)).set_index("instrument")
    half = np.sqrt(3) / 2
    expected = {"A": (-1 - half) / 2, "B": (0 + half) / 2, "C": (1 - half) / 2, "D": half}
    np.testing.assert_allclose(out.loc[list(expected), "score"], list(expected.values()))
    assert set(out["model"]) == {"M ensemble"} and set(out["seed"]) == {dx.ENSEMBLE_SEED}
    assert out.loc["D", "label"] == pytest.approx(0.03) and set(out["segment"]) == {"test"}


def test_seed_ensemble_ignores_a_constant_seed_on_that_day():
    flat = _preds("M", 0, {"A": 1.0, "B": 1.0, "C": 1.0})
    other = _preds("M", 1, {"A": 0.0, "B": 1.0, "C": 2.0})
    out = dx.seed_ensemble(pd.concat([flat, other], ignore_index=True))
    np.testing.assert_allclose(out["score"], [-1.0, 0.0, 1.0])


# ---------------------------------------------------------------- IC


def test_rank_label_ic_is_pearson_with_the_label_ranks():
    frame = _preds("M", 0, {"A": 1.0, "B": 2.0, "C": 3.0, "D": 10.0}, {"A": 0.1, "B": 0.2, "C": 0.05, "D": 0.4})
    rank_label = daily_ic(frame, "rank_label").iloc[0]
    assert rank_label == pytest.approx(np.corrcoef([1, 2, 3, 10], [2, 3, 1, 4])[0, 1])
    assert rank_label != pytest.approx(daily_ic(frame, "pearson").iloc[0])
    as_ranks = frame.assign(score=[1.0, 2.0, 3.0, 4.0])  # a rank score: the rank-label IC is the Spearman
    assert daily_ic(as_ranks, "rank_label").iloc[0] == pytest.approx(daily_ic(as_ranks, "spearman").iloc[0])


def test_ic_by_period_gives_mean_and_std_over_seeds_per_year():
    days = [pd.Timestamp("2019-12-31"), pd.Timestamp("2020-01-02")]
    labels = {"A": 0.1, "B": 0.2, "C": 0.3}
    perfect = [_preds("M", 0, {"A": 1.0, "B": 2.0, "C": 3.0}, labels, d) for d in days]
    reversed_ = [_preds("M", 1, {"A": 3.0, "B": 2.0, "C": 1.0}, labels, days[0]), _preds("M", 1, {"A": 1.0, "B": 2.0, "C": 3.0}, labels, days[1])]
    table = dx.ic_by_period(pd.concat(perfect + reversed_, ignore_index=True)).set_index("period")
    assert table.loc["2019", "IC_mean"] == pytest.approx(0.0) and table.loc["2019", "IC_std"] == pytest.approx(np.sqrt(2))
    assert table.loc["2020", "RankIC_mean"] == pytest.approx(1.0) and table.loc["all", "IC_mean"] == pytest.approx(0.5)
    assert (table["n_seeds"] == 2).all()


def test_overlapping_rolling_windows_stay_apart_in_ic_and_ensemble():
    """A day scored by two rolling windows (validation longer than the step) counts once per window."""
    labels = {"A": 0.1, "B": 0.2, "C": 0.3}
    rows = [
        _preds("M", seed, scores, labels).assign(window=window, segment="valid")
        for window, scores in ((0, {"A": 1.0, "B": 2.0, "C": 3.0}), (1, {"A": 3.0, "B": 2.0, "C": 1.0}))
        for seed in (0, 1)
    ]
    predictions = pd.concat(rows, ignore_index=True)
    table = dx.ic_by_period(predictions).set_index("period")
    assert table.loc["all", "IC_mean"] == pytest.approx(0.0)  # +1 from window 0, −1 from window 1
    ensemble = dx.seed_ensemble(predictions).set_index(["window", "instrument"])["score"]
    np.testing.assert_allclose(ensemble.loc[0].to_numpy(), [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(ensemble.loc[1].to_numpy(), [1.0, 0.0, -1.0])


# ---------------------------------------------------------------- HIST parts


def _explanations(p, h, i, labels, day=DAY) -> tuple[pd.DataFrame, pd.DataFrame]:
    names = [f"S{k}" for k in range(len(p))]
    ex = pd.DataFrame({"datetime": day, "instrument": names, "model": "HIST", "seed": 0,
                       "part_predefined": p, "part_hidden": h, "part_individual": i})
    ex["score"] = ex["part_predefined"] + ex["part_hidden"] + ex["part_individual"] + 0.5
    preds = ex[["datetime", "instrument", "model", "seed", "score"]].assign(label=labels, segment="test")
    return ex, preds


def test_uncorrelated_parts_split_the_variance_without_covariance():
    p, h, i = np.array([1, -1, 1, -1.0]), 2 * np.array([1, 1, -1, -1.0]), 3 * np.array([1, -1, -1, 1.0])  # orthogonal, centred
    ex, _ = _explanations(p, h, i, [0.0] * 4)
    day = dx.daily_part_variance(ex).iloc[0]
    assert day["var_score"] == pytest.approx(56 / 3)
    for part, weight in (("predefined", 1), ("hidden", 4), ("individual", 9)):
        assert day[f"var_share_{part}"] == pytest.approx(weight / 14)
        assert day[f"sum_share_{part}"] == pytest.approx(weight / 14)
    assert day[["cov_share_predefined_hidden", "cov_share_predefined_individual", "cov_share_hidden_individual"]].abs().max() < 1e-12
    assert day["concept_var_share"] == pytest.approx(5 / 14)
    assert day["std_hidden"] == pytest.approx(np.sqrt(16 / 3))


def test_correlated_parts_var_and_cov_shares_sum_to_one():
    rng = np.random.default_rng(0)
    p = rng.normal(size=20)
    ex, _ = _explanations(p, 0.5 * p + rng.normal(size=20), -p + rng.normal(size=20), rng.normal(size=20))
    day = dx.daily_part_variance(ex).iloc[0]
    shares = day.filter(like="var_share_").sum() + day.filter(like="cov_share_").sum()
    assert shares == pytest.approx(1.0)
    total = ex["part_predefined"] + ex["part_hidden"] + ex["part_individual"]
    assert day["var_score"] == pytest.approx(total.var(ddof=1))
    assert day["concept_var_share"] == pytest.approx((ex["part_predefined"] + ex["part_hidden"]).var() / total.var())


def test_each_part_has_its_own_ic_against_the_raw_label():
    labels = np.array([0.01, -0.02, 0.03, 0.0, 0.05])
    ex, preds = _explanations(labels * 2, -labels, np.array([1, 2, 3, 4, 5.0]), labels)
    summary = dx.hist_part_summary(ex, preds)["HIST"]
    assert summary["all"]["ic_predefined"] == pytest.approx(1.0)
    assert summary["all"]["ic_hidden"] == pytest.approx(-1.0)
    assert summary["all"]["rank_ic_individual"] == pytest.approx(pd.Series(labels).corr(pd.Series([1, 2, 3, 4, 5.0]), method="spearman"))
    assert set(summary["by_year"]) == {"2020"}


# ---------------------------------------------------------------- attention


def test_attention_top5_share_and_mean_entropy():
    top = ["a", "a", "a", "b", "c", "d", "e", "f", "g", "h"]
    ex = pd.DataFrame({"datetime": DAY, "instrument": [f"S{k}" for k in range(10)], "model": "HIST", "seed": 0,
                       "part_predefined": 0.0, "part_hidden": 0.0, "part_individual": 0.0, "top_concept": top,
                       "attention_entropy_norm": [1.0, 0.0] + [np.nan] * 8})
    day = dx.daily_attention(ex).iloc[0]
    assert day["top5_share"] == pytest.approx(0.7)  # a (3) and four of the single ones
    assert day["distinct_top"] == 8 and day["attention_entropy_norm"] == pytest.approx(0.5)
    everyone_same = ex.assign(top_concept="a")
    assert dx.daily_attention(everyone_same).iloc[0]["top5_share"] == 1.0


# ---------------------------------------------------------------- strategies


def test_break_even_cost_by_hand():
    # 10% a year before costs, half the book traded a day: 0.5 × 238 = 119 units of value a year.
    assert dx.break_even_cost(0.10, 0.5, 238) == pytest.approx(0.10 / 119)
    assert dx.break_even_cost(-0.02, 0.5, 238) < 0
    assert np.isnan(dx.break_even_cost(0.1, 0.0))


def _market(days: int = 160, n: int = 60) -> tuple[Market, pd.DataFrame]:
    """A random market and a score with some foresight of the next-but-one return."""
    rng = np.random.default_rng(3)
    dates = pd.bdate_range("2019-01-02", periods=days)
    names = np.array([f"SH60{i:04d}" for i in range(n)], dtype=object)
    close = 10 * np.cumprod(1 + rng.normal(0.0, 0.02, size=(days, n)), axis=0)
    calendar = Calendar(dates)
    market = Market(
        BarPanel(calendar, names, {"close": close.astype(np.float32), "volume": np.ones((days, n), np.float32)}),
        Universe.everything("u", calendar, names), names,
        benchmark=pd.Series(3000 * np.cumprod(1 + rng.normal(0.0, 0.01, days)), index=dates),
    )
    label = np.zeros((days, n))
    label[:-2] = close[2:] / close[1:-1] - 1
    score = label + rng.normal(0, 0.03, size=(days, n))
    scores = pd.DataFrame({"datetime": np.repeat(dates[:-2], n), "instrument": np.tile(names, days - 2), "score": score[:-2].ravel()})
    return market, scores


def test_at_the_break_even_cost_rate_the_excess_return_with_costs_is_about_zero():
    market, scores = _market()
    free = dx.strategy_summary(scores, market, "t+1->t+2", {"buy_cost": 0.0, "sell_cost": 0.0, "min_cost": 0.0})
    for name, figures in free.items():
        assert figures["excess_annual_return_no_cost"] > 0.2, name  # the score sees the future: a clear edge
        assert figures["excess_annual_return_cost"] == pytest.approx(figures["excess_annual_return_no_cost"])
        rate = figures["break_even_cost"]
        at_rate = dx.strategy_summary(scores, market, "t+1->t+2", {"buy_cost": rate, "sell_cost": rate, "min_cost": 0.0})[name]
        assert abs(at_rate["excess_annual_return_cost"]) < 0.03 * figures["excess_annual_return_no_cost"], name
        assert at_rate["cost_rate_paid"] == pytest.approx(rate)
    assert free["topk_dropout_50_5"]["annual_turnover"] < free["top30_daily"]["annual_turnover"]


def test_a_lag_set_in_the_settings_overrides_the_labels():
    market, scores = _market()
    costs = {"buy_cost": 0.0, "sell_cost": 0.0, "min_cost": 0.0}
    by_label = dx.strategy_summary(scores, market, "t+1->t+2", costs)["top30_daily"]
    late = dx.strategy_summary(scores, market, "t+1->t+2", {**costs, "lag": 2})["top30_daily"]
    assert late["excess_annual_return_no_cost"] < by_label["excess_annual_return_no_cost"] / 3, (late, by_label)  # a day late, the edge is gone


# ---------------------------------------------------------------- the command on a real (tiny) run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from conceptalpha.experiments.config import validate_config
    from conceptalpha.experiments.orchestrate import run_experiment

    raw = {
        "name": "tiny_diag",
        "data": {"provider": "synthetic", "synthetic": {"seed": 5, "n_stocks": 40, "n_years": 2}},
        "concepts": {"min_members": 2},
        "segments": {"train": ["2010-01-01", "2010-09-30"], "valid": ["2010-10-01", "2010-12-31"], "test": ["2011-01-01", "2011-04-30"]},
        "models": [{"name": "HIST", "params": {"hidden_size": 8, "num_layers": 1}}, {"name": "LightGBM", "params": {"num_boost_round": 20}}],
        "trainer": {"max_epochs": 1, "patience": 1, "lr": 0.001, "show_progress": False},
        "backtest": {"topk": 10},
        "seeds": [0, 1],
    }
    out = tmp_path_factory.mktemp("diag_run")
    run_experiment(validate_config(raw), out_dir=out, progress=False)
    return out


def test_diagnose_command_on_a_finished_run(tiny_run, monkeypatch, capsys):
    from cli_helpers import run

    code, out, err = run(["diagnose", tiny_run], monkeypatch, capsys)
    assert code == 0, err
    diag = json.loads((tiny_run / "diagnostics.json").read_text())
    models = {row["model"] for row in diag["ic"]}
    assert models == {"HIST", "LightGBM", "HIST ensemble", "LightGBM ensemble"}
    assert {row["period"] for row in diag["ic"]} == {"all", "2010", "2011"}
    parts = diag["hist_parts"]["HIST"]["all"]
    shares = sum(v for k, v in parts.items() if k.startswith(("var_share_", "cov_share_")))
    assert shares == pytest.approx(1.0)
    assert 0 < diag["attention"]["HIST"]["all"]["attention_entropy_norm"] <= 1
    for model in ("HIST", "LightGBM ensemble"):
        for strategy in dx.STRATEGIES:
            figures = diag["strategies"][model][strategy]
            assert figures["annual_turnover"]["mean"] > 0
            expected = dx.break_even_cost(figures["excess_annual_return_no_cost"]["mean"], figures["annual_turnover"]["mean"] / 238, 238)
            if model.endswith("ensemble"):  # one series: the break-even is exactly that of its own figures
                assert figures["break_even_cost"]["mean"] == pytest.approx(expected)
    page = (tiny_run / "diagnostics.md").read_text()
    assert "HIST parts" in page and "topk_dropout_50_5" in page and "LightGBM ensemble" in page
    assert "diagnostics.md" in out


def test_diagnose_without_backtests_needs_no_market(tiny_run, monkeypatch, capsys):
    from cli_helpers import run

    (tiny_run / "config.yaml").rename(tiny_run / "config.yaml.away")  # nothing to rebuild the market from
    try:
        code, _, err = run(["diagnose", tiny_run, "--no-backtest"], monkeypatch, capsys)
        assert code == 0, err
        diag = json.loads((tiny_run / "diagnostics.json").read_text())
        assert "strategies" not in diag and "HIST" in diag["hist_parts"]
        code, _, err = run(["diagnose", tiny_run], monkeypatch, capsys)
        assert code == 2 and "config.yaml not found" in err
    finally:
        (tiny_run / "config.yaml.away").rename(tiny_run / "config.yaml")


def test_diagnose_on_a_dir_without_predictions_is_one_line(tmp_path, monkeypatch, capsys):
    from cli_helpers import run

    code, _, err = run(["diagnose", tmp_path], monkeypatch, capsys)
    assert code == 2 and "predictions.parquet not found" in err and "Traceback" not in err


def test_benchmark_configs_follow_the_common_protocol():
    from pathlib import Path

    from conceptalpha.experiments.config import load_config
    from conceptalpha.experiments.jobs import windows

    configs = Path(__file__).parents[1] / "configs"
    bench = load_config(configs / "csi300_benchmark.yaml")
    assert bench.segments.model_dump() == {"train": ("2010-01-01", "2014-12-31"), "valid": ("2015-01-01", "2016-12-31"), "test": ("2017-01-01", "2020-12-31")}
    assert bench.features.label == "t+1->t+2" and bench.features.feature_set == "alpha360" and bench.seeds == [0, 1, 2, 3, 4]
    assert [(m.name, m.features) for m in bench.models] == [("HIST", None), ("GRU", None), ("LightGBM", "alpha158")]
    assert (bench.trainer.lr, bench.trainer.max_epochs, bench.trainer.loss) == (1e-3, 8, "ic") and bench.trainer.select_on == "raw" and bench.workers == 2
    rolling = load_config(configs / "csi300_benchmark_rolling.yaml")
    first = windows(rolling)[0]
    assert (first["train"], first["valid"], first["test"]) == (bench.segments.train, bench.segments.valid, ("2017-01-01", "2017-12-31"))
    assert [w["test"][0] for w in windows(rolling)] == ["2017-01-01", "2018-01-01", "2019-01-01", "2020-01-01"]
    assert [rolling.models[0], rolling.models[1]] == [bench.models[0], bench.models[2]] and rolling.trainer == bench.trainer
    assert bench.models[2].label_norm == "rank" and bench.features.label_norm == "zscore"
    assert load_config(configs / "csi300_paper.yaml").features.label == "t->t+1"
    common, own = (load_config(configs / f"{name}.yaml") for name in ("csi300_master_common", "csi300_master"))
    for master in (common, own):
        assert master.segments == bench.segments and master.seeds == bench.seeds and master.backtest == bench.backtest
        assert (master.trainer.max_epochs, master.trainer.loss, master.trainer.select_on) == (8, "ic", "raw")
    assert (common.features.label, common.features.label_norm) == (bench.features.label, bench.features.label_norm)
    assert common.features.model_copy(update={"label": "t+1->t+5"}) == own.features  # only the label differs...
    assert common.trainer.model_copy(update={"drop_extreme_labels": 0.05}) == own.trainer  # ...and label dropping
    assert common.models == own.models
