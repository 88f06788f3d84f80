r"""The synthetic market: a whole A-share-like (or US-like) market whose structure is known.

Two styles (``SynthConfig.market``): ``cn`` — A-share codes (SH600000,
SZ000001, ...), a Chinese holiday calendar, published industries and concept
boards, the cap-weighted index as benchmark ``SH000300``; ``us`` — US-style
tickers (AAB, ABC.B, ...), a US holiday calendar, only the industry table
published (the concept factors still move prices, unpublished), no benchmark
series, and the ``generic`` market's rules (no price limits). The return model
below is the same for both.

Notation: stock ``i`` (N of them), trading day ``t`` (D of them), shared factors
``k`` = industries ∪ concepts ∪ hidden groups (K of them). The generator runs
``burn_in_days`` unobserved days before the calendar so every recursion starts
from its stationary regime.

Return of stock i on day t (close_{t-1} → close_t, dividends reinvested)::

    r_{i,t} = β_i m_t + Σ_k L_{ik} f_{k,t} + a_{i,t} + u_{i,t}

- Market: m_t = μ_m + s_t z_t, z like ε below, GARCH(1,1) s²_{t+1} = ω + (α z_t² + β_g) s²_t.
  λ_t = s_t / σ_m is a market-wide volatility regime that also scales the
  factor shocks and the idiosyncratic noise (volatility clusters market-wide).
- Shared factors, momentum fed by their own realised returns::

      f_{k,t}   = μ_{k,t} + σ_f λ_t η_{k,t},      η ~ N(0, 1) clipped at ±noise_clip
      μ_{k,t+1} = φ μ_{k,t} + κ f_{k,t}     ⇔     μ_{k,t+1} = ρ μ_{k,t} + κ σ_f λ_t η_{k,t},  ρ = φ + κ

  μ_{k,t+1} is known after close t: κ times an exponentially weighted sum (decay
  φ) of the factor's past returns. A factor's return is seen only through its
  members' noisy returns: pooling many members reveals μ, one stock's own history
  is too noisy, and its own recent return mixes factor momentum with the
  reversal of its individual part (below). This is why a concept-aware model
  can beat a per-stock one; the mechanism mirrors real markets (industry
  momentum with short-term reversal of idiosyncratic returns).
- Loadings L: industry (one per stock, all published), concepts (1 + Poisson,
  uneven popularity; published with ``missing_link_share`` of the true links
  dropped and ``spurious_link_share`` of the published links false), hidden
  groups (published nowhere).
- Individual part (weak; short-term reversal of the stock's own shocks)::

      a_{i,t+1} = φ_a a_{i,t} + κ_a u_{i,t},   κ_a < 0

- Noise: u_{i,t} = σ_{i,t} ε_{i,t}, ε Student-t(ν) clipped at ±``noise_clip`` sds
  and rescaled to unit variance (clipping a symmetric law keeps its mean 0, so
  the oracle below stays exact); σ_{i,t} = min(λ_t · GARCH(1,1) around σ̄_i, 3 σ̄_i).
  σ̄_i ~ U(idio_vol_range), smaller for bigger companies (rank correlation ≈ −0.7).

Oracle: the exact expectation of the label given everything the generator knows
after close t (shocks up to t, every state, the structure), the ceiling of any model::

    E[r_{i,t+h} | F_t] = β_i μ_m + ρ^{h-1} Σ_k L_{ik} μ_{k,t+1} + φ_a^{h-1} a_{i,t+1}

with h = 1 for label ``t->t+1`` (close_{t+1}/close_t − 1) and h = 2 for
``t+1->t+2`` (close_{t+2}/close_{t+1} − 1). It is NaN where the label is not one
day's return of a trading stock (not listed at t, or suspended on a close the
label uses); suspensions are a schedule drawn with the structure.

Observables: adjusted close = P_0 Π(1 + r); a suspended stock keeps its last close
(flat bar, volume 0) and catches up when it resumes. One cash dividend a year
makes the adjustment factor jump (raw close = adjusted / factor). Open, high and
low wrap the close with wicks scaled by σ_{i,t}; vwap = (O + H + L + 2C)/5.
log volume = log(shares · turnover_i) + v_{i,t}, v_{i,t} = φ_v v_{i,t-1} +
c_v (|r_{i,t}|/σ̃_i − √(2/π)) + σ_v e_{i,t}: volume clusters with |returns|.
Some stocks list late (joining the index after ``index_seasoning_days``), some
delist, some leave the index for a while. The benchmark is the cap-weighted
price index of the index members (market cap = shares × raw close).
"""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from scipy import integrate, signal, stats

from conceptalpha.data.calendar import Calendar
from conceptalpha.data.panel import BarPanel, Market
from conceptalpha.data.universe import Universe
from conceptalpha.errors import UserError
from conceptalpha.io import atomic_path, write_json, write_text

LABEL_HORIZONS = {"t+1->t+2": 2, "t->t+1": 1}
DAYS_PER_YEAR = 245
BENCHMARK_SYMBOL = "SH000300"
UNIVERSE_NAME = "synth"
_US_HOLIDAYS_MM_DD = ("01-01", "07-04", "12-25")
_HOLIDAYS_MM_DD = ("01-01", "05-01", "05-02", "05-03") + tuple(f"02-{d}" for d in range(10, 17)) + tuple(
    f"10-0{d}" for d in range(1, 8)
)
_VOL_CAP = 3.0  # volatility ≤ 3 × its unconditional level
_WICK = 0.4  # high/low wick size in units of the day's idiosyncratic volatility


