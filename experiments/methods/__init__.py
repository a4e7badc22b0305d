"""Beyond the paper (issue 13): methods and measurements the paper left open.

- ``plugin``: run any method of the registry (``experiments.compress.register_method``) through the diagnostic.
- ``hooks``: streamed input moments of modules under a chosen set of installed replacements.
- ``sequential``: error-propagating layer-by-layer compression (closed-form reduced-rank regression).
- ``coupled``: a joint activation objective with a residual-stream cross-layer term, solved by BCA.
- ``controls``: the unification-gap corners, the activation-aware bundle corners, Table 4's anchor variants.
- ``other_weights``: the MLP as a rectangular chain (per-interface-rank bundle) and Q/K/V on one shared input basis.
- ``open_questions``: runs all of them on a model and renders the report section.
"""
from experiments.methods import coupled  # noqa: F401,E402  (registers the "act-coupled" method)
from experiments.methods import other_weights  # noqa: F401,E402  (registers "mlp-chain" and "qkv-shared")
