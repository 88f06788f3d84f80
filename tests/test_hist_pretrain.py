"""Initialising HIST's encoder from a trained GRU/LSTM best.pt (plain state_dict, keys rnn.*)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conceptalpha.errors import UserError
from conceptalpha.models.hist import HIST


class RNNBaseline(nn.Module):
    """The baselines' convention: recurrent encoder in ``rnn`` + an output head."""

    def __init__(self, kind=nn.GRU, d_feat=3, hidden_size=8, num_layers=2):
        super().__init__()
        self.rnn = kind(d_feat, hidden_size, num_layers, batch_first=True)
        self.fc_out = nn.Linear(hidden_size, 1)


def _save(tmp_path, module: nn.Module, name="best.pt"):
    path = tmp_path / name
    torch.save(module.state_dict(), path)
    return path


@pytest.mark.parametrize("kind,base_model", [(nn.GRU, "GRU"), (nn.LSTM, "LSTM")])
def test_encoder_weights_are_loaded(tmp_path, kind, base_model):
    torch.manual_seed(0)
    baseline = RNNBaseline(kind)
    path = _save(tmp_path, baseline)
    hist = HIST(d_feat=3, hidden_size=8, base_model=base_model, encoder_checkpoint=path)
    for key, value in baseline.rnn.state_dict().items():
        assert torch.equal(hist.rnn.state_dict()[key], value)
    x = torch.randn(4, 5, 3)
    torch.testing.assert_close(hist.encode(x), baseline.rnn(x)[0][:, -1], rtol=1e-5, atol=1e-6)


def test_shape_mismatch_names_the_weight_and_shapes(tmp_path):
    path = _save(tmp_path, RNNBaseline(hidden_size=16))
    with pytest.raises(UserError, match=r"rnn\.weight_ih_l0.*\(48, 3\).*\(24, 3\)"):
        HIST(d_feat=3, hidden_size=8, encoder_checkpoint=path)


def test_lstm_checkpoint_into_gru_hist_is_refused(tmp_path):
    path = _save(tmp_path, RNNBaseline(nn.LSTM))
    with pytest.raises(UserError, match="GRU"):
        HIST(d_feat=3, hidden_size=8, base_model="GRU", encoder_checkpoint=path)


def test_fewer_layers_is_refused(tmp_path):
    path = _save(tmp_path, RNNBaseline(num_layers=1))
    with pytest.raises(UserError, match="missing encoder weight 'rnn.weight_ih_l1'"):
        HIST(d_feat=3, hidden_size=8, encoder_checkpoint=path)


def test_missing_file_no_rnn_keys_and_garbage_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        HIST(encoder_checkpoint=tmp_path / "nope.pt")
    path = _save(tmp_path, nn.Linear(3, 1), "linear.pt")
    with pytest.raises(UserError, match="no 'rnn"):
        HIST(d_feat=3, hidden_size=8, encoder_checkpoint=path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a torch state_dict"):
        HIST(encoder_checkpoint=garbage)