class SynthConfig(BaseModel):
    """Parameters of the synthetic market (defaults: a CSI300-sized market over 6 years).

    Frozen and strict: unknown or invalid options raise :class:`UserError`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, description="random seed; same seed and parameters → identical market")
    market: Literal["cn", "us"] = Field("cn", description="cn: A-share codes and concepts; us: tickers, industries only, no benchmark")
    n_stocks: int = Field(300, ge=10, le=20_000, description="number of instruments")
    n_years: float = Field(6, gt=0, le=40, description=f"length in years of {DAYS_PER_YEAR} trading days")
    start: dt.date = Field(dt.date(2010, 1, 4), description="first calendar day (weekends and fixed holidays skipped)")
    burn_in_days: int = Field(250, ge=0, description="unobserved days simulated before the calendar")

    n_industries: int = Field(20, ge=1, description="industries (each stock exactly one; all published)")
    n_concepts: int = Field(60, ge=1, description="overlapping concept boards")
    concepts_per_stock: float = Field(2.5, ge=1, description="mean number of true concepts per stock (at least 1)")
    concept_popularity_spread: float = Field(0.7, ge=0, description="sd of log concept popularity (uneven sizes)")
    n_hidden: int = Field(8, ge=0, description="hidden groups: shared factors published nowhere")
    hidden_coverage: float = Field(0.7, ge=0, le=1, description="share of stocks in one hidden group")
    missing_link_share: float = Field(0.15, ge=0, lt=1, description="share of true concept links left unpublished")
    spurious_link_share: float = Field(0.10, ge=0, lt=1, description="share of published concept links that are false")

    market_drift: float = Field(0.0003, description="μ_m, expected daily market return")
    market_vol: float = Field(0.015, gt=0, description="unconditional daily market volatility")
    beta_range: tuple[float, float] = Field((0.7, 1.3), description="market betas ~ U(range)")
    factor_vol: float = Field(0.005, gt=0, description="σ_f, daily sd of factor shocks η")
    factor_persistence: float = Field(0.8, ge=0, lt=1, description="ρ = φ + κ, persistence of expected returns")
    factor_feedback: float = Field(0.26, ge=0, description="κ, weight of today's factor return in tomorrow's mean")
    industry_loading_range: tuple[float, float] = Field((0.8, 1.2))
    concept_loading_range: tuple[float, float] = Field((0.3, 0.9))
    hidden_loading_range: tuple[float, float] = Field((0.3, 0.6))
    individual_persistence: float = Field(0.6, ge=0, lt=1, description="φ_a")
    individual_feedback: float = Field(-0.05, description="κ_a (< 0: short-term reversal of own shocks)")
    idio_vol_range: tuple[float, float] = Field((0.013, 0.023), description="σ̄_i ~ U(range), daily")
    noise_df: float = Field(4.0, gt=2, description="Student-t degrees of freedom of the noise")
    noise_clip: float = Field(6.0, gt=1, description="noise clipped at ± this many unit sds")
    garch_alpha: float = Field(0.08, ge=0)
    garch_beta: float = Field(0.91, ge=0)

    volume_persistence: float = Field(0.8, ge=0, lt=1, description="φ_v of log volume")
    volume_return_link: float = Field(0.5, ge=0, description="c_v: log-volume response to |r|/σ̃")
    volume_noise: float = Field(0.25, ge=0, description="σ_v")
    turnover_median: float = Field(0.008, gt=0, description="median daily turnover (volume / shares)")
    shares_median: float = Field(3e9, gt=0)
    price_median: float = Field(12.0, gt=0, description="median first raw close")

    late_listing_share: float = Field(0.15, ge=0, le=1, description="stocks listing after the first day")
    delisting_share: float = Field(0.05, ge=0, le=1, description="stocks delisting before the last day")
    index_seasoning_days: int = Field(60, ge=0, description="days after a late listing before joining the index")
    index_exit_share: float = Field(0.10, ge=0, le=1, description="stocks leaving the index for one interval")
    suspension_rate: float = Field(0.003, ge=0, lt=1, description="daily probability that a suspension starts")
    suspension_mean_days: float = Field(10.0, ge=1)
    dividend_yield_max: float = Field(0.03, ge=0, lt=0.5, description="yearly cash dividend yield ~ U(0, max)")

    @model_validator(mode="after")
    def _consistent(self) -> "SynthConfig":
        if self.factor_feedback > self.factor_persistence:
            raise ValueError("factor_feedback (κ) must not exceed factor_persistence (ρ): φ = ρ − κ ≥ 0")
        if self.garch_alpha + self.garch_beta >= 1:
            raise ValueError("garch_alpha + garch_beta must be < 1 (stationary volatility)")
        loadings = tuple(f"{kind}_loading_range" for kind in ("industry", "concept", "hidden"))
        for name in ("beta_range", "idio_vol_range", *loadings):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must satisfy 0 <= low <= high, got ({lo}, {hi})")
        if self.concepts_per_stock > self.n_concepts:
            raise ValueError("concepts_per_stock cannot exceed n_concepts")
        return self

    def __init__(self, **options) -> None:
        """Validate ``options``; an invalid value is a :class:`UserError` naming the field (no traceback)."""
        try:
            super().__init__(**options)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "config"
            raise UserError(f"synthetic market option {where}: {first['msg']} (got {first.get('input')!r})") from None

    @property
    def n_factors(self) -> int:
        return self.n_industries + self.n_concepts + self.n_hidden


# ---------------------------------------------------------------- structure and shocks


@dataclass(frozen=True)
class SynthStructure:
    """Everything drawn once, before time runs: who is linked to what, listings, suspensions.

    Factor columns of ``loadings`` [N, K]: industries, then concepts, then hidden groups.
    ``listed`` / ``traded`` / ``in_index`` are bool [D, N]; ``ex_dividend`` is the
    log factor jump [D, N] (0 on most days).
    """

    calendar: Calendar
    instruments: np.ndarray
    loadings: np.ndarray
    industry: np.ndarray  # [N] int
    concept_links: np.ndarray  # bool [N, C], the truth
    published_links: np.ndarray  # bool [N, C]
    hidden_group: np.ndarray  # [N] int, -1 = none
    beta: np.ndarray
    idio_vol: np.ndarray
    return_scale: np.ndarray  # σ̃_i, typical |r| scale for the volume link
    shares: np.ndarray
    turnover: np.ndarray
    first_price: np.ndarray
    listed: np.ndarray
    traded: np.ndarray
    in_index: np.ndarray
    ex_dividend: np.ndarray


@dataclass
class SynthShocks:
    """Standardised random shocks, one row per simulated day (burn-in rows first).

    Changing rows after a day cannot change anything observed or expected up to
    that day: the test of "no look-ahead" perturbs them.
    """

    market: np.ndarray  # [S]
    factor: np.ndarray  # [S, K]
    noise: np.ndarray  # [S, N]
    volume: np.ndarray  # [S, N]
    open_gap: np.ndarray  # [S, N]
    high_wick: np.ndarray  # [S, N]
    low_wick: np.ndarray  # [S, N]


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    structure_seq, shock_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(structure_seq), np.random.default_rng(shock_seq)


def synthetic_calendar(start: dt.date, n_days: int, market: str = "cn") -> Calendar:
    """``n_days`` weekdays from ``start``, skipping fixed holidays (cn: New Year, a Spring
    Festival week, May Day, National Day week; us: New Year, Independence Day, Christmas)."""
    span = pd.bdate_range(start, periods=int(n_days * 1.1) + 30)
    holidays = _US_HOLIDAYS_MM_DD if market == "us" else _HOLIDAYS_MM_DD
    days = span[~span.strftime("%m-%d").isin(holidays)]
    return Calendar(days[:n_days])


def draw_structure(config: SynthConfig) -> SynthStructure:
    """The structure of ``config`` (its own random stream: independent of the shocks)."""
    rng, _ = _streams(config.seed)
    n = config.n_stocks
    calendar = synthetic_calendar(config.start, max(3, round(config.n_years * DAYS_PER_YEAR)), config.market)
    d = len(calendar)
    industry = rng.choice(config.n_industries, size=n, p=_popularity(rng, config.n_industries, 0.5))
    concept_links = _draw_concept_links(rng, config)
    in_group = (rng.random(n) < config.hidden_coverage) & (config.n_hidden > 0)
    hidden_group = np.where(in_group, rng.integers(0, max(config.n_hidden, 1), n), -1)
    loadings = _loadings(rng, config, industry, concept_links, hidden_group)
    beta = rng.uniform(*config.beta_range, n)
    shares = np.round(config.shares_median * np.exp(rng.normal(0, 1.0, n)), -4)
    first_price = config.price_median * np.exp(rng.normal(0, 0.7, n))
    idio_vol = _size_linked_volatility(rng, config, shares * first_price)
    factor_var = config.factor_vol**2 * (1 + _expected_factor_variance_ratio(config))
    return_scale = np.sqrt(beta**2 * config.market_vol**2 + (loadings**2).sum(axis=1) * factor_var + idio_vol**2)
    listing, delisting = _listing_days(rng, config, d)
    days = np.arange(d)[:, None]
    listed = (days >= listing) & (days < delisting)
    return SynthStructure(
        calendar=calendar,
        instruments=_us_tickers(n) if config.market == "us" else _symbols(n),
        loadings=loadings,
        industry=industry,
        concept_links=concept_links,
        published_links=_publish(rng, config, concept_links),
        hidden_group=hidden_group,
        beta=beta,
        idio_vol=idio_vol,
        return_scale=return_scale,
        shares=shares,
        turnover=config.turnover_median * np.exp(rng.normal(0, 0.5, n)),
        first_price=first_price,
        listed=listed,
        traded=listed & ~_suspensions(rng, config, listed, listing),
        in_index=listed & _index_membership(rng, config, listing, delisting, d),
        ex_dividend=_ex_dividends(rng, config, d) * listed,
    )


def draw_shocks(config: SynthConfig, structure: SynthStructure) -> SynthShocks:
    """The shocks of ``config``: symmetric laws, clipped at ±``noise_clip`` (wicks: half-normal)."""
    _, rng = _streams(config.seed)
    s = config.burn_in_days + len(structure.calendar)
    n = config.n_stocks
    return SynthShocks(
        market=_clipped_unit_t(rng, config, (s,)),
        factor=np.clip(rng.standard_normal((s, config.n_factors)), -config.noise_clip, config.noise_clip),
        noise=_clipped_unit_t(rng, config, (s, n)),
        volume=rng.standard_normal((s, n)),
        open_gap=np.clip(rng.standard_normal((s, n)), -config.noise_clip, config.noise_clip),
        high_wick=np.minimum(np.abs(rng.standard_normal((s, n))), config.noise_clip),
        low_wick=np.minimum(np.abs(rng.standard_normal((s, n))), config.noise_clip),
    )


def _popularity(rng: np.random.Generator, k: int, spread: float) -> np.ndarray:
    weights = np.exp(rng.normal(0, spread, k))
    return weights / weights.sum()


def _draw_concept_links(rng: np.random.Generator, config: SynthConfig) -> np.ndarray:
    """bool [N, C]: each stock gets 1 + Poisson(mean − 1) distinct concepts, popular ones more often.

    Sampling without replacement by weight is the Gumbel top-k trick: the k
    largest of log w_c + Gumbel noise.
    """
    n, c = config.n_stocks, config.n_concepts
    counts = np.minimum(1 + rng.poisson(config.concepts_per_stock - 1, n), c)
    keys = np.log(_popularity(rng, c, config.concept_popularity_spread)) + rng.gumbel(size=(n, c))
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    return rank < counts[:, None]


def _loadings(
    rng: np.random.Generator,
    config: SynthConfig,
    industry: np.ndarray,
    concept_links: np.ndarray,
    hidden_group: np.ndarray,
) -> np.ndarray:
    n = config.n_stocks
    rows = np.arange(n)
    industry_part = np.zeros((n, config.n_industries))
    industry_part[rows, industry] = rng.uniform(*config.industry_loading_range, n)
    concept_part = concept_links * rng.uniform(*config.concept_loading_range, concept_links.shape)
    hidden_part = np.zeros((n, config.n_hidden))
    grouped = hidden_group >= 0
    hidden_part[rows[grouped], hidden_group[grouped]] = rng.uniform(*config.hidden_loading_range, int(grouped.sum()))
    return np.hstack([industry_part, concept_part, hidden_part])


def _size_linked_volatility(rng: np.random.Generator, config: SynthConfig, first_cap: np.ndarray) -> np.ndarray:
    """σ̄_i ~ U(idio_vol_range), handed out so that bigger companies tend to be calmer
    (rank correlation with size about -0.7, as in real markets)."""
    vols = np.sort(rng.uniform(*config.idio_vol_range, len(first_cap)))
    log_cap = np.log(first_cap)
    smallness = -(log_cap - log_cap.mean()) / log_cap.std() + rng.standard_normal(len(first_cap))
    return vols[np.argsort(np.argsort(smallness))]


def _publish(rng: np.random.Generator, config: SynthConfig, truth: np.ndarray) -> np.ndarray:
    """Drop round(missing · true) true links, then add false links so that they are
    round(spurious · published) of the published ones."""
    true_idx = np.flatnonzero(truth)
    n_drop = round(config.missing_link_share * len(true_idx))
    published = truth.copy().reshape(-1)
    published[rng.choice(true_idx, n_drop, replace=False)] = False
    kept = len(true_idx) - n_drop
    n_false = round(config.spurious_link_share / (1 - config.spurious_link_share) * kept)
    false_idx = np.flatnonzero(~truth.reshape(-1))
    published[rng.choice(false_idx, min(n_false, len(false_idx)), replace=False)] = True
    return published.reshape(truth.shape)


def _listing_days(rng: np.random.Generator, config: SynthConfig, d: int) -> tuple[np.ndarray, np.ndarray]:
    """First listed day and first day after delisting (D = never delisted), per stock."""
    n = config.n_stocks
    late = rng.random(n) < config.late_listing_share
    listing = np.where(late, rng.integers(1, max(2, int(0.8 * d)), n), 0)
    delists = rng.random(n) < config.delisting_share
    earliest = np.minimum(listing + DAYS_PER_YEAR, d - 1)
    delisting = np.where(delists, earliest + (rng.random(n) * (d - earliest)).astype(int), d)
    return listing, np.maximum(delisting, listing + 1)


def _suspensions(rng: np.random.Generator, config: SynthConfig, listed: np.ndarray, listing: np.ndarray) -> np.ndarray:
    """bool [D, N]: suspension spells start with probability ``suspension_rate`` per listed day and
    last Geometric(1/mean) days; a stock always trades on its listing day."""
    d, n = listed.shape
    start_t, start_i = np.nonzero((rng.random((d, n)) < config.suspension_rate) & listed)
    length = rng.geometric(1 / config.suspension_mean_days, len(start_t))
    spells = np.zeros((d + 1, n), dtype=np.int32)
    np.add.at(spells, (start_t, start_i), 1)
    np.add.at(spells, (np.minimum(start_t + length, d), start_i), -1)
    suspended = np.cumsum(spells[:-1], axis=0) > 0
    suspended[np.minimum(listing, d - 1), np.arange(n)] = False
    return suspended


def _index_membership(
    rng: np.random.Generator, config: SynthConfig, listing: np.ndarray, delisting: np.ndarray, d: int
) -> np.ndarray:
    """bool [D, N]: in the index from listing (+ seasoning for late listings) until delisting,
    except for one random out-of-index interval for ``index_exit_share`` of the stocks."""
    n = config.n_stocks
    days = np.arange(d)[:, None]
    entry = np.where(listing > 0, listing + config.index_seasoning_days, 0)
    exits = rng.random(n) < config.index_exit_share
    exit_start = rng.integers(0, d, n)
    exit_end = np.where(exits, exit_start + rng.integers(60, 251, n), exit_start)
    out = (days >= exit_start) & (days < exit_end)
    return (days >= entry) & (days < delisting) & ~out


def _ex_dividends(rng: np.random.Generator, config: SynthConfig, d: int) -> np.ndarray:
    """[D, N] log jump of the adjustment factor: one ex-dividend day a year per stock,
    factor × 1/(1 − y) with y ~ U(0, dividend_yield_max)."""
    n = config.n_stocks
    day_in_year = rng.integers(0, DAYS_PER_YEAR, n)
    yields = rng.uniform(0, config.dividend_yield_max, n)
    jumps = np.zeros((d, n))
    for year_start in range(0, d, DAYS_PER_YEAR):  # a handful of years, not a per-stock loop
        t = year_start + day_in_year
        inside = t < d
        jumps[t[inside], np.flatnonzero(inside)] = -np.log1p(-yields[inside])
    return jumps


def _symbols(n: int) -> np.ndarray:
    """Half Shanghai (SH600000, SH600001, ...), half Shenzhen (SZ000001, SZ000002, ...)."""
    n_sh = (n + 1) // 2
    sh = [f"SH{600000 + i:06d}" for i in range(n_sh)]
    sz = [f"SZ{1 + i:06d}" for i in range(n - n_sh)]
    return np.array(sh + sz, dtype=object)


def _us_tickers(n: int) -> np.ndarray:
    """Distinct US-style tickers: three or four letters (AAB, AAC, ...), every 25th a class-B share (ABC.B)."""
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    codes = np.arange(n) * 7 + 27  # spread over the alphabet; 27 skips "AAA"
    width = np.where(codes < 26**3, 3, 4)
    digits = [letters[(codes // 26**k) % 26] for k in range(3, -1, -1)]
    names = ["".join(d[4 - w :]) for d, w in zip(zip(*digits), width)]
    return np.array([f"{name}.B" if i % 25 == 24 else name for i, name in enumerate(names)], dtype=object)


def _clipped_unit_t(rng: np.random.Generator, config: SynthConfig, shape: tuple[int, ...]) -> np.ndarray:
    """Student-t(ν) draws clipped at ±c·sd(t) and divided by the clipped law's sd (mean 0, variance 1)."""
    scale = np.sqrt(config.noise_df / (config.noise_df - 2))
    clipped = np.clip(rng.standard_t(config.noise_df, shape) / scale, -config.noise_clip, config.noise_clip)
    return clipped / _clipped_t_sd(config.noise_df, config.noise_clip)


