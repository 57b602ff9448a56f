"""Plotting helpers for the book's chapters, one module per subject.

| module | what |
|---|---|
| :mod:`recsae_core.viz.base` | the book's style, tables, and plotly figures as a two-mimetype bundle (Jupyter + static HTML) |
| :mod:`recsae_core.viz.data` | the datasets chapter |
| :mod:`recsae_core.viz.models` | the base-models chapter |

Plots draw; they compute nothing a test cannot reach elsewhere. Everything public is re-exported here, so
chapters write ``viz.table(...)``.
"""

from recsae_core.viz.base import *  # noqa: F403
from recsae_core.viz.base import __all__ as _base_all
from recsae_core.viz.data import *  # noqa: F403
from recsae_core.viz.data import __all__ as _data_all
from recsae_core.viz.models import *  # noqa: F403
from recsae_core.viz.models import __all__ as _models_all

__all__ = [*_base_all, *_data_all, *_models_all]
