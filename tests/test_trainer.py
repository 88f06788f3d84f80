"""The shared trainer on a tiny in-memory dataset with a planted signal."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import scipy.stats
import torch
from torch import nn

from conceptalpha.errors import UserError
from conceptalpha.features.daydata import DayData
from conceptalpha.features.processors import drop_extreme_labels
from conceptalpha.models.hist import HIST
from conceptalpha.training import TrainerConfig, TrainingDiverged, fit, predict, set_seed
from conceptalpha.training.trainer import average_state_dicts, daily_ic, segment_predictions

T, F, C = 5, 3, 4


@pytest.fixture(autouse=True)
def _one_thread():
    """Tensors here are tiny: extra threads only add synchronisation cost on a busy CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FakeDataset:
    """Days 0..29 train, 30..39 valid, 40..44 test; N varies by day; y = signal + noise."""

    label = "t+1->t+2"

    def __init__(self, seed: int = 0, inf_label_day: int | None = None):
        rng = np.random.default_rng(seed)
        self.dates = pd.bdate_range("2020-01-01", periods=45)
        self.records = []
        for t in range(45):
            n = int(rng.integers(15, 25))
            x = rng.standard_normal((n, T, F)).astype(np.float32)
            y = 0.3 * x[:, -1, 0] + 0.1 * rng.standard_normal(n)
            y_train = y.astype(np.float32).copy()
            y_train[rng.random(n) < 0.1] = np.nan
            if t == inf_label_day:
                y_train[0] = 3e38  # finite, but its squared error overflows
            self.records.append(
                DayData(
                    t=t,
                    date=self.dates[t],
                    instruments=np.array([f"SH{600000 + i}" for i in rng.choice(40, n, replace=False)]),
                    x=x,
                    y_train=y_train,
                    y_raw=y.astype(np.float32),
                    market_cap=(rng.random(n) * 100 + 1).astype(np.float32),
                )
            )

    def days(self, segment: str) -> list[int]:
        return {"train": list(range(30)), "valid": list(range(30, 40)), "test": list(range(40, 45))}[segment]

    def day(self, t: int) -> DayData:
        return self.records[t]


def concept_membership(day: DayData) -> sp.csr_matrix:
    codes = np.array([int(s[2:]) for s in day.instruments])
    return sp.csr_matrix((np.ones(len(codes)), (np.arange(len(codes)), codes % C)), shape=(len(codes), C))


def make_hist(seed: int = 0) -> HIST:
    set_seed(seed)
    return HIST(d_feat=F, hidden_size=8, dropout=0.1)


def config(**kwargs) -> TrainerConfig:
    base = dict(max_epochs=4, patience=10, lr=5e-3, average_last=2, show_progress=False, device="cpu")
    return TrainerConfig(**(base | kwargs))


def test_same_seed_gives_identical_predictions(tmp_path):
    data = FakeDataset()
    scores = []
    for run in ("a", "b"):
        model = make_hist()
        fit(model, data, concept_membership, config(), tmp_path / run)
        scores.append(predict(model, data, "test", concept_membership, device="cpu").score.to_numpy())
    np.testing.assert_array_equal(scores[0], scores[1])
    a, b = (torch.load(tmp_path / r / "best.pt", weights_only=True) for r in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_after_stop_equals_uninterrupted_run(tmp_path):
    data = FakeDataset()
    straight = make_hist()
    fit(straight, data, concept_membership, config(max_epochs=4), tmp_path / "straight")
    resumed = make_hist()
    fit(resumed, data, concept_membership, config(max_epochs=2), tmp_path / "resumed")
    result = fit(make_hist(seed=99), data, concept_membership, config(max_epochs=4), tmp_path / "resumed", resume=True)
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]
    straight_history = json.loads((tmp_path / "straight" / "history.json").read_text())
    assert [h["valid_ic"] for h in result.history] == [h["valid_ic"] for h in straight_history]


class CrashAtEpoch(HIST):
    """Simulates a killed process: raises inside epoch ``crash_at`` (before its checkpoint)."""

    def __init__(self, crash_at: int | None):
        super().__init__(d_feat=F, hidden_size=8, dropout=0.1)
        self.crash_at, self.epochs_done = crash_at, 0

    def on_epoch_end(self):
        self.epochs_done += 1
        if self.epochs_done == self.crash_at:
            raise KeyboardInterrupt


