"""Stage 5 — training: the shared trainer (batching, early stopping, seeds, checkpoints)."""

from conceptalpha.training.seed import resolve_device, set_seed
from conceptalpha.training.trainer import (
    FitResult,
    TrainerConfig,
    TrainingDiverged,
    fit,
    fit_seeds,
    predict,
)

__all__ = [
    "FitResult",
    "TrainerConfig",
    "TrainingDiverged",
    "fit",
    "fit_seeds",
    "predict",
    "resolve_device",
    "set_seed",
]
