"""The book's front page: the reproduction scoreboard built from the executed pages' claims (issue #13).

The runner (:mod:`recsae_core.book`) calls this module while it assembles the book; no chapter's kernel imports
it, so it is left out of the pages' input hash (``book._NOT_IN_KERNEL``): changing how the front page looks
never re-executes a page. What a page measured, and the status its rule gave, come from
:mod:`recsae_core.scoreboard` (in the hash), stored in the executed notebook under
:data:`~recsae_core.scoreboard.MIME`.

:func:`read_claims` reads a page's claims, :func:`scoreboard_rows` picks one row per declared claim and
:func:`render_html` writes the table that replaces the root page's :data:`MARKER` line.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from recsae_core.scoreboard import MIME, STATUSES, Claim, ClaimSpec, NotComparable, _status_html

__all__ = ["MARKER", "Row", "read_claims", "render_html", "scoreboard_rows"]

#: the line of the root page that the runner replaces with the scoreboard.
MARKER = "<!-- recsae:scoreboard -->"
#: column widths of the front page's table (paper, claim, paper's number, ours, dataset, status).
_COLGROUP = (
    "<colgroup>" + "".join(f'<col style="width:{w}%">' for w in (5, 33, 17, 17, 14, 14)) + "</colgroup>\n"
)


def read_claims(notebook: Path) -> list[Claim]:
    """The claims an executed notebook holds (outputs with :data:`MIME`), in order; ``[]`` if none."""
    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    out: list[Claim] = []
    for cell in nb.get("cells", []):
        for o in cell.get("outputs", []) or []:
            data = (o.get("data") or {}).get(MIME)
            if isinstance(data, str):
                data = json.loads(data)
            if isinstance(data, dict):
                out += [Claim.from_dict(d) for d in data.get("claims", [])]
    return out


# ------------------------------------------------------------------------------------------- front page


@dataclass
class Row:
    """One scoreboard row: the spec, the claim shown (``None``: no page measured it), the other pages'."""

    spec: ClaimSpec
    main: Claim | None
    others: list[Claim] = field(default_factory=list)
    missing: str = ""  # why there is no claim (not executed / executed before the scoreboard)


def scoreboard_rows(
    specs: Sequence[ClaimSpec],
    pages: Mapping[tuple[str, str], Sequence[Claim]],
    page_order: Iterable[tuple[str, str]] | None = None,
) -> list[Row]:
    """One :class:`Row` per spec from the executed pages' claims.

    Args:
        specs: the claims to score (usually :func:`all_specs`, limited to the book's chapters).
        pages: ``(chapter, dataset)`` → the claims read from that executed page (``[]`` when it has none).
        page_order: the pages in book order (default: the order of ``pages``).

    The main claim comes from the first page, in the spec's ``datasets`` preference and then book order, on
    which the paper's number is comparable; else from the first page that measured it (it then says
    ``not comparable``).
    """
    order = list(page_order) if page_order is not None else list(pages)
    rows = []
    for spec in specs:
        found = [
            (
                ds,
                next(
                    (replace(c, chapter=ch, dataset=ds) for c in pages[(ch, ds)] if c.key == spec.key), None
                ),
            )
            for ch, ds in order
            if ch == spec.chapter and (ch, ds) in pages
        ]  # the page's own name wins over what its kernel recorded, so links always lead to the page
        have = [(ds, c) for ds, c in found if c is not None]
        pref = {d: i for i, d in enumerate(spec.datasets)}
        ranked = sorted(
            have,
            key=lambda dc: (not spec.comparable_on(dc[0]), pref.get(dc[0], len(pref))),
        )
        if ranked:
            main = ranked[0][1]
            rows.append(Row(spec, main, [c for _, c in have if c is not main]))
        elif found:
            rows.append(Row(spec, None, [], "its pages were executed before this claim was scored"))
        else:
            rows.append(Row(spec, None, [], "not executed in this build"))
    return rows


def _link(prefix: str, chapter: str, page: str, anchor: str = "") -> str:
    return f"{prefix}chapters/{chapter}/{page}.html" + (f"#{anchor}" if anchor else "")


def render_html(rows: Sequence[Row], *, prefix: str = "../", profile: str = "") -> str:
    """The scoreboard as raw HTML for the root page: a summary line and one table row per claim.

    ``prefix`` leads from the root page's folder to the book root (``book/intro`` → ``"../"``). Links go to
    ``chapters/<chapter>/<dataset>.html#<anchor>``; a claim without a page links to its chapter's index.
    """
    counts = {s: sum(r.main is not None and r.main.status == s for r in rows) for s in STATUSES}
    missing = sum(r.main is None for r in rows)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) + (
        f", {missing} not yet measured" if missing else ""
    )
    head = (
        f'<p class="recsae-scoreboard-summary"><strong>{len(rows)} claims</strong>'
        + (f" (profile <code>{html.escape(profile)}</code>)" if profile else "")
        + f": {html.escape(summary)}.</p>\n"
    )
    if profile == "smoke":
        head += (
            "<p><em>The <code>smoke</code> profile runs tiny settings for the tests: its statuses say nothing "
            "about the papers. Build with <code>recsae book</code> (profile <code>default</code>) for the real "
            "scoreboard.</em></p>\n"
        )
    body = []
    for r in rows:
        s = r.spec
        if r.main is None:
            cmd = f"recsae book --chapter {s.chapter}" + (f" --dataset {s.datasets[0]}" if s.datasets else "")
            ours = f"<em>{html.escape(r.missing)}</em>: run <code>{html.escape(cmd)}</code>"
            dataset = f'<a href="{_link(prefix, s.chapter, "index")}">{html.escape(s.chapter)}</a>'
            status = '<span class="recsae-status" data-status="missing" style="color:#57606a">—</span>'
            note = s.note
        else:
            c = r.main
            ours = html.escape(c.ours)
            dataset = (
                f'<a href="{_link(prefix, c.chapter, c.dataset, c.anchor)}">{html.escape(c.dataset)}</a>'
            )
            if r.others and not isinstance(s.rule, NotComparable):
                dataset += (
                    '<br><small style="color:#57606a">also: '
                    + "; ".join(
                        f'<a href="{_link(prefix, o.chapter, o.dataset, o.anchor)}">{html.escape(o.dataset)}</a> '
                        f"{html.escape(o.ours)} ({html.escape(o.rule_status)})"
                        for o in r.others
                    )
                    + "</small>"
                )
            status = _status_html(c.status, c.rule)
            if c.status == "not comparable" and c.rule_status != "not comparable":
                status += (
                    f'<br><small style="color:#57606a">(rule here: {html.escape(c.rule_status)})</small>'
                )
            note = c.note
        claim = html.escape(s.claim) + (
            f'<br><small style="color:#57606a">{html.escape(note)}</small>' if note else ""
        )
        body.append(
            f'<tr data-claim="{html.escape(s.key)}"><td>{html.escape(s.paper)}</td><td>{claim}</td>'
            f"<td>{html.escape(s.paper_value)}</td><td>{ours}</td><td>{dataset}</td><td>{status}</td></tr>"
        )
    return (
        '<div class="recsae-scoreboard full-width">\n'
        + head
        + '<table class="table recsae-table recsae-scoreboard-table" style="font-size:0.85em;width:100%">\n'
        + _COLGROUP
        + "<thead><tr><th>paper</th><th>claim</th>"
        "<th>paper's number</th><th>ours</th><th>dataset</th><th>status</th></tr></thead>\n<tbody>\n"
        + "\n".join(body)
        + "\n</tbody>\n</table>\n</div>\n"
    )