@functools.lru_cache(maxsize=16)
def _clipped_t_sd(df: float, clip: float) -> float:
    """sd of clip(T/s, ±c) for T ~ t(df), s = sd(T): E[min(X², c²)] by quadrature."""
    scale = np.sqrt(df / (df - 2))
    law = stats.t(df, scale=1 / scale)
    inner, _ = integrate.quad(lambda x: x * x * law.pdf(x), 0, clip)
    return float(np.sqrt(2 * inner + 2 * clip * clip * law.sf(clip)))


def _expected_factor_variance_ratio(config: SynthConfig) -> float:
    """Var(μ_k) / σ_f² in the stationary regime: κ² / (1 − ρ²)."""
    return config.factor_feedback**2 / (1 - config.factor_persistence**2)


# ---------------------------------------------------------------- simulation


@dataclass
class SyntheticMarket:
    """A generated market, its published and true concept tables, and the oracle.

    - ``market``: bars (open/high/low/close/vwap/volume/factor, float32 [D, N]),
      universe ``synth``, shares, cap-weighted benchmark.
    - ``concepts``: the published long table (instrument, concept, kind), kind in
      {"industry", "concept"}; ``true_concepts``: the same format, the truth.
    - ``hidden_groups``: (instrument, group), published nowhere.
    - ``oracle_parts[label][part]``: the oracle's terms (:data:`ORACLE_PARTS`), the
      true decomposition to hold a model's own decomposition against.
    """

    config: SynthConfig
    market: Market
    concepts: pd.DataFrame
    true_concepts: pd.DataFrame
    hidden_groups: pd.DataFrame
    oracle_parts: dict[str, dict[str, np.ndarray]]

    def oracle(self, label: str = "t+1->t+2") -> np.ndarray:
        """float32 [D, N]: E[label_{i,t} | everything known after close t]; NaN where undefined."""
        if label not in self.oracle_parts:
            raise UserError(f"unknown label protocol {label!r}; the synthetic oracle has {sorted(self.oracle_parts)}")
        if label not in self._oracles:
            self._oracles[label] = sum(self.oracle_parts[label].values()).astype(np.float32)
        return self._oracles[label]

    @cached_property
    def _oracles(self) -> dict[str, np.ndarray]:
        """Oracles summed so far, by label."""
        return {}

    @cached_property
    def statistics(self) -> dict:
        return market_statistics(self)


