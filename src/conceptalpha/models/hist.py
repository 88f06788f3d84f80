"""HIST (Xu et al. 2021): stock encoder + predefined-concept, hidden-concept and
individual modules, exactly as SPEC §2 describes, on CPU or GPU.

Shapes per trading day: N stocks, T window days, F fields, H hidden size,
C predefined concepts. Concept membership is sparse: only its nnz links are
ever touched, and the hidden-concept similarity is searched in row blocks, so
no N×N matrix is built when N is large.

Reference-code behaviours that change results are options (defaults = SPEC):

- ``correction`` (default True): the similarity correction of the initial
  concept vectors, ``U ← softmax_stocks(E U₀ᵀ)ᵀ E`` (HIST's released code).
- ``denominator_plus_one`` (default False): the released code divides the
  member weights by ``Σ m + 1``, so they do not sum to 1.
- ``K`` (default 1, the paper): how many most-similar other stocks each stock
  links to in the hidden-concept module (the released code hard-codes 1).
- ``concept_weighting`` (default "market_cap"): "equal" reproduces Qlib's
  port, which weights concept members equally and has no market cap.

A deliberate deviation, off by default:

- ``concept_attention`` (default "all", SPEC §2 and the paper): β_ik is a
  softmax over all of the day's concepts. "members" restricts it to the
  stock's own concepts (a softmax over its membership links, O(links)). On
  the synthetic market the "all" attention is nearly uniform and the
  predefined part carries almost no cross-sectional signal; "members" (with
  ``correction=False``, ``concept_weighting="equal"``) makes it carry it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from conceptalpha.errors import UserError
from conceptalpha.models.ops import softmax_attention, unit_rows
from conceptalpha.models.rnn import RNNType, as_sequence, last_state, make_rnn

#: Default bound on the size of one block of the hidden-concept similarity
#: (rows × N float32 elements, 4 MiB); below it the search is one dense block.
#: Small blocks in one reused array stay in cache; a fresh N×N matrix costs
#: more to allocate and first touch than the product that fills it.
SIMILARITY_BLOCK_ELEMENTS = 1 << 20


@dataclass
class ConceptLinks:
    """A day's membership as coalesced links: stock ``rows[l]`` ∈ concept ``cols[l]`` with weight ``values[l]``."""

    rows: torch.Tensor
    cols: torch.Tensor
    values: torch.Tensor
    num_concepts: int


@dataclass
class HISTParts:
    """Intermediate tensors of one day's forward pass (all [N, H] unless stated)."""

    encoding: torch.Tensor
    p_back: torch.Tensor
    p_fore: torch.Tensor
    q_back: torch.Tensor
    q_fore: torch.Tensor
    r_fore: torch.Tensor
    concept_ids: torch.Tensor  # [C'] original indices of the concepts kept today
    concept_vectors: torch.Tensor  # [C', H] (after correction)
    hidden_links: torch.Tensor  # [N, K'] each stock's most similar other stocks
    hidden_concepts: torch.Tensor  # [C_h] stock indices that became hidden concepts
    hidden_vectors: torch.Tensor  # [C_h, H]
    residual_h: torch.Tensor  # h = e − p_back


