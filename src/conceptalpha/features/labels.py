"""Forward-return labels with an explicit protocol id.

A label id names the two closes it compares (adjusted closes):

- ``"t+1->t+{1+h}"`` (tradable, default ``"t+1->t+2"``): close_{t+1+h} / close_{t+1} − 1.
  The signal is known after close t and traded at close t+1 (Qlib's protocol).
- ``"t->t+{h}"`` (the paper's, ``"t->t+1"``): close_{t+h} / close_t − 1. It trades
  at the close the features already used, so it overstates what can be earned.

Days are trading days of the calendar; a close that is missing, or lies past
the end of the data, gives a NaN label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from conceptalpha.errors import UserError

DEFAULT_LABEL = "t+1->t+2"
PAPER_LABEL = "t->t+1"
_LABEL = re.compile(r"^t(?:\+(\d+))?->t\+(\d+)$")


@dataclass(frozen=True)
class LabelSpec:
    """close_{t+base+horizon} / close_{t+base} − 1; ``base`` is 1 (tradable) or 0 (paper)."""

    base: int
    horizon: int

    @property
    def id(self) -> str:
        start = "t" if self.base == 0 else f"t+{self.base}"
        return f"{start}->t+{self.base + self.horizon}"

    @property
    def reach(self) -> int:
        """How many trading days after t the label looks: base + horizon."""
        return self.base + self.horizon


def parse_label(spec: str) -> LabelSpec:
    """``"t+1->t+2"`` → LabelSpec(1, 1); ``"t->t+5"`` → LabelSpec(0, 5). Accepts ``→`` for ``->``."""
    text = str(spec).replace("→", "->").replace(" ", "")
    m = _LABEL.match(text)
    base = int(m.group(1)) if m and m.group(1) else 0
    if m is None or base not in (0, 1) or int(m.group(2)) <= base:
        raise UserError(
            f"unknown label {spec!r}: expected 't+1->t+{{1+h}}' (tradable, e.g. 't+1->t+2') "
            f"or 't->t+{{h}}' (paper, e.g. 't->t+1') with horizon h >= 1"
        )
    return LabelSpec(base=base, horizon=int(m.group(2)) - base)


def raw_label(close: np.ndarray, spec: LabelSpec) -> np.ndarray:
    """[D, N] adjusted close → [D, N] float32 forward return (NaN where a close is missing or past the data)."""
    close = close.astype(np.float32, copy=False)
    out = np.full(close.shape, np.nan, dtype=np.float32)
    d = len(close)
    if spec.reach < d:
        end = close[spec.reach :]
        start = close[spec.base : d - spec.horizon]
        with np.errstate(divide="ignore", invalid="ignore"):
            out[: d - spec.reach] = end / start - np.float32(1)
    return out
