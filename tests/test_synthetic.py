"""The synthetic market: determinism, stated statistics, structure, and an oracle with no look-ahead."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conceptalpha.data.symbols import normalize_symbols
from conceptalpha.data.synthetic import (
    LABEL_HORIZONS,
    SynthConfig,
    SynthShocks,
    daily_ic,
    draw_shocks,
    draw_structure,
    forward_label,
    generate,
    simulate,
    write_synthetic_market,
)
from conceptalpha.errors import UserError

SMALL = dict(n_stocks=60, n_years=1.5, n_industries=6, n_concepts=15, n_hidden=3)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small():
    return generate(SynthConfig(seed=3, **SMALL))


@pytest.fixture(scope="module")
def default_market():
    return generate(SynthConfig())


def _same_arrays(a, b) -> bool:
    fields_a, fields_b = a.market.panel.fields, b.market.panel.fields
    return all(np.array_equal(fields_a[k], fields_b[k], equal_nan=True) for k in fields_a)


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_market(small):
    again = generate(SynthConfig(seed=3, **SMALL))
    assert _same_arrays(small, again)
    assert np.array_equal(small.market.universe.mask, again.market.universe.mask)
    for label in LABEL_HORIZONS:
        assert np.array_equal(small.oracle(label), again.oracle(label), equal_nan=True)
    pd.testing.assert_frame_equal(small.concepts, again.concepts)
    pd.testing.assert_series_equal(small.market.benchmark, again.market.benchmark)


def test_different_seed_gives_different_market(small):
    other = generate(SynthConfig(seed=4, **SMALL))
    assert not _same_arrays(small, other)
    assert not small.concepts.equals(other.concepts)


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_written_files_are_byte_identical_for_the_same_seed(tmp_path):
    config = SynthConfig(seed=5, **SMALL)
    write_synthetic_market(tmp_path / "a", config)
    write_synthetic_market(tmp_path / "b", config)
    first, second = _tree_bytes(tmp_path / "a"), _tree_bytes(tmp_path / "b")
    assert first.keys() == second.keys()
    tables = {"concepts.csv", "true_concepts.csv", "hidden_groups.csv", "shares.csv", "oracle.parquet", "synth.json"}
    expected = tables | {"calendars/day.txt", "instruments/synth.txt", "instruments/all.txt"}
    assert expected <= set(first)
    assert first == second
    write_synthetic_market(tmp_path / "c", SynthConfig(seed=6, **SMALL))
    assert _tree_bytes(tmp_path / "c")["features/sh600000/close.day.bin"] != first["features/sh600000/close.day.bin"]


# ---------------------------------------------------------------- stated statistics


def test_default_market_has_the_stated_statistics(default_market):
    stats = default_market.statistics
    for label in LABEL_HORIZONS:
        assert 0.10 <= stats["oracle_ic"][label]["mean"] <= 0.20, (label, stats["oracle_ic"][label])
    assert stats["oracle_ic"]["t->t+1"]["mean"] > stats["oracle_ic"]["t+1->t+2"]["mean"]
    assert stats["excess_kurtosis_median"] > 1  # fat tails
    assert stats["abs_return_autocorr_median"] > 0.05  # volatility clustering
    assert stats["log_volume_autocorr_median"] > 0.3  # volume clustering
    assert abs(stats["return_autocorr_median"]) < 0.1  # noise dominates: returns themselves barely autocorrelate
    assert 0.01 < stats["daily_return_sd"] < 0.04
    assert stats["members_per_day"]["min"] >= 0.75 * 300
    assert 0.005 < stats["suspended_share"] < 0.06


def test_oracle_ic_measured_against_the_realised_label_matches_the_statistics(default_market):
    close = default_market.market.panel.field("close").astype(float)
    label = forward_label(close, "t+1->t+2")
    ic = daily_ic(default_market.oracle().astype(float), label, default_market.market.universe.mask)
    assert np.nanmean(ic) == pytest.approx(default_market.statistics["oracle_ic"]["t+1->t+2"]["mean"])
    assert np.isfinite(ic).sum() > 1400


def test_signal_is_learnable_by_pooling_concept_peers(default_market):
    """Published-peer features beat the stock's own history by a clear margin (see benchmarks/synth_pooling.py)."""
    spec = importlib.util.spec_from_file_location("synth_pooling", REPO / "benchmarks" / "synth_pooling.py")
    pooling = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pooling)
    sm = default_market
    panel, members = sm.market.panel, sm.market.universe.mask
    close = panel.field("close").astype(float)
    label = forward_label(close, "t+1->t+2")
    returns = pooling.demeaned_returns(close, panel.field("volume") > 0, members)
    links = pd.crosstab(sm.concepts["instrument"], sm.concepts["concept"]).reindex(panel.instruments, fill_value=0)
    split = len(close) // 2
    own = pooling.fit_and_score(pooling.trailing_means(returns), label, label, members, split)
    peers = pooling.peer_returns(returns, links.to_numpy(dtype=float))
    pooled = pooling.fit_and_score(pooling.trailing_means(peers), label, label, members, split)
    oracle = daily_ic(sm.oracle()[split:].astype(float), label[split:], members[split:])
    assert np.nanmean(pooled) > 1.3 * np.nanmean(own)
    assert np.nanmean(pooled) > 0.45 * np.nanmean(oracle)


