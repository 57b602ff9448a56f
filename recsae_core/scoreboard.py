"""The reproduction scoreboard: every claim and number the paper chapters compare with the papers, scored by an
explicit rule, gathered from the executed pages onto the book's front page (issue #13).

Three pieces:

* **What is scored** — each paper module declares its claims as :class:`ClaimSpec` rows (``SCOREBOARD`` in
  :mod:`recsae_core.papers.p1`, ``p2``, ``p3``): the paper's claim and number, the :class:`Rule` that turns our
  measured value into a status, the chapter and section (``anchor``) that compares them, and the datasets on
  which the paper's number is comparable.
* **What a page measured** — the paper module's ``claims(...)`` turns what its chapter already computed into
  :class:`Claim` rows (:meth:`ClaimSpec.measure`: the status is computed, never typed), and the chapter shows
  them with :func:`show`. :func:`show` displays one output holding two representations: an HTML table for the
  reader, and the claims as JSON under the mimetype :data:`MIME`. The claims thus live **inside the executed
  notebook**: nothing is written anywhere else, so a reader who runs the notebook by hand with papermill gets
  them in their own output notebook and nothing more; a page the runner skips (inputs unchanged) keeps its
  claims with its notebook; and a page that fails after this cell leaves the previous good notebook — and its
  claims — in place (the runner renames the notebook only on success).
* **The front page** — ``recsae book`` reads the claims of every page it builds and replaces the line
  ``<!-- recsae:scoreboard -->`` of the root page (``book/intro.md``) with the scoreboard table: one row per
  claim, from the first executed page whose dataset is comparable, the other pages' values beneath it, and
  "not executed" (with the command that adds it) for chapters this build lacks. That part lives in
  :mod:`recsae_core.frontpage`, outside the pages' input hash, so restyling the front page re-executes nothing.

Statuses: ``reproduced``, ``partly``, ``not``, ``not comparable`` (:data:`STATUSES`). A claim measured on a
dataset where the paper's number does not apply is ``not comparable``; what its rule would say there is kept in
:attr:`Claim.rule_status`.
"""

from __future__ import annotations

import html
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = [
    "MIME",
    "STATUSES",
    "AtLeast",
    "AtMost",
    "Claim",
    "ClaimSpec",
    "Monotone",
    "NotComparable",
    "Rule",
    "Within",
    "all_specs",
    "at_least",
    "at_most",
    "claims_bundle",
    "monotone",
    "not_comparable",
    "show",
    "within",
]

STATUSES: tuple[str, ...] = ("reproduced", "partly", "not", "not comparable")
#: the mimetype under which a page's claims are stored in its executed notebook.
MIME = "application/vnd.recsae.claims+json"
#: rounding slack of the rules' comparisons (a change of exactly −5 % computed as −5.000000000000004 %).
_EPS = 1e-9
_COLOURS = {"reproduced": "#1a7f37", "partly": "#9a6700", "not": "#cf222e", "not comparable": "#57606a"}


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


