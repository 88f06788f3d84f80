"""Our baselines compute the same function as pyqlib's reference modules, given the same weights.

Skipped unless pyqlib is importable. .venv-compare has pyqlib but no pytest, so put its packages first
on the path of the main venv's pytest:

    PYTHONPATH=.venv-compare/lib/python3.11/site-packages .venv/bin/python -m pytest -q -p no:cacheprovider \
        tests/test_zoo_vs_qlib.py

Each case builds pyqlib's torch module, copies its weights into ours through an
explicit name map, and compares the scores on the same random Alpha360 day
(pyqlib reads the flat field-major row [N, 6·60], we read [N, 60, 6]).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from zoo_fakes import one_torch_thread  # noqa: F401 (autouse fixture)

from conceptalpha.models.registry import build_model

pytest.importorskip("qlib.contrib.model")


def qlib_module(name: str):
    return importlib.import_module(f"qlib.contrib.model.{name}")

N, T, F, H = 16, 20, 6, 8


def transposed_blocks(*matrices: torch.Tensor) -> torch.Tensor:
    """Stack [in, out] matrices (pyqlib's SFM layout) as one torch Linear weight [Σ out, in]."""
    return torch.cat([m.T for m in matrices], dim=0)


def renamed(state: dict, mapping: dict[str, str]) -> dict:
    """Our state_dict from pyqlib's: ``mapping`` maps our key prefixes to pyqlib's."""
    out = {}
    for ours, theirs in mapping.items():
        for key, value in state.items():
            if key == theirs or key.startswith(theirs + "."):
                out[ours + key[len(theirs) :]] = value
    return out


def sfm_weights(ref) -> dict:
    return {
        "input_gates.weight": transposed_blocks(ref.W_i, ref.W_ste, ref.W_c, ref.W_o, ref.W_fre),
        "input_gates.bias": torch.cat([ref.b_i, ref.b_ste, ref.b_c, ref.b_o, ref.b_fre]),
        "recurrent_gates.weight": transposed_blocks(ref.U_i, ref.U_ste, ref.U_c, ref.U_o, ref.U_fre),
        "amplitude.weight": ref.U_a.T,
        "amplitude_bias": ref.b_a,
        "output.weight": ref.W_p.T,
        "output.bias": ref.b_p,
        "fc_out.weight": ref.fc_out.weight,
        "fc_out.bias": ref.fc_out.bias,
    }


def gats_weights(ref) -> dict:
    state = renamed(ref.state_dict(), {"rnn": "rnn", "transform": "transformation", "fc": "fc", "fc_out": "fc_out"})
    # pyqlib scores pair (i, j) as a·[z_j ; z_i]: the first half of a weighs the attended stock j
    state["attn_target.weight"] = ref.a[:H].T
    state["attn_source.weight"] = ref.a[H:].T
    return state


def gats_reference():
    model = qlib_module("pytorch_gats").GATModel(F, H, 2, base_model="LSTM")
    with torch.no_grad():  # large attention weights, so that scores of both signs meet LeakyReLU's kink
        model.a.normal_(0.0, 5.0)
    return model


CASES = {
    "GRU": (lambda: qlib_module("pytorch_gru").GRUModel(F, H, 2), {}, lambda ref: ref.state_dict()),
    "LSTM": (lambda: qlib_module("pytorch_lstm").LSTMModel(F, H, 2), {}, lambda ref: ref.state_dict()),
    "ALSTM": (
        lambda: qlib_module("pytorch_alstm").ALSTMModel(F, H, 2, rnn_type="LSTM"),
        {"rnn_type": "LSTM"},
        lambda ref: renamed(
            ref.state_dict(),
            {
                "input_proj.0": "net.fc_in",
                "rnn": "rnn",
                "attention.0": "att_net.att_fc_in",
                "attention.3": "att_net.att_fc_out",
                "fc_out": "fc_out",
            },
        ),
    ),
    "GATs": (gats_reference, {"base_model": "LSTM"}, gats_weights),
    "Transformer": (
        lambda: qlib_module("pytorch_transformer").Transformer(F, H, 2, 2, 0.0),
        {"num_heads": 2},
        lambda ref: renamed(
            ref.state_dict(),
            {"input_proj": "feature_layer", "encoder.layers": "transformer_encoder.layers", "fc_out": "decoder_layer"},
        ),
    ),
    "SFM": (
        lambda: qlib_module("pytorch_sfm").SFM_Model(F, output_dim=4, freq_dim=5, hidden_size=H),
        {"output_dim": 4, "freq_dim": 5, "dropout_W": 0.0, "dropout_U": 0.0},
        sfm_weights,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_same_weights_same_scores(name):
    make_reference, params, weights = CASES[name]
    torch.manual_seed(0)
    reference = make_reference().eval()
    ours = build_model(name, d_feat=F, seq_len=T, hidden_size=H, **params).eval()
    ours.load_state_dict(weights(reference), strict=True)
    x = torch.randn(N, T, F, generator=torch.Generator().manual_seed(1))
    flat = x.transpose(1, 2).reshape(N, F * T)
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(flat).reshape(N), atol=1e-5, rtol=1e-4)


def test_mlp_matches_qlib_net():
    torch.manual_seed(0)
    reference = qlib_module("pytorch_nn").Net(F * T).eval()
    ours = build_model("MLP", d_feat=F * T, seq_len=None).eval()
    mapping = {"net.1": "dnn_layers.1.0", "net.2": "dnn_layers.1.1", "net.5": "dnn_layers.3"}
    ours.load_state_dict(renamed(reference.state_dict(), mapping), strict=True)
    x = torch.randn(N, F * T, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(ours(x), reference(x).reshape(N), atol=1e-5)