@dataclass
class HISTExplanation:
    """Additive split of each prediction and the concepts behind it (CPU tensors, one row per stock).

    ``prediction = predefined + hidden + individual + bias`` exactly up to float rounding.
    ``top_concepts`` [N, k] are original concept column indices ranked by the
    attention weight β_ik (``top_concept_weights``), −1 where fewer concepts exist;
    ``hidden_neighbours`` [N, K] are the other stocks (row indices) each stock
    links to in the hidden-concept module with cosine ``hidden_similarity``.
    ``attention_entropy`` [N] is H_i = −Σ_k β_ik log β_ik over the concepts the
    stock attended (all of the day's concepts, or its own with
    ``concept_attention="members"``); ``attention_entropy_norm`` = H_i / log n_i
    with n_i that count: 1 = flat attention, 0 = all on one concept; NaN where
    n_i < 2 (nothing to spread over).
    """

    prediction: torch.Tensor
    predefined: torch.Tensor
    hidden: torch.Tensor
    individual: torch.Tensor
    bias: float
    top_concepts: torch.Tensor
    top_concept_weights: torch.Tensor
    hidden_neighbours: torch.Tensor
    hidden_similarity: torch.Tensor
    attention_entropy: torch.Tensor
    attention_entropy_norm: torch.Tensor

    def to_frame(self, instruments=None, concept_names=None):
        """A DataFrame with one row per stock; names replace indices when given."""
        import pandas as pd

        n = len(self.prediction)
        instruments = np.asarray(instruments if instruments is not None else np.arange(n))
        names = np.asarray(concept_names) if concept_names is not None else None

        def concept_label(k: int):
            return None if k < 0 else (names[k] if names is not None else int(k))

        frame = pd.DataFrame(
            {
                "instrument": instruments,
                "prediction": self.prediction.numpy(),
                "predefined": self.predefined.numpy(),
                "hidden": self.hidden.numpy(),
                "individual": self.individual.numpy(),
                "bias": self.bias,
                "attention_entropy": self.attention_entropy.numpy(),
                "attention_entropy_norm": self.attention_entropy_norm.numpy(),
            }
        )
        frame["top_concepts"] = [
            [(concept_label(k), w) for k, w in zip(ks, ws) if k >= 0]
            for ks, ws in zip(self.top_concepts.tolist(), self.top_concept_weights.tolist())
        ]
        frame["hidden_neighbours"] = [
            [(instruments[j], s) for j, s in zip(js, ss)]
            for js, ss in zip(self.hidden_neighbours.tolist(), self.hidden_similarity.tolist())
        ]
        return frame