# ------------------------------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """Turns a measured value into a status (:data:`STATUSES`); ``text`` says how, for the reader."""

    def status(self, value: Any) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def text(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class AtLeast(Rule):
    """``reproduced`` when value ≥ ``target``, ``partly`` when ≥ ``partly``, else ``not``."""

    target: float
    partly: float

    def __post_init__(self) -> None:
        if not self.partly <= self.target:
            raise ValueError(f"AtLeast: partly ({self.partly}) must be <= target ({self.target})")

    def status(self, value: Any) -> str:
        if not _finite(value):
            return "not"
        return (
            "reproduced"
            if value >= self.target - _EPS
            else "partly"
            if value >= self.partly - _EPS
            else "not"
        )

    @property
    def text(self) -> str:
        return f"≥ {self.target:.3g}; partly ≥ {self.partly:.3g}"


@dataclass(frozen=True)
class AtMost(Rule):
    """``reproduced`` when value ≤ ``target``, ``partly`` when ≤ ``partly``, else ``not``."""

    target: float
    partly: float

    def __post_init__(self) -> None:
        if not self.partly >= self.target:
            raise ValueError(f"AtMost: partly ({self.partly}) must be >= target ({self.target})")

    def status(self, value: Any) -> str:
        if not _finite(value):
            return "not"
        return (
            "reproduced"
            if value <= self.target + _EPS
            else "partly"
            if value <= self.partly + _EPS
            else "not"
        )

    @property
    def text(self) -> str:
        return f"≤ {self.target:.3g}; partly ≤ {self.partly:.3g}"


@dataclass(frozen=True)
class Within(Rule):
    """``reproduced`` when ``|value - target| / |target|`` ≤ ``rel``, ``partly`` when ≤ ``partly_rel``."""

    target: float
    rel: float
    partly_rel: float

    def __post_init__(self) -> None:
        if self.target == 0 or not 0 <= self.rel <= self.partly_rel:
            raise ValueError(
                f"Within: need target != 0 and 0 <= rel <= partly_rel, got {self.target}, {self.rel}, "
                f"{self.partly_rel}"
            )

    def status(self, value: Any) -> str:
        if not _finite(value):
            return "not"
        d = abs(value - self.target) / abs(self.target)
        return "reproduced" if d <= self.rel + _EPS else "partly" if d <= self.partly_rel + _EPS else "not"

    @property
    def text(self) -> str:
        return f"±{self.rel:.0%} of {self.target:.3g}; partly ±{self.partly_rel:.0%}"


@dataclass(frozen=True)
class Monotone(Rule):
    """For a sequence of values (e.g. a share over growing steering strengths): ``reproduced`` when every step
    moves in ``direction`` (``"up"`` or ``"down"``; equal steps allowed) and the whole sequence moves in it;
    ``partly`` when the whole moves in it but some step goes back; ``not`` otherwise."""

    direction: str

    def __post_init__(self) -> None:
        if self.direction not in ("up", "down"):
            raise ValueError(f"Monotone: direction must be 'up' or 'down', got {self.direction!r}")

    def status(self, value: Any) -> str:
        vals = list(value) if isinstance(value, list | tuple) else []
        if len(vals) < 2 or not all(_finite(v) for v in vals):
            return "not"
        sign = 1.0 if self.direction == "up" else -1.0
        steps = [sign * (b - a) for a, b in itertools.pairwise(vals)]
        if sign * (vals[-1] - vals[0]) <= 0:
            return "not"
        return "reproduced" if all(s >= 0 for s in steps) else "partly"

    @property
    def text(self) -> str:
        word = "rises" if self.direction == "up" else "falls"
        return f"{word} at every step; partly: {word} overall"


@dataclass(frozen=True)
class NotComparable(Rule):
    """Always ``not comparable``: the paper's number needs what this book does not have (``why``)."""

    why: str

    def status(self, value: Any) -> str:
        return "not comparable"

    @property
    def text(self) -> str:
        return self.why


def at_least(target: float, partly: float | None = None) -> AtLeast:
    """Rule: value ≥ ``target``; ``partly`` defaults to 80 % of the target (falls short by at most a fifth)."""
    return AtLeast(float(target), float(0.8 * target if partly is None else partly))


def at_most(target: float, partly: float | None = None) -> AtMost:
    """Rule: value ≤ ``target``; ``partly`` defaults to twice the target."""
    return AtMost(float(target), float(2 * target if partly is None else partly))


def within(target: float, rel: float, partly_rel: float | None = None) -> Within:
    """Rule: value within ``rel`` (relative) of ``target``; ``partly_rel`` defaults to twice ``rel``."""
    return Within(float(target), float(rel), float(2 * rel if partly_rel is None else partly_rel))


def monotone(direction: str) -> Monotone:
    """Rule: a sequence moves in ``direction`` (``"up"``/``"down"``) at every step."""
    return Monotone(direction)


def not_comparable(why: str) -> NotComparable:
    """Rule: the paper's number cannot be compared here, for the reason ``why``."""
    return NotComparable(why)


# ----------------------------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim:
    """One claim as one page measured it (JSON round trip: :meth:`to_dict`, :meth:`from_dict`).

    ``value`` is the number (or list of numbers) the rule judged, ``None`` when the page did not measure it;
    ``ours`` is its text for the reader; ``status`` the rule's verdict, or ``not comparable`` off the paper's
    datasets; ``rule_status`` what the rule says regardless of the dataset.
    """

    key: str
    paper: str
    claim: str
    paper_value: str
    ours: str
    dataset: str
    status: str
    rule_status: str
    rule: str
    chapter: str
    anchor: str
    note: str = ""
    value: Any = None

    def __post_init__(self) -> None:
        for s in (self.status, self.rule_status):
            if s not in STATUSES:
                raise ValueError(f"claim {self.key!r}: status must be one of {STATUSES}, got {s!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Claim:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class ClaimSpec:
    """A claim the scoreboard scores (declared once, in the paper's module).

    Attributes:
        key: unique id, e.g. ``"p1.ev"``.
        paper: ``"P1"``, ``"P2"`` or ``"P3"``.
        claim: the claim in a few words.
        paper_value: the paper's number (or the issue's target), as text.
        rule: how our value becomes a status.
        chapter, anchor: the chapter and the section id of its pages that compares them.
        datasets: where the paper's number is comparable, in order of preference for the front page.
        anywhere: comparable on every dataset (``datasets`` then only orders the preference).
        note: what differs from the paper, shown under the claim.
    """

    key: str
    paper: str
    claim: str
    paper_value: str
    rule: Rule
    chapter: str
    anchor: str
    datasets: tuple[str, ...] = ()
    anywhere: bool = False
    note: str = ""

    def comparable_on(self, dataset: str) -> bool:
        return self.anywhere or dataset in self.datasets

    def measure(self, value: Any, ours: str | None, *, dataset: str, note: str = "") -> Claim:
        """This claim as measured on ``dataset``: ``value`` judged by the rule; ``ours`` its text (``None``:
        the value with 3 significant digits). ``value=None`` means not measured on this page (``note`` should
        say why): the claim is then ``not comparable``."""
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        if isinstance(value, list | tuple):
            value = [float(v) for v in value]
        elif value is not None:
            value = float(value)
        if value is None and not isinstance(self.rule, NotComparable):
            rule_status = status = "not comparable"
            ours = ours or "not measured"
        else:
            rule_status = self.rule.status(value)
            status = rule_status if self.comparable_on(dataset) else "not comparable"
            if ours is None:
                ours = "—" if value is None else f"{value:.3g}" if not isinstance(value, list) else str(value)
        if not self.comparable_on(dataset) and not isinstance(self.rule, NotComparable):
            where = ", ".join(self.datasets) or "the paper's data"
            note = "; ".join(x for x in (note, f"the paper's number is for {where}") if x)
        return Claim(
            key=self.key,
            paper=self.paper,
            claim=self.claim,
            paper_value=self.paper_value,
            ours=ours,
            dataset=dataset,
            status=status,
            rule_status=rule_status,
            rule=self.rule.text,
            chapter=self.chapter,
            anchor=self.anchor,
            note="; ".join(x for x in (self.note, note) if x),
            value=value,
        )


def all_specs() -> list[ClaimSpec]:
    """Every paper's :class:`ClaimSpec` rows, in the book's order (P1, P2, P3)."""
    from recsae_core.papers import p1, p2, p3

    specs = [*p1.SCOREBOARD, *p2.SCOREBOARD, *p3.SCOREBOARD]
    keys = [s.key for s in specs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"scoreboard claim keys must be unique; repeated: {dup}")
    return specs


# ----------------------------------------------------------------------------------------- page output


def _status_html(status: str, rule: str = "") -> str:
    colour = _COLOURS.get(status, "#57606a")
    out = f'<span class="recsae-status" data-status="{html.escape(status)}" style="color:{colour};font-weight:600">{html.escape(status)}</span>'
    if rule:
        out += f'<br><small style="color:#57606a">{html.escape(rule)}</small>'
    return out


def _page_table(claims: Sequence[Claim]) -> str:
    rows = "".join(
        "<tr>"
        f"<td>{html.escape(c.claim)}"
        + (f'<br><small style="color:#57606a">{html.escape(c.note)}</small>' if c.note else "")
        + f"</td><td>{html.escape(c.paper_value)}</td><td>{html.escape(c.ours)}</td>"
        f"<td>{_status_html(c.status, c.rule)}</td></tr>"
        for c in claims
    )
    return (
        '<table class="dataframe recsae-table recsae-claims"><caption>This page\'s claims as the front page scores '
        "them (status computed from the rule beneath it)</caption><thead><tr><th>claim</th><th>paper</th>"
        f"<th>ours</th><th>status</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def claims_bundle(claims: Sequence[Claim]) -> dict[str, Any]:
    """The display bundle :func:`show` emits: an HTML table and the claims as JSON (:data:`MIME`)."""
    return {
        "text/html": _page_table(claims),
        "text/plain": f"{len(claims)} scoreboard claims",
        MIME: {"version": 1, "claims": [c.to_dict() for c in claims]},
    }


def show(claims: Sequence[Claim]) -> None:
    """Display a page's claims (see the module docstring: they are stored in the executed notebook)."""
    from IPython.display import display

    display(claims_bundle(claims), raw=True)