def generate(config: SynthConfig) -> SyntheticMarket:
    """The synthetic market of ``config`` (deterministic in ``config``)."""
    structure = draw_structure(config)
    return simulate(config, structure, draw_shocks(config, structure))


def simulate(config: SynthConfig, structure: SynthStructure, shocks: SynthShocks) -> SyntheticMarket:
    """Run the return model over the shocks and turn it into observable bars and the oracle."""
    burn = config.burn_in_days
    market_sigma = _garch_volatility(config, config.market_vol, shocks.market)
    market_return = config.market_drift + market_sigma * shocks.market
    regime = market_sigma / config.market_vol  # common volatility regime λ_t, known after close t-1
    expected_factor = _expected_factor_returns(config, regime[:, None] * shocks.factor)  # μ [S, K]
    factor_return = expected_factor + config.factor_vol * regime[:, None] * shocks.factor
    idio_garch = _garch_volatility(config, structure.idio_vol, shocks.noise)
    idio_sigma = np.minimum(regime[:, None] * idio_garch, _VOL_CAP * structure.idio_vol)
    idio = idio_sigma * shocks.noise
    individual = signal.lfilter([0.0, config.individual_feedback], [1.0, -config.individual_persistence], idio, axis=0)
    returns = (
        np.outer(market_return, structure.beta) + factor_return @ structure.loadings.T + individual + idio
    )[burn:]
    if returns.min() <= -1:
        raise UserError("synthetic market parameters produce a daily return of -100% or worse: lower the volatilities")
    parts = _oracle_parts(config, structure, expected_factor[burn:], individual[burn:])
    panel, benchmark = _bars(config, structure, shocks, returns, idio_sigma[burn:])
    universe = Universe(UNIVERSE_NAME, structure.calendar, structure.instruments, structure.in_index)
    us = config.market == "us"
    market = Market(
        panel=panel,
        universe=universe,
        universe_members=structure.instruments.copy(),
        shares=pd.Series(structure.shares, index=pd.Index(structure.instruments, name="instrument"), name="shares"),
        benchmark=None if us else benchmark,
        name=UNIVERSE_NAME,
        kind="generic" if us else "cn",
    )
    concepts, truth, hidden = _tables(config, structure)
    return SyntheticMarket(config, market, concepts, truth, hidden, parts)


