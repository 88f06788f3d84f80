"""HIST, step by step on tiny hand-checkable inputs (SPEC §2)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from conceptalpha.errors import UserError
from conceptalpha.models.fast_gru import gru_last_state
from conceptalpha.models.hist import HIST, attention_entropy, member_attention, membership_links, top_k_similar
from conceptalpha.models.ops import cosine_similarity_matrix, unit_rows


def _model(**kwargs) -> HIST:
    torch.manual_seed(0)
    return HIST(d_feat=3, hidden_size=8, **kwargs)


def _day(n: int = 6, c: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, 3, generator=gen)
    membership = (torch.rand(n, c, generator=gen) < 0.5).float()
    membership[0, 0] = 1.0
    cap = torch.rand(n, generator=gen) * 10 + 1
    return x, membership, cap


def test_concept_vectors_are_market_cap_weighted_means_and_weights_sum_to_one():
    model = _model(correction=False)
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [4.0, 4.0]])
    membership = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    cap = torch.tensor([1.0, 3.0, 1.0])
    links = membership_links(membership, 3, e.device)
    ids, u = model.concept_vectors(e, links, cap)
    assert ids.tolist() == [0, 2]  # concept 1 has no member today: dropped
    torch.testing.assert_close(u[0], (1 * e[0] + 3 * e[1]) / 4)
    torch.testing.assert_close(u[1], (3 * e[1] + 1 * e[2]) / 4)
    # A constant encoding is reproduced exactly only if the weights sum to 1.
    ones = torch.ones(3, 2)
    torch.testing.assert_close(model.concept_vectors(ones, links, cap)[1], torch.ones(2, 2))


def test_denominator_plus_one_option_reproduces_reference_weights():
    model = _model(correction=False, denominator_plus_one=True)
    e = torch.ones(2, 2)
    links = membership_links(torch.ones(2, 1), 2, e.device)
    _, u = model.concept_vectors(e, links, torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(u, torch.full((1, 2), 4.0 / 5.0))


def test_non_positive_market_caps_weigh_zero_and_equal_weighting_ignores_caps():
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    links = membership_links(torch.ones(2, 1), 2, e.device)
    _, u = _model(correction=False).concept_vectors(e, links, torch.tensor([float("nan"), 2.0]))
    torch.testing.assert_close(u, e[1:])
    _, u = _model(correction=False, concept_weighting="equal").concept_vectors(e, links, None)
    torch.testing.assert_close(u, torch.tensor([[0.5, 0.5]]))


def test_correction_is_softmax_over_all_stocks_of_dot_products():
    model = _model(correction=True)
    e = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    links = membership_links(torch.tensor([[1.0], [0.0], [0.0]]), 3, e.device)
    _, u = model.concept_vectors(e, links, torch.ones(3))
    u0 = e[0]
    a = torch.softmax(e @ u0, dim=0)  # over stocks, members or not
    torch.testing.assert_close(u[0], (a[:, None] * e).sum(0))


def test_top_k_links_exclude_self_and_pick_most_similar():
    h = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.1]])
    links = top_k_similar(unit_rows(h), 1)
    assert links[:, 0].tolist() == [1, 0, 1, 2]
    links2 = top_k_similar(unit_rows(h), 2)
    assert links2[0].tolist() == [1, 2]
    assert top_k_similar(unit_rows(h[:1]), 1).shape == (1, 0)


def test_hidden_concepts_keep_only_chosen_stocks_with_self_weight_one():
    h = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.1]])
    h_unit = unit_rows(h)
    links = top_k_similar(h_unit, 1)  # 0→1, 1→0, 2→1, 3→2
    concepts, v = HIST.hidden_concept_vectors(h, h_unit, links)
    assert concepts.tolist() == [0, 1, 2]  # stock 3 chosen by nobody: pruned
    cos = cosine_similarity_matrix(h, h)
    torch.testing.assert_close(v[0], h[0] + cos[1, 0] * h[1])
    torch.testing.assert_close(v[1], h[1] + cos[0, 1] * h[0] + cos[2, 1] * h[2])
    torch.testing.assert_close(v[2], h[2] + cos[3, 2] * h[3])


def test_stock_to_concept_attention_weights_sum_to_one():
    model = _model()
    x, membership, cap = _day()
    parts = model.parts(model.encode(x), membership, cap)
    beta = torch.softmax(cosine_similarity_matrix(parts.encoding, parts.concept_vectors), dim=1)
    torch.testing.assert_close(beta.sum(1), torch.ones(len(x)))
    explanation = model.explain(x, membership, cap, top=len(parts.concept_ids))
    np.testing.assert_allclose(explanation.top_concept_weights.sum(1).numpy(), 1.0, rtol=1e-5)


def test_explain_decomposition_adds_up_to_forward_output():
    model = _model(K=2)
    x, membership, cap = _day(n=9, c=5)
    with torch.no_grad():
        out = model(x, membership.to_sparse(), cap).numpy()
    ex = model.explain(x, membership, cap, top=2)
    np.testing.assert_allclose(ex.prediction.numpy(), out, rtol=1e-6, atol=1e-6)
    parts_sum = (ex.predefined + ex.hidden + ex.individual + ex.bias).numpy()
    np.testing.assert_allclose(parts_sum, out, rtol=1e-5, atol=1e-6)
    assert ex.top_concepts.shape == (9, 2) and ex.hidden_neighbours.shape == (9, 2)
    assert (ex.hidden_neighbours != torch.arange(9)[:, None]).all()
    frame = ex.to_frame([f"S{i}" for i in range(9)], [f"c{k}" for k in range(5)])
    assert list(frame.columns[:6]) == ["instrument", "prediction", "predefined", "hidden", "individual", "bias"]
    assert frame.top_concepts[0][0][0].startswith("c")


@pytest.mark.parametrize("layout", ["dense", "coo", "csr", "scipy"])
def test_membership_layouts_give_identical_output(layout):
    model = _model()
    x, membership, cap = _day(n=12, c=6, seed=3)
    as_layout = {
        "dense": lambda m: m,
        "coo": lambda m: m.to_sparse(),
        "csr": lambda m: m.to_sparse_csr(),
        "scipy": lambda m: sp.csr_matrix(m.numpy()),
    }[layout]
    with torch.no_grad():
        expected = model(x, membership, cap)
        got = model(x, as_layout(membership), cap)
    assert torch.equal(expected, got)


def test_zero_vectors_single_stock_and_no_concepts_stay_finite():
    model = _model()
    x, membership, cap = _day()
    x_zero = torch.zeros_like(x)
    for args in [(x_zero, membership, cap), (x[:1], membership[:1], cap[:1]), (x, None, cap), (x, torch.zeros(6, 4), cap)]:
        model.zero_grad()
        out = model(*args)
        assert out.shape == (len(args[0]),)
        out.sum().backward()
        assert torch.isfinite(out).all()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model(x[:0], membership[:0], cap[:0]).shape == (0,)


def test_hidden_size_and_dropout_are_honoured():
    model = HIST(d_feat=3, hidden_size=16, dropout=0.5)
    assert model.rnn.hidden_size == 16 and model.rnn.dropout == 0.5
    assert model.fc_out.in_features == 16


def test_flat_qlib_layout_matches_sequence_layout():
    model = _model()
    x, membership, cap = _day()
    flat = x.transpose(1, 2).reshape(len(x), -1)  # field-major, oldest first
    with torch.no_grad():
        assert torch.equal(model(flat, membership, cap), model(x, membership, cap))


def test_forward_days_matches_day_by_day():
    model = _model()
    days = [_day(n=n, seed=n) for n in (5, 8, 1)]
    with torch.no_grad():
        together = model.forward_days([d[0] for d in days], [d[1] for d in days], [d[2] for d in days])
        for got, (x, m, c) in zip(together, days):
            torch.testing.assert_close(got, model(x, m, c), rtol=1e-5, atol=1e-6)


def test_fast_cpu_gru_matches_torch_gru_values_and_gradients():
    torch.manual_seed(1)
    rnn = torch.nn.GRU(3, 8, 2, batch_first=True)
    x = torch.randn(7, 5, 3, requires_grad=True)
    expected = rnn(x)[0][:, -1]
    expected_grads = torch.autograd.grad(expected.pow(3).sum(), [x, *rnn.parameters()])
    got = gru_last_state(rnn, x)
    got_grads = torch.autograd.grad(got.pow(3).sum(), [x, *rnn.parameters()])
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="base_model"):
        HIST(base_model="RNN")
    with pytest.raises(UserError, match="K"):
        HIST(K=0)


def test_k_larger_than_the_cross_section_links_to_everyone_else():
    model = _model(K=5)
    x, membership, cap = _day(n=3)
    parts = model.parts(model.encode(x), membership, cap)
    assert parts.hidden_links.shape == (3, 2)
    assert parts.hidden_concepts.tolist() == [0, 1, 2]
    assert torch.isfinite(model(x, membership, cap)).all()


def test_member_attention_pools_only_over_own_concepts():
    """concept_attention="members": β sums to 1 over each stock's own concepts and is 0 elsewhere."""
    torch.manual_seed(0)
    membership = sp.csr_matrix(
        np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=np.float32)
    )  # stock 3 has no concept
    model = HIST(d_feat=2, hidden_size=4, num_layers=1, concept_attention="members", correction=False)
    x = torch.randn(4, 5, 2)
    e = model.encode(x)
    links = membership_links(membership, 4, e.device)
    concept_ids, u = model.concept_vectors(e, links, torch.ones(4))
    rows, cols, beta = member_attention(e, u, links, concept_ids)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 0), (0, 1), (1, 1), (2, 2)]
    per_stock = torch.zeros(4).index_add(0, rows, beta)
    assert torch.allclose(per_stock, torch.tensor([1.0, 1.0, 1.0, 0.0]))
    expected = torch.softmax(torch.nn.functional.cosine_similarity(e[0:1], u[:2]), dim=0)
    assert torch.allclose(beta[rows == 0], expected, atol=1e-6)
    out = model(x, membership, torch.ones(4))
    assert torch.isfinite(out).all()
    ex = model.explain(x, membership, torch.ones(4), top=3)
    assert torch.allclose(ex.predefined + ex.hidden + ex.individual + ex.bias, ex.prediction, atol=1e-5)
    assert ex.top_concepts[1].tolist() == [1, -1, -1]  # only its own concept, padded
    assert ex.top_concepts[3].tolist() == [-1, -1, -1]