def test_kill_and_resume_reproduces_predictions(tmp_path):
    data = FakeDataset()
    set_seed(0)
    straight = CrashAtEpoch(None)
    fit(straight, data, concept_membership, config(), tmp_path / "straight")
    set_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(CrashAtEpoch(3), data, concept_membership, config(), tmp_path / "killed")
    resumed = CrashAtEpoch(None)
    fit(resumed, data, concept_membership, config(), tmp_path / "killed", resume=True)
    expected = predict(straight, data, "test", concept_membership, device="cpu")
    got = predict(resumed, data, "test", concept_membership, device="cpu")
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_fit_returns_the_selected_weights_validation_scores_also_after_resume(tmp_path):
    data = FakeDataset()
    model = make_hist()
    result = fit(model, data, concept_membership, config(max_epochs=3), tmp_path)
    expected = predict(model, data, "valid", concept_membership, device="cpu")
    pd.testing.assert_frame_equal(segment_predictions(data, "valid", result.valid_scores), expected, check_exact=True)
    finished = fit(make_hist(seed=5), data, concept_membership, config(max_epochs=3), tmp_path, resume=True)
    np.testing.assert_array_equal(finished.valid_scores, result.valid_scores)  # from the checkpoint
    with pytest.raises(ValueError, match="scores for the"):
        segment_predictions(data, "valid", result.valid_scores[1:])


def test_resume_with_a_different_config_is_a_user_error(tmp_path):
    data = FakeDataset()
    fit(make_hist(), data, concept_membership, config(max_epochs=1), tmp_path)
    with pytest.raises(UserError, match="lr"):
        fit(make_hist(), data, concept_membership, config(max_epochs=2, lr=1e-3), tmp_path, resume=True)


def test_a_checkpoint_from_before_an_option_existed_resumes_at_its_default(tmp_path):
    data = FakeDataset()
    fit(make_hist(), data, concept_membership, config(max_epochs=1), tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del checkpoint["config"]["drop_extreme_labels"]
    torch.save(checkpoint, tmp_path / "checkpoint.pt")
    result = fit(make_hist(), data, concept_membership, config(max_epochs=2), tmp_path, resume=True)
    assert [h["epoch"] for h in result.history] == [1, 2]
    with pytest.raises(UserError, match="drop_extreme_labels"):
        fit(make_hist(), data, concept_membership, config(max_epochs=3, drop_extreme_labels=0.1), tmp_path, resume=True)


def test_resume_without_checkpoint_starts_fresh(tmp_path):
    result = fit(make_hist(), FakeDataset(), concept_membership, config(max_epochs=1), tmp_path / "new", resume=True)
    assert result.history[0]["epoch"] == 1 and (tmp_path / "new" / "checkpoint.pt").exists()


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    data = FakeDataset(inf_label_day=7)
    with pytest.raises(TrainingDiverged, match=r"epoch 1 on day\(s\) " + str(data.dates[7].date())):
        fit(make_hist(), data, concept_membership, config(), tmp_path)


class ConstantSkill(nn.Module):
    """Predictions independent of its parameter: the validation IC never changes."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x, membership=None, market_cap=None):
        return x[:, -1, 0] + 0 * self.w


def test_early_stopping_after_patience_epochs_without_improvement(tmp_path):
    result = fit(ConstantSkill(), FakeDataset(), None, config(max_epochs=50, patience=3), tmp_path)
    assert result.stopped_early and result.best_epoch == 1
    assert len(result.history) == 4


def test_training_learns_the_planted_signal(tmp_path):
    data = FakeDataset()
    result = fit(make_hist(), data, concept_membership, config(max_epochs=6, lr=1e-2), tmp_path)
    assert result.best_valid_ic > 0.5
    frame = predict(HIST(d_feat=F, hidden_size=8), data, "test", concept_membership, device="cpu")
    assert list(frame.columns) == ["datetime", "instrument", "score", "label"]
    assert len(frame) == sum(data.day(t).n for t in data.days("test"))


def test_several_days_per_step_takes_fewer_optimiser_steps(tmp_path):
    data = FakeDataset()
    result = fit(make_hist(), data, concept_membership, config(max_epochs=2, days_per_step=4), tmp_path)
    assert np.isfinite(result.history[-1]["train_loss"])
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert int(checkpoint["optimizer"]["state"][0]["step"]) == 2 * 8  # 30 days / 4 per step → 8 steps


class CustomLoss(ConstantSkill):
    def __init__(self):
        super().__init__()
        self.calls, self.epochs = 0, 0

    def training_loss(self, batch):
        self.calls += 1
        assert set(batch) == {"x", "membership", "market_cap", "y", "t", "instruments", "market"}
        return (self.w - 2.0).pow(2).sum()

    def on_epoch_end(self):
        self.epochs += 1


def test_training_loss_and_epoch_hooks_are_used(tmp_path):
    model = CustomLoss()
    fit(model, FakeDataset(), None, config(max_epochs=2, lr=0.1), tmp_path)
    assert model.calls == 60 and model.epochs == 2


class LabelRecorder(ConstantSkill):
    """Records the labels each training step sees (its loss does not depend on them)."""

    def __init__(self):
        super().__init__()
        self.seen = {}

    def training_loss(self, batch):
        self.seen[batch["t"]] = batch["y"].numpy().copy()
        return (self.w - 2.0).pow(2).sum()


def test_drop_extreme_labels_changes_training_labels_only(tmp_path):
    data = FakeDataset()
    data.label_norm = "zscore"
    model = LabelRecorder()
    dropped = fit(model, data, None, config(max_epochs=1, drop_extreme_labels=0.2, select_on="train"), tmp_path / "a")
    assert sorted(model.seen) == data.days("train")
    for t, y in model.seen.items():
        original = data.day(t).y_train
        present = np.flatnonzero(np.isfinite(original))
        per_tail = int(len(present) * 0.1)
        order = present[np.argsort(original[present])]
        expected_gone = set(order[:per_tail]) | set(order[-per_tail:])
        assert per_tail >= 1 and set(np.flatnonzero(np.isnan(y))) == expected_gone | set(np.flatnonzero(np.isnan(original)))
        np.testing.assert_array_equal(y, drop_extreme_labels(original, 0.2, "zscore"))
        assert np.nanmean(y) == pytest.approx(0.0, abs=1e-5) and np.nanstd(y, ddof=1) == pytest.approx(1.0, abs=1e-5)
    kept = fit(LabelRecorder(), data, None, config(max_epochs=1, select_on="train"), tmp_path / "b")
    assert dropped.history[0]["valid_ic"] == kept.history[0]["valid_ic"]  # validation scores the untouched labels
    with pytest.raises(UserError, match="label_norm"):
        fit(LabelRecorder(), FakeDataset(), None, config(max_epochs=1, drop_extreme_labels=0.2), tmp_path / "c")


class MarketReader(nn.Module):
    """Scores = x[:, -1, 0] · (1 + market[0]·w): reads the day's market vector."""

    uses_market = True

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))
        self.markets = []

    def forward(self, x, membership=None, market_cap=None, market=None):
        self.markets.append(market)
        return x[:, -1, 0] * (1 + market[0] * self.w)


