"""The neural baselines and the model registry: shapes, hyper-parameters, errors, determinism."""

from __future__ import annotations

import pytest
import torch
from zoo_fakes import one_torch_thread  # noqa: F401 (autouse fixture)

from conceptalpha.errors import UserError
from conceptalpha.models.gats import GATs
from conceptalpha.models.registry import MODELS, build_model, get_model_spec
from conceptalpha.models.rnn import RNNModel

N, T, F = 9, 7, 4
#: models that read stocks only (HIST also reads concepts, MASTER the market vector: their own tests)
BASELINES = [name for name, spec in MODELS.items()
             if spec.kind == "neural" and not spec.uses_concepts and not spec.uses_market]
#: tiny sizes so the tests stay fast; the registered defaults are for real runs
TINY = {"Transformer": {"hidden_size": 8, "ffn_size": 16}}
DROPOUT_KEYS = {"SFM": ("dropout_W", "dropout_U")}


def tiny(name: str, **overrides) -> torch.nn.Module:
    return build_model(name, d_feat=F, seq_len=T, **{"hidden_size": 8, **TINY.get(name, {}), **overrides})


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(N, T, F, generator=torch.Generator().manual_seed(1))


def test_zoo_lists_every_model_of_the_issue():
    assert set(MODELS) >= {"MLP", "GRU", "LSTM", "ALSTM", "GATs", "Transformer", "SFM", "TRA", "LightGBM", "HIST"}
    for spec in MODELS.values():
        assert spec.paper and spec.summary and spec.input in ("sequence", "flat")


@pytest.mark.parametrize("name", BASELINES)
def test_forward_gives_one_finite_score_per_stock(name, x):
    torch.manual_seed(0)
    model = tiny(name).eval()
    with torch.no_grad():
        scores = model(x, membership=None, market_cap=torch.ones(N))
        single = model(x[:1])
    assert scores.shape == (N,) and torch.isfinite(scores).all()
    assert single.shape == (1,) and torch.isfinite(single).all()