def _garch_volatility(config: SynthConfig, unconditional: np.ndarray | float, shocks: np.ndarray) -> np.ndarray:
    """σ_t [S, ...]: σ²_{t+1} = (1 − α − β) σ̄² + (α z_t² + β) σ²_t ≤ (3 σ̄)²; σ_0 = σ̄."""
    alpha, beta = config.garch_alpha, config.garch_beta
    base = np.asarray(unconditional, dtype=float) ** 2
    omega, cap = (1 - alpha - beta) * base, _VOL_CAP**2 * base
    var = np.empty(shocks.shape)
    var[0] = base
    for s in range(len(shocks) - 1):  # a day loop over whole cross-sections
        var[s + 1] = np.minimum(omega + (alpha * shocks[s] ** 2 + beta) * var[s], cap)
    return np.sqrt(var)


def _expected_factor_returns(config: SynthConfig, factor_shocks: np.ndarray) -> np.ndarray:
    """μ [S, K] with μ_0 = 0 and μ_{t+1} = ρ μ_t + κ σ_f η_t."""
    return signal.lfilter(
        [0.0, config.factor_feedback * config.factor_vol], [1.0, -config.factor_persistence], factor_shocks, axis=0
    )


ORACLE_PARTS = ("market", "industry", "concept", "hidden", "individual")


