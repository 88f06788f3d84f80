"""Stage 2 — features: Alpha360/158, labels, processors, the daily dataset."""
