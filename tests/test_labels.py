"""Label protocols: ids, values, the end of the data, and which closes each one uses."""

from __future__ import annotations

import numpy as np
import pytest

from conceptalpha.errors import UserError
from conceptalpha.evaluation.backtest import lag_for_label
from conceptalpha.features.labels import DEFAULT_LABEL, PAPER_LABEL, LabelSpec, parse_label, raw_label


@pytest.mark.parametrize(
    "text, spec",
    [("t+1->t+2", LabelSpec(1, 1)), ("t->t+1", LabelSpec(0, 1)), ("t+1->t+6", LabelSpec(1, 5)),
     ("t->t+20", LabelSpec(0, 20)), ("t+1→t+2", LabelSpec(1, 1))],
)
def test_parse(text, spec):
    assert parse_label(text) == spec
    assert parse_label(spec.id) == spec


def test_defaults():
    assert parse_label(DEFAULT_LABEL).id == "t+1->t+2" and parse_label(PAPER_LABEL).id == "t->t+1"


@pytest.mark.parametrize("bad", ["t+2->t+3", "t->t", "t+1->t+1", "next", "", "t-1->t"])
def test_unknown_ids_are_user_errors(bad):
    with pytest.raises(UserError, match="unknown label"):
        parse_label(bad)


def test_values_and_end_of_data():
    close = np.array([[10.0], [11.0], [12.1], [9.68], [10.0]], dtype=np.float32)
    tradable = raw_label(close, parse_label("t+1->t+2"))[:, 0]
    paper = raw_label(close, parse_label("t->t+1"))[:, 0]
    five = raw_label(close, parse_label("t->t+4"))[:, 0]
    np.testing.assert_allclose(tradable[:3], [12.1 / 11 - 1, 9.68 / 12.1 - 1, 10 / 9.68 - 1], atol=1e-6)
    assert np.isnan(tradable[3:]).all()
    np.testing.assert_allclose(paper[:4], [0.1, 0.1, 9.68 / 12.1 - 1, 10 / 9.68 - 1], atol=1e-6)
    assert np.isnan(paper[4])
    assert five[0] == pytest.approx(0.0, abs=1e-7) and np.isnan(five[1:]).all()
    assert tradable.dtype == np.float32


def test_tradable_label_never_uses_close_t():
    rng = np.random.default_rng(0)
    close = rng.uniform(5, 15, (30, 4)).astype(np.float32)
    spec = parse_label("t+1->t+2")
    base = raw_label(close, spec)
    for t in (0, 10, 27):
        moved = close.copy()
        moved[t] *= 1.7  # only close_t changes
        np.testing.assert_array_equal(raw_label(moved, spec)[t], base[t])
    paper_moved = close.copy()
    paper_moved[10] *= 1.7
    assert not np.array_equal(raw_label(paper_moved, parse_label("t->t+1"))[10], raw_label(close, parse_label("t->t+1"))[10])


def test_missing_close_gives_missing_label():
    close = np.array([[10.0], [np.nan], [12.0], [13.0]], dtype=np.float32)
    y = raw_label(close, parse_label("t+1->t+2"))[:, 0]
    assert np.isnan(y[0])  # base close_{t+1} missing
    assert y[1] == pytest.approx(13 / 12 - 1, rel=1e-6)
    assert np.isnan(y[2:]).all()


def test_masters_five_day_label_is_close_t5_over_close_t1():
    spec = parse_label("t+1->t+5")
    assert spec == LabelSpec(1, 4) and spec.reach == 5
    close = np.arange(10, 20, dtype=np.float32)[:, None]
    label = raw_label(close, spec)[:, 0]
    np.testing.assert_allclose(label[:5], [(t + 15) / (t + 11) - 1 for t in range(5)], rtol=1e-6)
    assert np.isnan(label[5:]).all()
    assert lag_for_label(spec.id) == 1  # the score of day t is traded at close t+1, where the label starts