# ---------------------------------------------------------------- structure


def test_published_links_miss_and_add_the_configured_shares():
    config = SynthConfig(seed=2, n_stocks=200, missing_link_share=0.2, spurious_link_share=0.25)
    structure = draw_structure(config)
    truth, published = structure.concept_links, structure.published_links
    n_true = truth.sum()
    kept = (truth & published).sum()
    assert (n_true - kept) / n_true == pytest.approx(0.2, abs=1 / n_true)
    assert (published & ~truth).sum() / published.sum() == pytest.approx(0.25, abs=2 / published.sum())


def test_concept_tables_have_the_real_long_format(small):
    for table in (small.concepts, small.true_concepts):
        assert list(table.columns) == ["instrument", "concept", "kind"]
        assert set(table["kind"]) == {"industry", "concept"}
        industries = table[table["kind"] == "industry"]
        assert industries["instrument"].is_unique and len(industries) == 60  # one industry per stock
    pd.testing.assert_frame_equal(
        small.concepts[small.concepts["kind"] == "industry"].reset_index(drop=True),
        small.true_concepts[small.true_concepts["kind"] == "industry"].reset_index(drop=True),
    )
    assert list(small.hidden_groups.columns) == ["instrument", "group"]
    assert not set(small.hidden_groups["group"]) & set(small.concepts["concept"])  # hidden groups are published nowhere


def test_symbols_are_canonical_a_share_codes(small):
    canon, ok = normalize_symbols(small.market.panel.instruments)
    assert ok.all()
    assert list(canon) == list(small.market.panel.instruments)
    assert len(set(canon)) == 60


def test_listings_delistings_and_suspensions_are_present():
    sm = generate(SynthConfig(seed=1, n_stocks=120, n_years=3, n_industries=8, n_concepts=20))
    close, volume = sm.market.panel.field("close"), sm.market.panel.field("volume")
    listed = np.isfinite(close)
    assert (~listed[0]).sum() > 0 and (~listed[-1]).sum() > 0  # late listings, delistings
    suspended = listed & (volume == 0)
    assert suspended.sum() > 0
    t, i = np.nonzero(suspended[1:])
    t += 1
    # A suspended day carries the previous close, with a flat bar.
    assert np.array_equal(close[t, i], close[t - 1, i])
    for name in ("open", "high", "low"):
        assert np.array_equal(sm.market.panel.field(name)[t, i], close[t, i])
    for arr in sm.market.panel.fields.values():
        assert np.isfinite(arr[listed]).all() and np.isnan(arr[~listed]).all()


def test_universe_only_where_bars_exist_with_seasoning_and_exits(small):
    mask = small.market.universe.mask
    listed = np.isfinite(small.market.panel.field("close"))
    assert not (mask & ~listed).any()
    assert (listed & ~mask).any()  # seasoning and index exits
    assert small.market.universe.name == "synth"