def member_attention(
    e: torch.Tensor, u: torch.Tensor, links: ConceptLinks, concept_ids: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """β_ik = softmax over the stock's *own* concepts of cos(e_i, u_k), on membership links only.

    Returns (stock rows, rows of U, β) per kept link, O(links) memory; each
    stock's β sums to 1 over its concepts (a stock with none has no links).
    """
    n = e.shape[0]
    position = torch.full((links.num_concepts,), -1, dtype=torch.long, device=e.device)
    position[concept_ids] = torch.arange(len(concept_ids), device=e.device)
    kept = position[links.cols] >= 0
    rows, cols = links.rows[kept], position[links.cols[kept]]
    logits = (unit_rows(e)[rows] * unit_rows(u)[cols]).sum(-1)
    shift = logits.new_full((n,), float("-inf")).scatter_reduce(0, rows, logits, "amax").detach()
    weights = torch.exp(logits - shift[rows])
    return rows, cols, weights / e.new_zeros(n).index_add(0, rows, weights)[rows]


def membership_links(membership: Any, n: int, device: torch.device) -> ConceptLinks:
    """Turn a membership matrix [N, C] (torch sparse COO/CSR, dense tensor,
    scipy sparse or numpy, or None) into :class:`ConceptLinks` on ``device``."""
    if membership is None:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return ConceptLinks(empty, empty, torch.zeros(0, device=device), 0)
    if not isinstance(membership, torch.Tensor):
        membership = _tensor_from_array(membership)
    if membership.shape[0] != n:
        raise ValueError(f"membership has {membership.shape[0]} rows but the day has {n} stocks")
    if membership.layout == torch.strided:
        membership = membership.to_sparse()
    elif membership.layout != torch.sparse_coo:
        membership = membership.to_sparse_coo()
    membership = membership.coalesce().to(device)
    rows, cols = membership.indices()
    values = membership.values().to(torch.float32)
    nonzero = values != 0
    return ConceptLinks(rows[nonzero], cols[nonzero], values[nonzero], int(membership.shape[1]))


def _tensor_from_array(membership: Any) -> torch.Tensor:
    if hasattr(membership, "tocoo"):
        coo = membership.tocoo()
        indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
        values = torch.from_numpy(coo.data.astype(np.float32))
        return torch.sparse_coo_tensor(indices, values, coo.shape, check_invariants=False)
    return torch.as_tensor(np.asarray(membership, dtype=np.float32))


@torch.no_grad()
def top_k_similar(h_unit: torch.Tensor, k: int, block_rows: int | None = None) -> torch.Tensor:
    """Indices [N, k] of each row's k most cosine-similar *other* rows.

    ``h_unit`` [N, H] has unit (or zero) rows, so ``h_unit @ h_unitᵀ`` is the
    cosine matrix. It is computed ``block_rows`` rows at a time ([block, N]),
    never all N×N at once when N is large; the diagonal is excluded. One block
    (``block_rows ≥ N``) is the dense computation: both give identical indices.
    """
    n = h_unit.shape[0]
    k = min(k, n - 1)
    if k <= 0:
        return torch.zeros(n, 0, dtype=torch.long, device=h_unit.device)
    block = min(n, block_rows or max(1, SIMILARITY_BLOCK_ELEMENTS // n))
    links = torch.empty(n, k, dtype=torch.long, device=h_unit.device)
    scratch = h_unit.new_empty(block, n)
    for start in range(0, n, block):
        stop = min(start + block, n)
        similarity = torch.mm(h_unit[start:stop], h_unit.T, out=scratch[: stop - start])
        local = torch.arange(stop - start, device=h_unit.device)
        similarity[local, local + start] = -torch.inf
        links[start:stop] = similarity.topk(k, dim=1).indices
    return links


class HIST(nn.Module):
    """HIST over one day's cross-section: ``forward(x, membership, market_cap) -> [N]``.

    x: [N, T, F] (oldest day first) or Qlib's flat [N, F·T] (field-major);
    membership: [N, C] stock→concept matrix, torch sparse (COO/CSR) or dense;
    market_cap: [N]. Non-finite or non-positive market caps weigh 0; a concept
    whose members all weigh 0 (or have none) is dropped for the day.
    """

    def __init__(
        self,
        d_feat: int = 6,
        hidden_size: int = 64,
        num_layers: int = 2,
        K: int = 1,
        dropout: float = 0.0,
        base_model: RNNType = "GRU",
        correction: bool = True,
        denominator_plus_one: bool = False,
        concept_weighting: Literal["market_cap", "equal"] = "market_cap",
        concept_attention: Literal["all", "members"] = "all",
        similarity_block_rows: int | None = None,
        encoder_checkpoint: str | Path | None = None,
    ):
        super().__init__()
        if base_model not in ("GRU", "LSTM"):
            raise UserError(f"HIST base_model must be 'GRU' or 'LSTM', got {base_model!r}")
        if concept_weighting not in ("market_cap", "equal"):
            raise UserError(f"HIST concept_weighting must be 'market_cap' or 'equal', got {concept_weighting!r}")
        if concept_attention not in ("all", "members"):
            raise UserError(f"HIST concept_attention must be 'all' or 'members', got {concept_attention!r}")
        if K < 1:
            raise UserError(f"HIST K must be ≥ 1, got {K}")
        self.d_feat = d_feat
        self.hidden_size = hidden_size
        self.K = K
        self.base_model = base_model
        self.correction = correction
        self.denominator_plus_one = denominator_plus_one
        self.concept_weighting = concept_weighting
        self.concept_attention = concept_attention
        self.similarity_block_rows = similarity_block_rows
        self.rnn = make_rnn(base_model, d_feat, hidden_size, num_layers, dropout)
        self.fc_es = self._linear(hidden_size)
        self.fc_es_back = self._linear(hidden_size)
        self.fc_es_fore = self._linear(hidden_size)
        self.fc_is = self._linear(hidden_size)
        self.fc_is_back = self._linear(hidden_size)
        self.fc_is_fore = self._linear(hidden_size)
        self.fc_indi = self._linear(hidden_size)
        self.fc_out = nn.Linear(hidden_size, 1)
        self.leaky_relu = nn.LeakyReLU()
        if encoder_checkpoint is not None:
            self.load_encoder(encoder_checkpoint)

    @staticmethod
    def _linear(size: int) -> nn.Linear:
        layer = nn.Linear(size, size)
        nn.init.xavier_uniform_(layer.weight)
        return layer

    # ----------------------------------------------------------------- encoder
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """e = last hidden state of the recurrent encoder: x [N, T, F] (or flat [N, F·T]) → [N, H]."""
        return last_state(self.rnn, as_sequence(x, self.d_feat))

    def load_encoder(self, path: str | Path) -> None:
        """Initialise ``rnn`` from a trained GRU/LSTM ``state_dict`` file (keys ``rnn.*``)."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: encoder checkpoint not found")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unreadable file is the user's input problem
            raise UserError(f"{path}: not a torch state_dict ({type(exc).__name__}: {exc})") from None
        if not isinstance(state, dict):
            raise UserError(f"{path}: expected a state_dict (dict of tensors), got {type(state).__name__}")
        encoder = {k[len("rnn.") :]: v for k, v in state.items() if isinstance(k, str) and k.startswith("rnn.")}
        if not encoder:
            raise UserError(f"{path}: no 'rnn.*' weights; expected the best.pt of a trained GRU/LSTM model")
        own = self.rnn.state_dict()
        for key, expected in own.items():
            if key not in encoder:
                raise UserError(
                    f"{path}: missing encoder weight 'rnn.{key}' (HIST encoder is a {self.base_model} with "
                    f"hidden_size={self.hidden_size}, num_layers={self.rnn.num_layers}, d_feat={self.d_feat})"
                )
            if tuple(encoder[key].shape) != tuple(expected.shape):
                raise UserError(
                    f"{path}: encoder weight 'rnn.{key}' has shape {tuple(encoder[key].shape)}, HIST's "
                    f"{self.base_model}(d_feat={self.d_feat}, hidden_size={self.hidden_size}) needs "
                    f"{tuple(expected.shape)}"
                )
        extra = sorted(set(encoder) - set(own))
        if extra:
            raise UserError(f"{path}: encoder has weights HIST's {self.base_model} lacks: rnn.{extra[0]}")
        self.rnn.load_state_dict(encoder)

    # ----------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor, membership: Any = None, market_cap: torch.Tensor | None = None) -> torch.Tensor:
        """ŷ [N] for one day."""
        if x.shape[0] == 0:
            return x.new_zeros(0)
        return self.head(self.encode(x), membership, market_cap)

    def forward_days(self, xs: list[torch.Tensor], memberships: list, market_caps: list) -> list[torch.Tensor]:
        """Several days at once: one encoder pass over all their stocks, concept modules per day."""
        encodings = self.encode(torch.cat(xs)).split([len(x) for x in xs])
        return [self.head(e, m, c) for e, m, c in zip(encodings, memberships, market_caps)]

    def head(self, encoding: torch.Tensor, membership: Any, market_cap: torch.Tensor | None) -> torch.Tensor:
        """Concept and individual modules + output layer on encodings [N, H] → ŷ [N]."""
        parts = self.parts(encoding, membership, market_cap)
        return self.fc_out(parts.p_fore + parts.q_fore + parts.r_fore).reshape(-1)

    def parts(self, e: torch.Tensor, membership: Any, market_cap: torch.Tensor | None) -> HISTParts:
        """All intermediate tensors of SPEC §2 steps 2–4 for encodings e [N, H]."""
        links = membership_links(membership, e.shape[0], e.device)
        concept_ids, u = self.concept_vectors(e, links, market_cap)
        if self.concept_attention == "all":
            s = softmax_attention(unit_rows(e), unit_rows(u), u)  # Σ_k softmax_k cos(e_i, u_k) u_k
        else:
            rows, cols, beta = member_attention(e, u, links, concept_ids)
            s = u.new_zeros(e.shape[0], u.shape[1]).index_add(0, rows, beta[:, None] * u[cols])
        p = self.fc_es(s)
        p_back, p_fore = self.fc_es_back(p), self.leaky_relu(self.fc_es_fore(p))

        h = e - p_back
        h_unit = unit_rows(h)
        hidden_links = top_k_similar(h_unit, self.K, self.similarity_block_rows)
        hidden_concepts, v = self.hidden_concept_vectors(h, h_unit, hidden_links)
        q = self.fc_is(softmax_attention(h_unit, unit_rows(v), v))
        q_back, q_fore = self.fc_is_back(q), self.leaky_relu(self.fc_is_fore(q))

        r_fore = self.leaky_relu(self.fc_indi(e - p_back - q_back))
        return HISTParts(e, p_back, p_fore, q_back, q_fore, r_fore, concept_ids, u, hidden_links, hidden_concepts, v, h)

    def concept_vectors(
        self, e: torch.Tensor, links: ConceptLinks, market_cap: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predefined concept vectors of the concepts with members today: (ids [C'], U [C', H]).

        ``u_k = Σ_i M_ik m_i e_i / Σ_i M_ik m_i`` (denominator + 1 with
        ``denominator_plus_one``), then, with ``correction``,
        ``u_k ← Σ_i softmax_i(e_i·u_k) e_i`` over all N stocks.
        """
        weight = links.values * self.stock_weights(e, market_cap)[links.rows]
        total = e.new_zeros(links.num_concepts).index_add(0, links.cols, weight)
        concept_ids = torch.nonzero(total > 0).reshape(-1)
        weighted_sum = e.new_zeros(links.num_concepts, e.shape[1]).index_add(0, links.cols, weight[:, None] * e[links.rows])
        denominator = total[concept_ids] + (1.0 if self.denominator_plus_one else 0.0)
        u = weighted_sum[concept_ids] / denominator[:, None]
        if self.correction:
            u = softmax_attention(u, e, e)
        return concept_ids, u

    def stock_weights(self, e: torch.Tensor, market_cap: torch.Tensor | None) -> torch.Tensor:
        """m_i [N]: market caps (non-finite or ≤ 0 → 0), or ones with ``concept_weighting="equal"``."""
        if self.concept_weighting == "equal":
            return e.new_ones(e.shape[0])
        if market_cap is None:
            raise ValueError("HIST with concept_weighting='market_cap' needs market_cap")
        m = torch.as_tensor(market_cap, dtype=e.dtype, device=e.device).reshape(-1)
        return torch.where(torch.isfinite(m) & (m > 0), m, torch.zeros_like(m))

    @staticmethod
    def hidden_concept_vectors(
        h: torch.Tensor, h_unit: torch.Tensor, hidden_links: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden concepts (stock indices [C_h]) and vectors v [C_h, H].

        Stock i links to each c in ``hidden_links[i]`` with weight S_ic = cos(h_i, h_c);
        every chosen c is a hidden concept that also keeps itself (S_cc = 1):
        ``v_c = h_c + Σ_{i→c} S_ic h_i``. Unchosen stocks are pruned.
        """
        n, k = hidden_links.shape
        sources = torch.arange(n, device=h.device).repeat_interleave(k)
        targets = hidden_links.reshape(-1)
        similarity = (h_unit[sources] * h_unit[targets]).sum(1)
        hidden_concepts = torch.unique(targets)
        v = h.index_add(0, targets, similarity[:, None] * h[sources])
        return hidden_concepts, v[hidden_concepts]

    # ----------------------------------------------------------------- explain
    @torch.no_grad()
    def explain(
        self, x: torch.Tensor, membership: Any = None, market_cap: torch.Tensor | None = None, top: int = 3
    ) -> HISTExplanation:
        """Split each prediction into predefined-concept, hidden-concept and individual parts.

        ŷ_i = w·p_fore_i + w·q_fore_i + w·r_fore_i + b (the output layer is linear),
        plus each stock's ``top`` predefined concepts by β_ik, the entropy of its β_i·
        and its hidden-concept neighbours.
        """
        parts = self.parts(self.encode(x), membership, market_cap)
        links = membership_links(membership, parts.encoding.shape[0], parts.encoding.device)
        w, b = self.fc_out.weight[0], self.fc_out.bias[0]
        predefined, hidden, individual = parts.p_fore @ w, parts.q_fore @ w, parts.r_fore @ w
        prediction = self.fc_out(parts.p_fore + parts.q_fore + parts.r_fore).reshape(-1)
        beta, attended = self._attention(parts, links)
        top_ids, top_weights = _top_concepts(beta, parts.concept_ids, top)
        entropy, entropy_norm = attention_entropy(beta, attended)
        neighbours = parts.hidden_links
        neighbour_similarity = (unit_rows(parts.residual_h)[:, None, :] * unit_rows(parts.residual_h)[neighbours]).sum(-1)
        return HISTExplanation(
            prediction=prediction.cpu(),
            predefined=predefined.cpu(),
            hidden=hidden.cpu(),
            individual=individual.cpu(),
            bias=float(b),
            top_concepts=top_ids.cpu(),
            top_concept_weights=top_weights.cpu(),
            hidden_neighbours=neighbours.cpu(),
            hidden_similarity=neighbour_similarity.cpu(),
            attention_entropy=entropy.cpu(),
            attention_entropy_norm=entropy_norm.cpu(),
        )

    def _attention(self, parts: HISTParts, links: ConceptLinks) -> tuple[torch.Tensor, torch.Tensor]:
        """The β [N, C'] the forward pass used (a dense view: explanation only, not the training path)
        and how many concepts each stock attended over [N]."""
        e, u, n = parts.encoding, parts.concept_vectors, parts.encoding.shape[0]
        if self.concept_attention == "all":
            beta = torch.softmax(unit_rows(e) @ unit_rows(u).T, dim=1) if len(u) else e.new_zeros(n, 0)
            return beta, torch.full((n,), len(u), dtype=torch.long, device=e.device)
        rows, cols, member_beta = member_attention(e, u, links, parts.concept_ids)
        beta = e.new_zeros(n, len(parts.concept_ids)).index_put_((rows, cols), member_beta)
        return beta, torch.bincount(rows, minlength=n)


def _top_concepts(beta: torch.Tensor, concept_ids: torch.Tensor, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each stock's ``top`` concepts by β [N, C']: original ids (−1 pad) and weights."""
    n = beta.shape[0]
    ids = torch.full((n, top), -1, dtype=torch.long, device=beta.device)
    weights = torch.zeros(n, top, device=beta.device)
    kept = min(top, len(concept_ids))
    if kept:
        best = beta.topk(kept, dim=1)
        real = best.values > 0
        ids[:, :kept] = torch.where(real, concept_ids[best.indices], -1)
        weights[:, :kept] = best.values
    return ids, weights


def attention_entropy(beta: torch.Tensor, attended: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy H_i = −Σ_k β_ik log β_ik of each row of β [N, C] (0·log 0 = 0) and H_i / log n_i.

    ``attended`` [N] is n_i, the number of concepts row i's softmax ran over.
    H is NaN where n_i = 0; the normalised entropy (1 = uniform, 0 = one-hot)
    is NaN where n_i < 2.
    """
    entropy = -torch.special.xlogy(beta, beta).sum(1)
    log_attended = torch.log(attended.to(entropy.dtype))
    return torch.where(attended > 0, entropy, torch.nan), torch.where(attended > 1, entropy / log_attended, torch.nan)
