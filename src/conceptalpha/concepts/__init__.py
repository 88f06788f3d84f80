"""Stage 3 — concepts: sources, the point-in-time stock→concept membership graph, reports."""