def _oracle_parts(
    config: SynthConfig, structure: SynthStructure, expected_factor: np.ndarray, individual: np.ndarray
) -> dict[str, dict[str, np.ndarray]]:
    """For each label, the oracle's terms (:data:`ORACLE_PARTS`), float32 [D, N], NaN where undefined.

    E[r_{t+h} | F_t] needs μ_{t+1} and a_{t+1}, so row t uses rows t+1.
    """
    d, n = len(structure.calendar), config.n_stocks
    n_ind, n_con = config.n_industries, config.n_concepts
    blocks = {"industry": slice(0, n_ind), "concept": slice(n_ind, n_ind + n_con), "hidden": slice(n_ind + n_con, None)}
    listed, traded = structure.listed, structure.traded
    parts = {}
    for label, h in LABEL_HORIZONS.items():
        rows = d - h
        defined = np.zeros_like(listed)
        # The label spans closes t+h-1 and t+h: both must be real trading closes, and the stock listed at t.
        defined[:rows] = listed[:rows] & traded[h - 1 : h - 1 + rows] & traded[h : h + rows]
        decay_f, decay_a = config.factor_persistence ** (h - 1), config.individual_persistence ** (h - 1)
        terms = {"market": np.broadcast_to(structure.beta * config.market_drift, (rows, n))}
        for name, cols in blocks.items():
            terms[name] = decay_f * expected_factor[1 : rows + 1, cols] @ structure.loadings[:, cols].T
        terms["individual"] = decay_a * individual[1 : rows + 1]
        parts[label] = {name: _defined_rows(term, defined) for name, term in terms.items()}
    return parts