def test_concept_attention_default_is_the_spec():
    assert HIST().concept_attention == "all"
    with pytest.raises(UserError, match="concept_attention"):
        HIST(concept_attention="some")


def test_attention_entropy_is_one_when_uniform_and_zero_when_one_hot():
    beta = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.0, 1.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0] * 4])
    attended = torch.tensor([4, 4, 2, 1, 0])  # row 2 attended over its own 2 concepts (members)
    entropy, norm = attention_entropy(beta, attended)
    torch.testing.assert_close(entropy[:4], torch.tensor([np.log(4), 0.0, np.log(2), 0.0], dtype=torch.float32))
    torch.testing.assert_close(norm[:3], torch.tensor([1.0, 0.0, 1.0]))
    assert torch.isnan(norm[3]) and torch.isnan(norm[4]) and torch.isnan(entropy[4])


@pytest.mark.parametrize("attention", ["all", "members"])
def test_explain_reports_the_entropy_of_the_attention_the_forward_pass_used(attention):
    model = _model(concept_attention=attention)
    x, membership, cap = _day(n=9, c=5)
    ex = model.explain(x, membership, cap, top=5)
    with torch.no_grad():
        parts = model.parts(model.encode(x), membership, cap)
    n_concepts = len(parts.concept_ids)
    if attention == "all":
        beta = torch.softmax(cosine_similarity_matrix(parts.encoding, parts.concept_vectors), dim=1)
        attended = torch.full((9,), n_concepts)
    else:
        own = membership[:, parts.concept_ids] > 0
        logits = cosine_similarity_matrix(parts.encoding, parts.concept_vectors).masked_fill(~own, -torch.inf)
        beta = torch.nan_to_num(torch.softmax(logits, dim=1))
        attended = own.sum(1)
    expected = -(beta * torch.log(beta.clamp_min(1e-30))).sum(1)
    has = attended > 1
    torch.testing.assert_close(ex.attention_entropy_norm[has], (expected / torch.log(attended.float()))[has], atol=1e-5, rtol=1e-5)
    assert torch.isnan(ex.attention_entropy_norm[~has]).all()
    assert (ex.attention_entropy_norm[has] > 0).all() and (ex.attention_entropy_norm[has] <= 1 + 1e-6).all()
    frame = ex.to_frame()
    np.testing.assert_allclose(frame["attention_entropy"], ex.attention_entropy.numpy())
