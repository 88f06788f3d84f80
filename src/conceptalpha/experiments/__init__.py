"""Stage 7 — experiments: typed configs, the runner, the CLI, grids and rolling retraining."""
