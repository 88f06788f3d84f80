"""Stage 4 — models: HIST and the baseline zoo.

Every neural model is a plain ``torch.nn.Module`` with one signature::

    forward(x, membership=None, market_cap=None) -> Tensor [N]

``x`` is one day's (or several days') features [N, T, F] or [N, F];
``membership`` the day's stock→concept matrix [N, C] (torch sparse or dense);
``market_cap`` [N]. Models ignore the inputs they do not use.
``MODELS`` (in :mod:`conceptalpha.models.registry`) maps a name to its spec.
"""