def test_bars_are_consistent(small):
    p = small.market.panel
    o, h, l, c, v = (p.field(k) for k in ("open", "high", "low", "close", "volume"))
    ok = np.isfinite(c)
    assert (h[ok] >= np.maximum(o[ok], c[ok])).all()
    assert (l[ok] <= np.minimum(o[ok], c[ok])).all()
    assert (l[ok] > 0).all() and (v[ok] >= 0).all()
    vwap = p.field("vwap")
    assert ((vwap[ok] >= l[ok] * (1 - 1e-6)) & (vwap[ok] <= h[ok] * (1 + 1e-6))).all()


def test_dividends_move_the_factor_and_market_cap_follows_raw_prices(small):
    p = small.market.panel
    factor = p.field("factor").astype(float)
    ok = np.isfinite(factor)
    assert (factor[ok] >= 1).all()
    steps = np.diff(factor, axis=0)
    assert (steps[np.isfinite(steps)] >= 0).all() and (steps[np.isfinite(steps)] > 0).any()
    raw = p.raw_close()
    cap = small.market.shares.to_numpy() * raw
    assert np.isfinite(cap[ok]).all() and (cap[ok] > 0).all()
    assert (small.market.shares.index == p.instruments).all()


def test_benchmark_is_a_cap_weighted_index_of_members(small):
    bench = small.market.benchmark
    assert bench.index.equals(small.market.calendar.dates)
    assert bench.iloc[0] == 3000 and np.isfinite(bench).all()
    raw = small.market.panel.raw_close().astype(float)
    cap = small.market.shares.to_numpy() * raw
    w = np.where(small.market.universe.mask[:-1] & np.isfinite(raw[1:]), cap[:-1], 0.0)
    change = np.nan_to_num(raw[1:] / raw[:-1] - 1)
    expected = (w * change).sum(axis=1) / w.sum(axis=1)
    realised = bench.to_numpy(dtype=float)[1:] / bench.to_numpy(dtype=float)[:-1] - 1
    np.testing.assert_allclose(realised, expected, atol=2e-6)


# ---------------------------------------------------------------- oracle


def test_oracle_is_unchanged_when_the_future_changes():
    config = SynthConfig(seed=7, **SMALL)
    structure = draw_structure(config)
    shocks = draw_shocks(config, structure)
    t0 = 150
    cut = config.burn_in_days + t0 + 1  # rows after day t0
    rng = np.random.default_rng(99)
    changed = SynthShocks(**{name: _resample_after(value, cut, rng) for name, value in vars(shocks).items()})
    base, alt = simulate(config, structure, shocks), simulate(config, structure, changed)
    for name, arr in base.market.panel.fields.items():
        assert np.array_equal(arr[: t0 + 1], alt.market.panel.fields[name][: t0 + 1], equal_nan=True), name
        if name != "factor":  # dividends are structure, not shocks
            assert not np.array_equal(arr[t0 + 1 :], alt.market.panel.fields[name][t0 + 1 :], equal_nan=True), name
    for label in LABEL_HORIZONS:
        assert np.array_equal(base.oracle(label)[: t0 + 1], alt.oracle(label)[: t0 + 1], equal_nan=True)
    label_base = forward_label(base.market.panel.field("close").astype(float), "t+1->t+2")
    label_alt = forward_label(alt.market.panel.field("close").astype(float), "t+1->t+2")
    assert not np.allclose(label_base[t0], label_alt[t0], equal_nan=True)  # the label itself did change


def _resample_after(values: np.ndarray, cut: int, rng: np.random.Generator) -> np.ndarray:
    out = values.copy()
    out[cut:] = rng.permutation(values[cut:].reshape(-1)).reshape(values[cut:].shape)
    return out


