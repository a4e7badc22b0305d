"""Compression methods: numpy only, no model, no torch (``tests/test_layers.py`` keeps it so).

- ``registry``: the one table of methods by name (``compress``, ``register_method``; built-ins of the modules
  below load on first use), ``factors``: the types every method returns, ``ranks``: every rank rule,
  ``metrics``: error fractions.
- ``svd_llm`` (SVD-LLM V1, V2), ``bundle`` (the paper's bundle, its corners and Basis-Sharing-core),
  ``basis_sharing`` (the reference Basis Sharing), ``coupled`` (a joint activation objective with a
  residual-stream term), ``other_weights`` (the MLP as a rectangular chain, Q/K/V on one shared input basis),
  ``controls`` (the unification-gap corners, activation-aware corners, Table 4's anchor variants).
"""
