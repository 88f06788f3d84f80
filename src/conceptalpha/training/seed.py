"""Seeding: the same seed gives the same run, bit for bit, on CPU."""

from __future__ import annotations

import os
import random

import numpy as np
import torch


def set_seed(seed: int) -> None:
    """Seed Python, numpy's global state and torch (CPU and CUDA); ask torch for deterministic kernels.

    ``warn_only=True``: an operation with no deterministic kernel warns instead
    of failing (CPU kernels used here are deterministic already). Deterministic
    mode would also fill every new tensor with NaN before use (a debugging aid
    against reads of uninitialised memory, which no kernel here makes); that
    is switched off: it writes every array twice.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, if CUDA is used
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False


def resolve_device(device: str) -> torch.device:
    """"auto" → CUDA when available, else CPU; anything else as torch spells it."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)
