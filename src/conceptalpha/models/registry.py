"""The model zoo: every model by name, with its defaults and source paper.

``build_model("GRU", d_feat=6, seq_len=60, hidden_size=32)`` builds a model from
its registered defaults plus overrides. Neural defaults follow the Qlib
benchmark configs for CSI300 Alpha360 (examples/benchmarks/*/workflow_config_*_Alpha360.yaml)
and the HIST paper; ``trainer_defaults`` holds the training settings in those
configs that differ from the shared trainer's defaults. All neural models train
through the shared trainer (one day's cross-section per step), not with
Qlib's per-model loops and random mini-batches.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Literal

from conceptalpha.errors import UserError
from conceptalpha.models.gats import GATs
from conceptalpha.models.gbdt import ALPHA158_PARAMS, LightGBMModel, resolve_params
from conceptalpha.models.hist import HIST
from conceptalpha.models.master import MASTER
from conceptalpha.models.mlp import MLP
from conceptalpha.models.rnn import ALSTM, RNNModel
from conceptalpha.models.sfm import SFM
from conceptalpha.models.tra import TRA
from conceptalpha.models.transformer import Transformer


@dataclass(frozen=True)
class ModelSpec:
    """How to build one model, what it expects and where it comes from."""

    name: str
    kind: Literal["neural", "gbdt"]
    build: Callable[..., Any]  # build(d_feat, seq_len, **hparams) -> model
    defaults: dict[str, Any]
    input: Literal["sequence", "flat"]
    uses_concepts: bool
    paper: str
    trainer_defaults: dict[str, Any] = field(default_factory=dict)
    summary: str = ""
    uses_market: bool = False  # reads the day's market vector: built with d_market, given forward(..., market=)


def _build_mlp(d_feat: int, seq_len: int | None, **hp: Any) -> MLP:
    return MLP(input_size=d_feat * (seq_len or 1), **hp)


def _sequence_builder(cls: Callable[..., Any]) -> Callable[..., Any]:
    """build(d_feat, seq_len, **hp) for a model that reads sequences [N, T, F] of any length T."""

    def build(d_feat: int, seq_len: int | None, **hp: Any) -> Any:
        return cls(d_feat=d_feat, **hp)

    return build


def _build_lightgbm(d_feat: int, seq_len: int | None, **params: Any) -> LightGBMModel:
    """``learning_rate="auto"``: Qlib's Alpha360 rate for sequence features, its Alpha158 rate for flat ones."""
    return LightGBMModel(**resolve_params(params, seq_len))


_RNN_DEFAULTS = {"hidden_size": 64, "num_layers": 2, "dropout": 0.0}
_RNN_TRAINING = {"lr": 1e-3, "max_epochs": 200, "patience": 20}

MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="MLP",
            kind="neural",
            build=_build_mlp,
            defaults={"hidden_size": 256, "num_layers": 1, "dropout": 0.05},
            input="flat",
            uses_concepts=False,
            paper="Multilayer perceptron (Qlib DNN baseline; Rumelhart, Hinton & Williams 1986)",
            trainer_defaults={"lr": 2e-3},
            summary="feed-forward net on the flattened feature row (BatchNorm, LeakyReLU)",
        ),
        ModelSpec(
            name="GRU",
            kind="neural",
            build=_sequence_builder(partial(RNNModel, rnn_type="GRU")),
            defaults=dict(_RNN_DEFAULTS),
            input="sequence",
            uses_concepts=False,
            paper="Cho et al. 2014, Learning Phrase Representations using RNN Encoder-Decoder (arXiv 1406.1078)",
            trainer_defaults=dict(_RNN_TRAINING),
            summary="2-layer GRU, last hidden state → linear",
        ),
        ModelSpec(
            name="LSTM",
            kind="neural",
            build=_sequence_builder(partial(RNNModel, rnn_type="LSTM")),
            defaults=dict(_RNN_DEFAULTS),
            input="sequence",
            uses_concepts=False,
            paper="Hochreiter & Schmidhuber 1997, Long Short-Term Memory (Neural Computation 9(8))",
            trainer_defaults=dict(_RNN_TRAINING),
            summary="2-layer LSTM, last hidden state → linear",
        ),
        ModelSpec(
            name="ALSTM",
            kind="neural",
            build=_sequence_builder(ALSTM),
            defaults={**_RNN_DEFAULTS, "rnn_type": "LSTM"},
            input="sequence",
            uses_concepts=False,
            paper="Feng et al. 2019, Enhancing Stock Movement Prediction with Adversarial Training (IJCAI; arXiv 1810.09936)",
            trainer_defaults=dict(_RNN_TRAINING),
            summary="RNN with temporal attention; [last state ; attention-pooled states] → linear",
        ),
        ModelSpec(
            name="GATs",
            kind="neural",
            build=_sequence_builder(GATs),
            defaults={"hidden_size": 64, "num_layers": 2, "dropout": 0.7, "base_model": "LSTM"},
            input="sequence",
            uses_concepts=False,
            paper="Veličković et al. 2018, Graph Attention Networks (ICLR; arXiv 1710.10903)",
            trainer_defaults={"lr": 1e-4, "max_epochs": 200, "patience": 20},
            summary="LSTM encodings + graph attention over the whole day's cross-section",
        ),
        ModelSpec(
            name="Transformer",
            kind="neural",
            build=_sequence_builder(Transformer),
            defaults={"hidden_size": 64, "num_layers": 2, "dropout": 0.0, "num_heads": 2, "ffn_size": 2048},
            input="sequence",
            uses_concepts=False,
            paper="Vaswani et al. 2017, Attention Is All You Need (NeurIPS; arXiv 1706.03762)",
            trainer_defaults={"lr": 1e-4, "max_epochs": 100, "patience": 5},
            summary="self-attention encoder over the 60-day window, last position → linear",
        ),
        ModelSpec(
            name="SFM",
            kind="neural",
            build=_sequence_builder(SFM),
            defaults={"hidden_size": 64, "output_dim": 32, "freq_dim": 25, "dropout_W": 0.5, "dropout_U": 0.5},
            input="sequence",
            uses_concepts=False,
            paper="Zhang, Aggarwal & Qi 2017, Stock Price Prediction via Discovering Multi-Frequency Trading Patterns (KDD)",
            trainer_defaults={"lr": 1e-3, "max_epochs": 20, "patience": 20},
            summary="state-frequency memory RNN: LSTM memory split over Fourier frequencies",
        ),
        ModelSpec(
            name="TRA",
            kind="neural",
            build=_sequence_builder(TRA),
            defaults={
                **_RNN_DEFAULTS,
                "rnn_type": "LSTM",
                "num_states": 3,
                "tau": 1.0,
                "lamb": 1.0,
                "rho": 1.0,
                "sinkhorn_epsilon": 0.01,
                "sinkhorn_iters": 3,
            },
            input="sequence",
            uses_concepts=False,
            paper="Lin et al. 2021, Learning Multiple Stock Trading Patterns with Temporal Routing Adaptor and Optimal Transport (KDD; arXiv 2106.12950)",
            trainer_defaults={"lr": 1e-3, "max_epochs": 100, "patience": 10},
            summary="ALSTM + K predictors and a router trained to match an optimal-transport (Sinkhorn) assignment",
        ),
        ModelSpec(
            name="HIST",
            kind="neural",
            build=_sequence_builder(HIST),
            defaults={
                "hidden_size": 64,
                "num_layers": 2,
                "K": 1,
                "dropout": 0.0,
                "base_model": "GRU",
                "correction": True,
                "denominator_plus_one": False,
                "concept_weighting": "market_cap",
                "concept_attention": "all",
                "similarity_block_rows": None,
                "encoder_checkpoint": None,
            },
            input="sequence",
            uses_concepts=True,
            paper="Xu et al. 2021, HIST: A Graph-based Framework for Stock Trend Forecasting via Mining Concept-Oriented Shared Information (arXiv 2110.13716)",
            summary="GRU encoder + predefined-concept, hidden-concept and individual modules",
        ),
        ModelSpec(
            name="MASTER",
            build=_sequence_builder(MASTER),
            kind="neural",
            defaults={
                "d_market": None,
                "hidden_size": 256,
                "temporal_heads": 4,
                "stock_heads": 2,
                "dropout": 0.5,
                "beta": 5.0,
            },
            input="sequence",
            uses_concepts=False,
            uses_market=True,
            paper="Li et al. 2024, MASTER: Market-Guided Stock Transformer for Stock Price Forecasting (AAAI; arXiv 2312.15235)",
            trainer_defaults={"lr": 1e-5, "max_epochs": 40, "patience": 10},
            summary="market-gated features, attention over each stock's days, then across stocks per day, last-day-query pooling",
        ),
        ModelSpec(
            name="LightGBM",
            kind="gbdt",
            build=_build_lightgbm,
            defaults={**ALPHA158_PARAMS, "learning_rate": "auto"},
            input="flat",
            uses_concepts=False,
            paper="Ke et al. 2017, LightGBM: A Highly Efficient Gradient Boosting Decision Tree (NeurIPS)",
            summary="gradient-boosted trees on Alpha158 (or flattened Alpha360) rows, early-stopped on valid MSE",
        ),
    ]
}


def get_model_spec(name: str) -> ModelSpec:
    """The spec registered under ``name``; ``UserError`` naming the closest valid name otherwise."""
    if name in MODELS:
        return MODELS[name]
    by_lower = {key.lower(): key for key in MODELS}
    if name.lower() in by_lower:
        hint = f"did you mean {by_lower[name.lower()]!r}?"
    else:
        close = difflib.get_close_matches(name, list(MODELS), n=1, cutoff=0.4)
        hint = f"did you mean {close[0]!r}?" if close else f"valid names: {', '.join(MODELS)}"
    raise UserError(f"unknown model {name!r}; {hint}")


def build_model(name: str, d_feat: int, seq_len: int | None, **overrides: Any) -> Any:
    """Build model ``name`` for features [N, seq_len, d_feat] (or [N, d_feat] when ``seq_len`` is None)
    from its defaults updated with ``overrides``; ``UserError`` for an unknown hyper-parameter or a
    sequence model given flat features."""
    spec = get_model_spec(name)
    unknown = sorted(set(overrides) - set(spec.defaults))
    if unknown:
        raise UserError(
            f"unknown hyper-parameter(s) {', '.join(map(repr, unknown))} for model {name}; "
            f"valid: {', '.join(sorted(spec.defaults))}"
        )
    if spec.input == "sequence" and spec.kind == "neural" and seq_len is None:
        raise UserError(f"model {name} needs sequence features [N, T, F] (e.g. Alpha360); got flat features")
    return spec.build(d_feat, seq_len, **{**spec.defaults, **overrides})