@pytest.mark.parametrize("name", BASELINES)
def test_gradients_reach_every_parameter(name, x):
    torch.manual_seed(0)
    model = tiny(name).train()
    y = torch.randn(N)
    loss = model.training_loss({"x": x, "y": y}) if hasattr(model, "training_loss") else (model(x) - y).square().mean()
    loss.backward()
    missing = [k for k, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


@pytest.mark.parametrize("name", [n for n in BASELINES if MODELS[n].input == "sequence"])
def test_sequence_models_accept_flat_alpha360_rows(name, x):
    torch.manual_seed(0)
    model = tiny(name).eval()
    flat = x.transpose(1, 2).reshape(N, F * T)  # field-major, oldest first, as Alpha360's 360 columns
    with torch.no_grad():
        assert torch.allclose(model(flat), model(x))


def test_mlp_flattens_sequences_and_takes_flat_rows(x):
    model = tiny("MLP").eval()
    assert model(x).shape == (N,)
    flat_model = build_model("MLP", d_feat=F, seq_len=None, hidden_size=8).eval()
    assert flat_model(x[:, -1, :]).shape == (N,)


@pytest.mark.parametrize("name", BASELINES)
def test_hidden_size_changes_the_model(name):
    small = sum(p.numel() for p in tiny(name, hidden_size=8).parameters())
    large = sum(p.numel() for p in tiny(name, hidden_size=16).parameters())
    assert large > small


@pytest.mark.parametrize("name", [n for n in BASELINES if "num_layers" in MODELS[n].defaults])
def test_num_layers_changes_the_model(name):
    one = sum(p.numel() for p in tiny(name, num_layers=1).parameters())
    three = sum(p.numel() for p in tiny(name, num_layers=3).parameters())
    assert three > one


def test_rnn_settings_reach_the_recurrent_module():
    model = build_model("GRU", d_feat=F, seq_len=T, hidden_size=12, num_layers=3, dropout=0.25)
    assert isinstance(model.rnn, torch.nn.GRU)
    assert (model.rnn.hidden_size, model.rnn.num_layers, model.rnn.dropout) == (12, 3, 0.25)
    assert model.rnn.batch_first


@pytest.mark.parametrize("name", BASELINES)
def test_dropout_is_honoured(name, x):
    keys = DROPOUT_KEYS.get(name, ("dropout",))
    outputs = {}
    for rate in (0.0, 0.5):
        torch.manual_seed(0)
        model = tiny(name, **{k: rate for k in keys}).train()
        with torch.no_grad():
            outputs[rate] = (model(x), model(x))
    assert torch.equal(*outputs[0.0]), "without dropout, training-mode forwards must agree"
    assert not torch.equal(*outputs[0.5]), "with dropout, training-mode forwards must differ"


@pytest.mark.parametrize("name", BASELINES)
def test_same_seed_builds_identical_models(name, x):
    scores = []
    for _ in range(2):
        torch.manual_seed(123)
        model = tiny(name).eval()
        with torch.no_grad():
            scores.append(model(x))
    assert torch.equal(*scores)


def test_a_gru_checkpoint_initialises_the_rnn_of_another_model():
    torch.manual_seed(0)
    gru = RNNModel(d_feat=F, hidden_size=8, num_layers=2, rnn_type="GRU")
    encoder_state = {k: v for k, v in gru.state_dict().items() if k.startswith("rnn.")}
    gats = GATs(d_feat=F, hidden_size=8, num_layers=2, base_model="GRU")
    result = gats.load_state_dict(encoder_state, strict=False)
    assert not result.unexpected_keys
    assert torch.equal(gats.rnn.weight_hh_l1, gru.rnn.weight_hh_l1)


def test_gats_attention_rows_are_distributions(x):
    model = tiny("GATs")
    alpha = model.attention(torch.randn(N, 8))
    assert alpha.shape == (N, N)
    assert torch.allclose(alpha.sum(dim=1), torch.ones(N))


@pytest.mark.parametrize(
    ("name", "hint"), [("gru", "'GRU'"), ("LSTMM", "'LSTM'"), ("Transfomer", "'Transformer'"), ("xyz", "valid names")]
)
def test_unknown_model_names_suggest_the_nearest(name, hint):
    with pytest.raises(UserError, match=hint):
        get_model_spec(name)


def test_unknown_hyper_parameter_is_named():
    with pytest.raises(UserError, match="'hidden_dim'.*GRU.*hidden_size"):
        build_model("GRU", d_feat=F, seq_len=T, hidden_dim=8)


def test_sequence_model_on_flat_features_is_a_user_error():
    with pytest.raises(UserError, match="sequence features"):
        build_model("LSTM", d_feat=158, seq_len=None)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("Transformer", {"hidden_size": 10, "num_heads": 3}, "divisible"),
        ("GATs", {"base_model": "RNN"}, "rnn_type"),
        ("TRA", {"num_states": 0}, "num_states"),
        ("MLP", {"num_layers": 0}, "num_layers"),
        ("GRU", {"dropout": 1.5}, "dropout"),
        ("SFM", {"dropout_U": -0.1}, "dropout_U"),
        ("Transformer", {"dropout": 1.0}, "dropout"),
    ],
)
def test_invalid_hyper_parameter_values_are_user_errors(name, params, message):
    with pytest.raises(UserError, match=message):
        build_model(name, d_feat=F, seq_len=T, **params)


def test_defaults_build_every_neural_model():
    for name in BASELINES:
        assert isinstance(build_model(name, d_feat=6, seq_len=60), torch.nn.Module)


def test_hist_is_registered_with_concepts_and_builds_with_its_options():
    spec = get_model_spec("HIST")
    assert spec.uses_concepts and "2110.13716" in spec.paper
    model = build_model("HIST", d_feat=F, seq_len=T, hidden_size=8, K=2, concept_weighting="equal")
    assert isinstance(model.rnn, torch.nn.GRU) and model.rnn.hidden_size == 8
