"""Plotting helpers for the book's chapters, one module per subject.

| module | what |
|---|---|
| :mod:`recsae_core.viz.base` | the book's style, tables, and plotly figures as a two-mimetype bundle (Jupyter + static HTML) |
| :mod:`recsae_core.viz.data` | the datasets chapter |
| :mod:`recsae_core.viz.models` | the base-models chapter |
| :mod:`recsae_core.viz.sae` | SAE plots any chapter uses (label heatmaps, steering curves, the steering slider) |
| :mod:`recsae_core.viz.concepts` | the feature explorer (self-contained HTML + JS) and concept-score / de-biasing plots |
| :mod:`recsae_core.viz.playground` | the steering playground (self-contained HTML + JS, a plotly slider over α) |
| :mod:`recsae_core.viz.p1` | P1's figures (sweeps, features vs neurons, activation splits) |
| :mod:`recsae_core.viz.p2` | P2's figures (training curves with dev NDCG@5, reconstruction table) |
| :mod:`recsae_core.viz.compare` | the side-by-side chapter (Pareto plots against L0, the per-site table with intervals) |
| :mod:`recsae_core.viz.p3` | P3's figures (purity table, genre/decade/popularity profiles, β curves, Matryoshka, interventions) |

Plots draw; they compute nothing a test cannot reach elsewhere (the analyses live in ``recsae_core.papers``
and ``recsae_core.sae_eval``). Everything public is re-exported here, so chapters write ``viz.table(...)``
or, to say which paper a figure belongs to, ``viz.p3.plot_beta_curves(...)``.
"""

from recsae_core.viz import base, compare, concepts, data, models, p1, p2, p3, playground, sae
from recsae_core.viz.base import *  # noqa: F403
from recsae_core.viz.compare import *  # noqa: F403
from recsae_core.viz.concepts import *  # noqa: F403
from recsae_core.viz.data import *  # noqa: F403
from recsae_core.viz.models import *  # noqa: F403
from recsae_core.viz.p1 import *  # noqa: F403
from recsae_core.viz.p2 import *  # noqa: F403
from recsae_core.viz.p3 import *  # noqa: F403
from recsae_core.viz.playground import *  # noqa: F403
from recsae_core.viz.sae import *  # noqa: F403

__all__ = [
    name
    for module in (base, data, models, sae, p1, p2, p3, concepts, playground, compare)
    for name in module.__all__
]
