"""Plotting helpers shared by the book's chapters: one matplotlib/seaborn style, and plotly figures shown as a
two-mimetype bundle that renders both in Jupyter and in the static Jupyter Book HTML.

Why the bundle (``../shared/reference/toolchain.md`` §3): under papermill, ``fig.show()`` emits only the
``application/vnd.plotly.v1+json`` mimetype, which myst-nb cannot render; the book needs a ``text/html`` part
that uses the page's vendored ``plotly.min.js`` (``include_plotlyjs=False``) and loads no MathJax from a CDN
(``include_mathjax=False``). JupyterLab picks the plotly JSON (rendered by the extension in the plotly wheel).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["LABEL_PALETTE", "plotly_bundle", "set_style", "show_plotly", "table"]

#: qualitative palette used for labels (genres / tags) across chapters, so a genre keeps its colour.
LABEL_PALETTE = "tab20"


def set_style(context: str = "notebook") -> None:
    """The book's matplotlib/seaborn look: white grid, readable fonts, a dpi that keeps PNGs sharp but small."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(context=context, style="whitegrid", palette="colorblind")
    mpl.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "figure.figsize": (8.0, 4.0),
            "figure.autolayout": False,
            "figure.constrained_layout.use": True,
            "axes.titlesize": "medium",
            "axes.titleweight": "bold",
            "axes.labelsize": "medium",
            "legend.fontsize": "small",
            "legend.frameon": False,
        }
    )


def table(df: Any, *, index: bool = True, caption: str | None = None, precision: int = 4) -> Any:
    """A pandas ``Styler`` for the book: thousands separators, fixed precision, no index-name header row.

    ``index=False`` hides the index (use it for tables whose first column already names the rows).
    """
    sty = df.style.format(precision=precision, thousands=",", na_rep="–")
    sty = sty.hide(axis="index") if not index else sty.hide(axis="index", names=True)
    if caption:
        sty = sty.set_caption(caption)
    return sty.set_table_attributes('class="dataframe recsae-table"')


def plotly_bundle(fig: Any, *, div_id: str | None = None) -> dict[str, Any]:
    """The mimebundle for a plotly figure: plotly JSON (Jupyter) + ``text/html`` without plotly.js or MathJax.

    Args:
        fig: a ``plotly.graph_objects.Figure``.
        div_id: optional fixed HTML id (makes the output deterministic and lets tests find the figure).
    """
    html = fig.to_html(full_html=False, include_plotlyjs=False, include_mathjax=False, div_id=div_id)
    return {"application/vnd.plotly.v1+json": json.loads(fig.to_json()), "text/html": html}


def show_plotly(fig: Any, *, div_id: str | None = None) -> None:
    """Display a plotly figure so that it renders in JupyterLab and in the static book (see module docstring)."""
    from IPython.display import display

    display(plotly_bundle(fig, div_id=div_id), raw=True)