def test_oracle_is_the_expectation_of_the_label_over_future_draws():
    """Fix the past and redraw the future: the label averaged over a future and its
    mirror image (every future shock negated) equals the oracle.

    Every shock law is symmetric and, given the past, label − oracle is an odd
    function of the future shocks (volatilities depend on squared shocks only), so
    the antithetic mean is exactly the conditional expectation, not just close to it.
    """
    config = SynthConfig(seed=11, n_stocks=40, n_years=0.2, burn_in_days=60, n_industries=4, n_concepts=8, n_hidden=2)
    structure = draw_structure(config)
    past = draw_shocks(config, structure)
    t0 = 30
    cut = config.burn_in_days + t0 + 1
    base = simulate(config, structure, past)
    oracles = {label: base.oracle(label) for label in LABEL_HORIZONS}
    for k in range(4):
        future = draw_shocks(config.model_copy(update={"seed": 1000 + k}), structure)
        labels = []
        for sign in (1.0, -1.0):
            spliced = SynthShocks(
                **{n: np.concatenate([v[:cut], sign * getattr(future, n)[cut:]]) for n, v in vars(past).items()}
            )
            close = simulate(config, structure, spliced).market.panel.field("close").astype(float)
            labels.append({label: forward_label(close, label)[t0] for label in LABEL_HORIZONS})
        for label, oracle in oracles.items():
            defined = np.isfinite(oracle[t0])
            assert defined.sum() > 20
            one, mirror = labels[0][label][defined], labels[1][label][defined]
            np.testing.assert_allclose((one + mirror) / 2, oracle[t0][defined], atol=2e-5, err_msg=label)
            assert np.abs(one - oracle[t0][defined]).mean() > 1e-3  # a single future is far from its expectation


def test_oracle_parts_add_up_and_follow_the_structure(small):
    for label in LABEL_HORIZONS:
        parts = small.oracle_parts[label]
        assert set(parts) == {"market", "industry", "concept", "hidden", "individual"}
        np.testing.assert_allclose(sum(parts.values()), small.oracle(label), atol=1e-7)
    ungrouped = ~np.isin(small.market.panel.instruments, small.hidden_groups["instrument"])
    hidden = small.oracle_parts["t+1->t+2"]["hidden"]
    assert ungrouped.any() and np.nanmax(np.abs(hidden[:, ungrouped])) == 0
    assert np.nanmax(np.abs(hidden[:, ~ungrouped])) > 0
    shares = small.statistics["oracle_variance_share"]
    assert sum(shares.values()) == pytest.approx(1)
    assert shares["industry"] + shares["concept"] > 0.5  # published concepts carry most of the signal


def test_unknown_label_is_a_user_error(small):
    with pytest.raises(UserError, match="label protocol"):
        small.oracle("t->t+5")


# ---------------------------------------------------------------- configuration and writing


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"n_stocks": 5}, "n_stocks"),
        ({"n_years": 0}, "n_years"),
        ({"colour": 1}, "colour"),
        ({"factor_feedback": 0.9}, "config"),
    ],
)
def test_bad_options_are_user_errors_naming_the_field(options, field):
    with pytest.raises(UserError, match=field):
        SynthConfig(**options)


def test_written_market_reads_back_like_real_data(tmp_path):
    from conceptalpha.data.qlib import load_qlib

    config = SynthConfig(seed=8, **SMALL)
    summary = write_synthetic_market(tmp_path, config)
    sm = generate(config)
    market = load_qlib(tmp_path, "synth")
    positions = sm.market.panel.instrument_positions(market.panel.instruments)
    for name in ("close", "volume", "factor"):
        np.testing.assert_array_equal(market.panel.field(name), sm.market.panel.field(name)[:, positions])
    assert np.array_equal(market.universe.mask, sm.market.universe.mask[:, positions])
    np.testing.assert_allclose(market.benchmark.to_numpy(), sm.market.benchmark.to_numpy(), rtol=1e-6)

    concepts = pd.read_csv(summary["paths"]["concepts"])
    pd.testing.assert_frame_equal(concepts, sm.concepts)
    shares = pd.read_csv(summary["paths"]["shares"])
    assert list(shares.columns) == ["instrument", "shares"]
    oracle = pd.read_parquet(summary["paths"]["oracle"])
    assert list(oracle.columns) == ["datetime", "instrument", "oracle_t+1->t+2", "oracle_t->t+1"]
    row = oracle.dropna().iloc[100]
    t = sm.market.calendar.index_of(row["datetime"])
    i = int(sm.market.panel.instrument_positions([row["instrument"]])[0])
    assert row["oracle_t+1->t+2"] == sm.oracle("t+1->t+2")[t, i]
    assert summary["statistics"]["oracle_ic"]["t+1->t+2"]["days"] > 0