def _defined_rows(term: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """float32 [D, N]: ``term`` on its first rows, NaN elsewhere and where not ``defined``."""
    out = np.full(defined.shape, np.nan, dtype=np.float32)
    out[: len(term)] = term
    out[~defined] = np.nan
    return out


def _bars(
    config: SynthConfig,
    structure: SynthStructure,
    shocks: SynthShocks,
    returns: np.ndarray,
    idio_sigma: np.ndarray,
) -> tuple[BarPanel, pd.Series]:
    """Observable bars from the latent total-return price; the cap-weighted benchmark."""
    burn = config.burn_in_days
    listed, traded = structure.listed, structure.traded
    latent = structure.first_price * np.cumprod(1 + returns, axis=0)  # adjusted, before the first day = first_price
    close = _carry_forward(np.where(traded, latent, np.nan))
    close[~listed] = np.nan
    previous = np.vstack([structure.first_price[None, :], latent[:-1]])
    previous[1:] = np.where(np.isfinite(close[:-1]), close[:-1], previous[1:])
    day_return = close / previous - 1
    open_ = previous * (1 + 0.4 * day_return + 0.3 * idio_sigma * shocks.open_gap[burn:])
    high = np.maximum(open_, close) * (1 + _WICK * idio_sigma * shocks.high_wick[burn:])
    low = np.minimum(open_, close) * (1 - _WICK * idio_sigma * shocks.low_wick[burn:])
    suspended = listed & ~traded
    open_, high, low = (np.where(suspended, close, x) for x in (open_, high, low))
    vwap = (open_ + high + low + 2 * close) / 5
    volume = np.where(traded, _volume(config, structure, shocks, returns), np.where(listed, 0.0, np.nan))
    factor = np.where(listed, np.exp(np.cumsum(structure.ex_dividend, axis=0)), np.nan)
    fields = {"open": open_, "high": high, "low": low, "close": close, "vwap": vwap, "volume": volume, "factor": factor}
    panel = BarPanel(structure.calendar, structure.instruments, {k: v.astype(np.float32) for k, v in fields.items()})
    return panel, _benchmark(structure, close / factor)


def _carry_forward(values: np.ndarray) -> np.ndarray:
    """Each NaN replaced by the last finite value above it in its column (NaN before the first)."""
    rows = np.where(np.isfinite(values), np.arange(len(values))[:, None], 0)
    last = np.maximum.accumulate(rows, axis=0)
    return values[last, np.arange(values.shape[1])]


def _volume(config: SynthConfig, structure: SynthStructure, shocks: SynthShocks, returns: np.ndarray) -> np.ndarray:
    """shares · turnover_i · exp(v_t), v AR(1) driven by |r|/σ̃_i (centred) and Gaussian noise."""
    burn = config.burn_in_days
    surprise = np.abs(returns) / structure.return_scale - np.sqrt(2 / np.pi)
    drive = config.volume_return_link * surprise + config.volume_noise * shocks.volume[burn:]
    v = signal.lfilter([1.0], [1.0, -config.volume_persistence], drive, axis=0)
    return structure.shares * structure.turnover * np.exp(v)


def _benchmark(structure: SynthStructure, raw_close: np.ndarray) -> pd.Series:
    """Price index (base 3000) of the index members, weighted by yesterday's market cap."""
    cap = structure.shares * raw_close
    weight = np.where(structure.in_index[:-1] & np.isfinite(raw_close[1:]), np.nan_to_num(cap[:-1]), 0.0)
    change = np.nan_to_num(raw_close[1:] / raw_close[:-1] - 1)
    daily = (weight * change).sum(axis=1) / np.maximum(weight.sum(axis=1), 1e-12)
    level = 3000.0 * np.concatenate([[1.0], np.cumprod(1 + daily)])
    return pd.Series(level.astype(np.float32), index=structure.calendar.dates, name=BENCHMARK_SYMBOL)


def _tables(config: SynthConfig, structure: SynthStructure) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(published concept table, true concept table, hidden groups), sorted by instrument then concept."""
    industries = pd.DataFrame(
        {
            "instrument": structure.instruments,
            "concept": [f"industry_{k:02d}" for k in structure.industry],
            "kind": "industry",
        }
    )
    concept_names = np.array([f"concept_{k:03d}" for k in range(config.n_concepts)], dtype=object)

    def long_table(links: np.ndarray) -> pd.DataFrame:
        stock, concept = np.nonzero(links)
        concepts = pd.DataFrame(
            {"instrument": structure.instruments[stock], "concept": concept_names[concept], "kind": "concept"}
        )
        both = pd.concat([industries, concepts], ignore_index=True)
        return both.sort_values(["instrument", "kind", "concept"], ignore_index=True)

    us = config.market == "us"
    published = industries.sort_values("instrument", ignore_index=True) if us else long_table(structure.published_links)

    grouped = structure.hidden_group >= 0
    hidden = pd.DataFrame(
        {
            "instrument": structure.instruments[grouped],
            "group": [f"hidden_{g}" for g in structure.hidden_group[grouped]],
        }
    )
    return published, long_table(structure.concept_links), hidden


# ---------------------------------------------------------------- statistics and writing


def forward_label(close: np.ndarray, label: str) -> np.ndarray:
    """[D, N] raw label from adjusted closes: close_{t+h}/close_{t+h-1} − 1 (NaN at the end)."""
    h = LABEL_HORIZONS[label]
    out = np.full(close.shape, np.nan)
    out[: len(close) - h] = close[h:] / close[h - 1 : len(close) - 1] - 1
    return out


def daily_ic(score: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Pearson correlation per day (row) over the columns where ``mask`` and both values are finite; NaN with < 3."""
    ok = mask & np.isfinite(score) & np.isfinite(target)
    count = ok.sum(axis=1)
    x, y = np.where(ok, score, 0.0), np.where(ok, target, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = x.sum(axis=1) / count, y.sum(axis=1) / count
        dx, dy = np.where(ok, x - mx[:, None], 0.0), np.where(ok, y - my[:, None], 0.0)
        ic = (dx * dy).sum(axis=1) / np.sqrt((dx * dx).sum(axis=1) * (dy * dy).sum(axis=1))
    return np.where(count >= 3, ic, np.nan)


def _column_autocorrelation(values: np.ndarray) -> np.ndarray:
    """Lag-1 autocorrelation of each column over pairs of consecutive finite values."""
    a, b = values[:-1], values[1:]
    ok = np.isfinite(a) & np.isfinite(b)
    count = ok.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        a0 = np.where(ok, a - np.nansum(np.where(ok, a, 0), axis=0) / count, 0.0)
        b0 = np.where(ok, b - np.nansum(np.where(ok, b, 0), axis=0) / count, 0.0)
        return (a0 * b0).sum(axis=0) / np.sqrt((a0 * a0).sum(axis=0) * (b0 * b0).sum(axis=0))


def traded_returns(panel: BarPanel) -> np.ndarray:
    """[D, N] close-to-close returns between two consecutive traded days (NaN otherwise)."""
    close = panel.field("close").astype(float)
    traded = panel.field("volume") > 0
    daily = np.full(close.shape, np.nan)
    daily[1:] = np.where(traded[1:] & traded[:-1], close[1:] / close[:-1] - 1, np.nan)
    return daily


def return_statistics(market: Market) -> dict:
    """The statistics that make a market look real, on any :class:`Market` (synthetic or not).

    Per-stock values are summarised by their median over stocks: excess kurtosis
    of daily returns (fat tails), lag-1 autocorrelation of returns, of |returns|
    (volatility clustering) and of log volume (volume clustering). Cross-section
    statistics use the index members of each day.
    """
    panel, members = market.panel, market.universe.mask
    daily = traded_returns(panel)
    volume = panel.field("volume").astype(float)
    listed = np.isfinite(panel.field("close"))
    cross_section = np.where(members, daily, np.nan)
    cross_section = cross_section[np.isfinite(cross_section).sum(axis=1) >= 2]
    kurtosis = np.asarray(stats.kurtosis(daily, axis=0, nan_policy="omit"), dtype=float)
    log_volume = np.log(np.where(volume > 0, volume, np.nan))
    members_per_day = members.sum(axis=1)
    return {
        "daily_return_sd": float(np.nanstd(daily)),
        "cross_section_sd_mean": float(np.nanmean(np.nanstd(cross_section, axis=1))),
        "excess_kurtosis_median": float(np.nanmedian(kurtosis)),
        "return_autocorr_median": float(np.nanmedian(_column_autocorrelation(daily))),
        "abs_return_autocorr_median": float(np.nanmedian(_column_autocorrelation(np.abs(daily)))),
        "log_volume_autocorr_median": float(np.nanmedian(_column_autocorrelation(log_volume))),
        "suspended_share": float((listed & (volume == 0)).sum() / listed.sum()),
        "members_per_day": {
            "min": int(members_per_day.min()),
            "median": float(np.median(members_per_day)),
            "max": int(members_per_day.max()),
        },
        "days": int(daily.shape[0]),
        "stocks": int(daily.shape[1]),
    }


def market_statistics(sm: SyntheticMarket) -> dict:
    """Realised statistics of a synthetic market: the oracle's daily IC per label
    (Pearson against the realised raw label, index members), :func:`return_statistics`,
    life-cycle counts and the realised shares of missing and spurious concept links."""
    members = sm.market.universe.mask
    close = sm.market.panel.field("close").astype(float)
    ic = {}
    for label in LABEL_HORIZONS:
        series = daily_ic(sm.oracle(label).astype(float), forward_label(close, label), members)
        days = int(np.isfinite(series).sum())
        ic[label] = {"mean": float(np.nanmean(series)), "std": float(np.nanstd(series)), "days": days}
    published = sm.concepts[sm.concepts["kind"] == "concept"]
    truth = sm.true_concepts[sm.true_concepts["kind"] == "concept"]
    matched = published.merge(truth, on=["instrument", "concept"]).shape[0]
    listed = np.isfinite(close)
    return {
        "oracle_ic": ic,
        "oracle_variance_share": _variance_shares(sm.oracle_parts["t+1->t+2"], members),
        **return_statistics(sm.market),
        "late_listings": int((~listed[0]).sum()),
        "delistings": int((~listed[-1]).sum()),
        "missing_link_share": float(1 - matched / len(truth)),
        "spurious_link_share": float(1 - matched / len(published)) if len(published) else 0.0,
    }


def _variance_shares(parts: dict[str, np.ndarray], members: np.ndarray) -> dict[str, float]:
    """Share of each term in Σ_parts (mean over days of the cross-sectional variance among members)."""
    variance = {}
    for name, term in parts.items():
        values = np.where(members, term, np.nan)
        values = values[np.isfinite(values).sum(axis=1) >= 2]
        variance[name] = float(np.mean(np.nanvar(values, axis=1)))
    total = sum(variance.values())
    return {name: v / total for name, v in variance.items()}


def write_synthetic_market(out_dir: str | Path, config: SynthConfig) -> dict:
    """Generate the market of ``config`` and write it under ``out_dir``.

    Writes the Qlib provider folders (universe ``synth``; benchmark ``SH000300``
    for the cn style, none for us), ``concepts.csv`` (published: instrument,
    concept, kind; ``industries.csv`` in the us style), ``true_concepts.csv``,
    ``hidden_groups.csv``, ``shares.csv`` (instrument, shares),
    ``oracle.parquet`` (datetime, instrument, oracle_t+1->t+2, oracle_t->t+1 for
    every listed stock-day) and ``synth.json`` (config + realised statistics).
    Returns {"paths": {...}, "statistics": {...}}.
    """
    from conceptalpha.data.qlib import write_qlib  # the writer lives beside this module

    out = Path(out_dir)
    sm = generate(config)
    write_qlib(
        sm.market.panel,
        sm.market.universe,
        out,
        universe_name=UNIVERSE_NAME,
        benchmark=sm.market.benchmark,
        benchmark_symbol=BENCHMARK_SYMBOL,
    )
    paths = {
        "qlib": out,
        "concepts": out / ("industries.csv" if config.market == "us" else "concepts.csv"),
        "true_concepts": out / "true_concepts.csv",
        "hidden_groups": out / "hidden_groups.csv",
        "shares": out / "shares.csv",
        "oracle": out / "oracle.parquet",
        "summary": out / "synth.json",
    }
    write_text(paths["concepts"], sm.concepts.to_csv(index=False))
    write_text(paths["true_concepts"], sm.true_concepts.to_csv(index=False))
    write_text(paths["hidden_groups"], sm.hidden_groups.to_csv(index=False))
    write_text(paths["shares"], sm.market.shares.astype(np.int64).reset_index().to_csv(index=False))
    with atomic_path(paths["oracle"]) as tmp:
        _oracle_table(sm).to_parquet(tmp, index=False)
    summary = {"paths": {k: str(v) for k, v in paths.items()}, "statistics": sm.statistics}
    write_json(paths["summary"], {"config": config.model_dump(mode="json"), "statistics": sm.statistics})
    return summary


def _oracle_table(sm: SyntheticMarket) -> pd.DataFrame:
    panel = sm.market.panel
    listed = np.isfinite(panel.field("close"))
    t, i = np.nonzero(listed)
    columns = {"datetime": panel.calendar.dates[t], "instrument": panel.instruments[i]}
    columns.update({f"oracle_{label}": sm.oracle(label)[t, i] for label in LABEL_HORIZONS})
    return pd.DataFrame(columns)
