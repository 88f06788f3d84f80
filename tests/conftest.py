"""Shared test fixtures.

Integration tests that read the real A-share data use ``shared_data``; they
skip cleanly when ``../shared/data`` (or ``$CONCEPTALPHA_SHARED_DATA``) is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CONCEPTALPHA_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "cn_csi300" / "calendars" / "day.txt").exists():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    """One torch thread: tiny test tensors gain nothing from more, and threads fight on 2 shared cores."""
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    yield
