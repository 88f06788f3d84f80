"""Stage 5 — training: the shared trainer (batching, early stopping, seeds, checkpoints)."""