def test_a_model_that_uses_the_market_gets_the_days_vector(tmp_path):
    data = FakeDataset()
    for record in data.records:
        record.market = np.array([record.t / 100, 1.0], dtype=np.float32)
    model = MarketReader()
    fit(model, data, None, config(max_epochs=1), tmp_path)
    seen = {round(float(m[0]) * 100) for m in model.markets}
    assert seen == set(range(40)) and all(m.shape == (2,) for m in model.markets)


def test_average_state_dicts_and_daily_ic():
    states = [{"w": torch.tensor([1.0, 3.0]), "n": torch.tensor(1)}, {"w": torch.tensor([3.0, 5.0]), "n": torch.tensor(2)}]
    averaged = average_state_dicts(states)
    assert torch.equal(averaged["w"], torch.tensor([2.0, 4.0])) and int(averaged["n"]) == 2
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(50), rng.standard_normal(50)
    b[3] = np.nan
    ok = np.isfinite(b)
    assert daily_ic(a, b) == pytest.approx(scipy.stats.pearsonr(a[ok], b[ok])[0])
    assert np.isnan(daily_ic(np.ones(5), np.arange(5.0)))


def test_config_rejects_unknown_fields():
    with pytest.raises(ValueError):
        TrainerConfig(epochs=3)


def test_negative_ic_is_minus_the_pearson_correlation_and_ignores_scale():
    from conceptalpha.training.trainer import negative_ic

    rng = np.random.default_rng(0)
    p, y = rng.standard_normal(50), rng.standard_normal(50)
    expected = -scipy.stats.pearsonr(p, y)[0]
    got = negative_ic(torch.tensor(p), torch.tensor(y))
    assert got.item() == pytest.approx(expected, abs=1e-12)
    assert negative_ic(torch.tensor(3 * p + 7), torch.tensor(y)).item() == pytest.approx(expected, abs=1e-12)
    assert negative_ic(torch.ones(5), torch.arange(5.0)).item() == 0.0  # constant scores: no NaN


def test_ic_loss_trains_towards_the_signal_and_reproduces(tmp_path):
    data = FakeDataset()
    runs = []
    for run in ("a", "b"):
        model = make_hist()
        result = fit(model, data, concept_membership, config(loss="ic", max_epochs=3), tmp_path / run)
        runs.append(predict(model, data, "test", concept_membership, device="cpu").score.to_numpy())
    np.testing.assert_array_equal(runs[0], runs[1])
    assert result.best_valid_ic > 0.5  # y = 0.3·x + noise: the signal is easy to find
    mse = fit(make_hist(), data, concept_membership, config(max_epochs=1), tmp_path / "mse")
    ic = fit(make_hist(), data, concept_membership, config(loss="ic", max_epochs=1), tmp_path / "ic")
    assert mse.history[0]["train_loss"] > 0 > ic.history[0]["train_loss"]  # IC loss is minus a correlation


def test_ic_loss_is_refused_for_a_model_with_its_own_loss(tmp_path):
    with pytest.raises(UserError, match="own loss"):
        fit(LabelRecorder(), FakeDataset(), None, config(loss="ic"), tmp_path)
