"""ipywidgets panels for the book's chapters: live in Jupyter (they call the real models), rendered statically
in the HTML book (the state papermill saved; no Python runs there, so the book pairs each panel with a
precomputed plotly view from :mod:`recsae_core.viz`).

Panels keep their logic in plain methods (``update``) so tests can drive them without a browser: set a
control's ``value`` and read ``panel.output.value``.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import viz
from .data.dataset import RecDataset

__all__ = ["BaseModels", "PlaygroundPanel", "RecommendationPanel", "SteeringPanel", "load_base_models"]


@dataclass
class BaseModels:
    """A dataset's leave-one-out split with trained base models (what :func:`load_base_models` returns).

    Attributes:
        dataset: the dataset's name (its registry name for the built-in ones).
        split: the seeded leave-one-out split the models were trained on.
        results: model name → :class:`recsae_core.train.TrainResult` (``.model`` is the trained recommender).
        skipped: model name → why it was not trained (e.g. a sequential model on data without timestamps).
    """

    dataset: str
    split: Any
    results: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def models(self) -> dict[str, Any]:
        return {name: res.model for name, res in self.results.items()}


def load_base_models(
    dataset: str | RecDataset,
    models: Sequence[str],
    configs: dict[str, dict[str, Any]] | None = None,
    *,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> BaseModels:
    """Load ``dataset``, split it leave-one-out (seeded), and train or reload every model in ``models``.

    Training goes through :func:`recsae_core.cache.cached_fit`, so a model trained once (by this chapter, a
    later chapter or a test) is reloaded from the artifact cache. Sequential models are skipped, with the
    reason recorded, when the data has no timestamps.

    Args:
        dataset: registry name (``recsae datasets`` lists them), or a loaded :class:`RecDataset`, e.g. your own
            data from :func:`recsae_core.data.loaders.load_csv`.
        models: registry names of the base models (``"sasrec"``, ``"bprmf"``, ``"lightgcn"``, ``"mf"``,
            ``"ncf"``, ``"pop"``).
        configs: per-model config overrides (``{"sasrec": {"maxlen": 50}}``); missing models use the defaults.
        seed: split and training seed.
        device: ``"cpu"`` or ``"cuda"``.
        progress: tqdm bars while training.
    """
    from .cache import cached_fit
    from .data.loaders import load_dataset
    from .data.splits import leave_one_out
    from .models.registry import get_spec

    configs = dict(configs or {})
    unknown = set(configs) - set(models)
    if unknown:
        raise ValueError(f"configs given for models that are not trained here: {sorted(unknown)}")
    ds = dataset if isinstance(dataset, RecDataset) else load_dataset(dataset, progress=progress)
    split = leave_one_out(ds, seed=seed)
    results: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    for name in models:
        if get_spec(name).sequential and not ds.has_timestamps:
            skipped[name] = f"{ds.name} has no timestamps; {viz.model_label(name)} needs the order of events"
            continue
        results[name] = cached_fit(
            name, split, configs.get(name), device=device, seed=seed, progress=progress
        )
    return BaseModels(ds.name, split, results, skipped)


def _frame_html(df: Any, caption: str) -> str:
    body = df.to_html(index=False, escape=True, border=0, classes="dataframe")
    return (
        '<div style="flex:1;min-width:300px;font-size:0.85em">'
        f'<p style="margin:4px 0"><b>{html.escape(caption)}</b></p>{body}</div>'
    )


class RecommendationPanel:
    """Choose a dataset, a model and a user; see the user's recent history and the model's top-k.

    In Jupyter every change re-scores the user with the real model. ``load`` gives the
    :class:`BaseModels` of a dataset (called lazily, once per dataset); the chapter passes the models it
    has already trained so the first view costs nothing.

    Args:
        datasets: dataset names offered in the first dropdown (the first is shown).
        load: dataset name → :class:`BaseModels`.
        k: length of the recommendation list.
        history: how many of the most recent history items to show.
        user: the original user id shown first (default: the first user with a test item).
    """

    def __init__(
        self,
        datasets: Sequence[str],
        load: Callable[[str], BaseModels],
        *,
        k: int = 10,
        history: int = 10,
        user: int | None = None,
    ) -> None:
        import ipywidgets as w

        if not datasets:
            raise ValueError("RecommendationPanel needs at least one dataset")
        self._load = load
        self._loaded: dict[str, BaseModels] = {}
        self.k, self.history = k, history
        self.dataset = w.Dropdown(options=list(datasets), value=datasets[0], description="dataset")
        self.model = w.Dropdown(options=[], description="model")
        self.user = w.IntText(value=0, description="user id")
        self.output = w.HTML()
        self.widget = w.VBox(
            [w.HBox([self.dataset, self.model, self.user]), self.output],
            layout=w.Layout(width="100%"),
        )
        self._busy = False
        self._set_dataset(datasets[0], user)
        self.dataset.observe(lambda ch: self._set_dataset(ch["new"], None), names="value")
        self.model.observe(lambda _: self.update(), names="value")
        self.user.observe(lambda _: self.update(), names="value")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _bundle(self, name: str) -> BaseModels:
        if name not in self._loaded:
            self._loaded[name] = self._load(name)
        return self._loaded[name]

    def _set_dataset(self, name: str, user: int | None) -> None:
        bm = self._bundle(name)
        self._busy = True
        try:
            options = [(viz.model_label(m), m) for m in bm.results]
            self.model.options = options
            self.model.value = options[0][1] if options else None
            ids = bm.split.dataset.users["user_id"].to_numpy()
            test_users = bm.split.targets("test")["user"].to_numpy()
            self.user.value = int(user) if user is not None else int(ids[test_users.min()])
        finally:
            self._busy = False
        self.update()

    def update(self) -> str:
        """Re-compute the view for the current selection; returns (and shows) its HTML."""
        if self._busy:
            return self.output.value
        bm = self._bundle(self.dataset.value)
        ds = bm.split.dataset
        ids = ds.users["user_id"].to_numpy()
        hit = (ids == self.user.value).nonzero()[0]
        if self.model.value is None:
            self.output.value = "<p>No model was trained on this dataset.</p>"
            return self.output.value
        if len(hit) == 0:
            self.output.value = f"<p>No user with id {self.user.value} in {html.escape(ds.name)}.</p>"
            return self.output.value
        u = int(hit[0])
        model = bm.results[self.model.value].model
        recs = viz.top_k(model, bm.split, [u], k=self.k)
        if recs.empty:
            self.output.value = f"<p>User {self.user.value} has no held-out test item.</p>"
            return self.output.value
        rec = viz.recommendations_frame(bm.split, recs, u)
        hist = viz.user_history(bm.split, u, last=self.history)
        held = ", ".join(rec.attrs["held_out"]) or "–"
        self.output.value = (
            f"<p>User {self.user.value}: held-out test item <b>{html.escape(held)}</b>.</p>"
            '<div style="display:flex;gap:16px;flex-wrap:wrap">'
            + _frame_html(hist.drop(columns=["item"]), f"last {len(hist)} history items (most recent first)")
            + _frame_html(rec.drop(columns=["item"]), f"top-{self.k} of {viz.model_label(self.model.value)}")
            + "</div>"
        )
        return self.output.value


class SteeringPanel:
    """Steer one SAE feature and see the top-k change live (P1 §1.8): choose a feature by its label or id, a
    strength α, and a user or a user group.

    Before is the base model (α = 0 with the error term kept, so exactly the model's own list); after adds α
    to the feature (:func:`recsae_core.papers.p1.steered_top_k`). For one user both top-k lists are shown
    with titles and labels, items carrying the feature's label shaded; for a group, the label's share of the
    top-k before and after and the items that entered the most lists. The book pairs the panel with the
    static :func:`recsae_core.viz.sae.steering_slider_figure`.

    Args:
        model, site, sae, split: the frozen recommender, the steered site, the SAE, the split it is evaluated on.
        features: label name → feature id offered in the dropdown (e.g. from
            :func:`recsae_core.papers.p1.steering_features`); any other id can be typed.
        groups: group name → user indices (e.g. ``{"50 test users": viz.sample_users(split, 50)}``).
        user: the original user id shown first (default: the first test user).
        k, part, keep_error, positions: as in :func:`recsae_core.papers.p1.steered_top_k`.
    """

    ONE_USER = "one user"

    def __init__(
        self,
        model: Any,
        site: str,
        sae: Any,
        split: Any,
        features: dict[str, int],
        *,
        groups: dict[str, Sequence[int]] | None = None,
        user: int | None = None,
        k: int = 10,
        alpha: float = 5.0,
        alpha_range: tuple[float, float] = (-10.0, 10.0),
        part: str = "test",
        keep_error: bool = True,
        positions: str = "last",
    ) -> None:
        import ipywidgets as w

        if not features:
            raise ValueError("SteeringPanel needs at least one labelled feature")
        self.model, self.site, self.sae, self.split = model, site, sae, split
        self.features, self.groups = dict(features), dict(groups or {})
        if self.ONE_USER in self.groups:
            raise ValueError(f"{self.ONE_USER!r} is reserved; rename that group")
        self.k, self.part, self.keep_error, self.positions = k, part, keep_error, positions
        ds = split.dataset
        self._ids = ds.users["user_id"].to_numpy()
        first = int(split.targets(part)["user"].min()) if user is None else None
        self.label = w.Dropdown(
            options=[(f"{lab} (feature {j})", lab) for lab, j in self.features.items()],
            value=next(iter(self.features)),
            description="feature",
        )
        self.feature = w.BoundedIntText(
            value=self.features[self.label.value], min=0, max=sae.n_latents - 1, description="feature id"
        )
        self.alpha = w.FloatSlider(
            value=alpha,
            min=alpha_range[0],
            max=alpha_range[1],
            step=0.5,
            description="α",
            continuous_update=False,
        )
        self.who = w.Dropdown(options=[self.ONE_USER, *self.groups], value=self.ONE_USER, description="users")
        self.user = w.IntText(
            value=int(self._ids[first]) if user is None else int(user), description="user id"
        )
        self.output = w.HTML()
        self.widget = w.VBox(
            [w.HBox([self.label, self.feature, self.alpha]), w.HBox([self.who, self.user]), self.output],
            layout=w.Layout(width="100%"),
        )
        self.label.observe(lambda ch: setattr(self.feature, "value", self.features[ch["new"]]), names="value")
        for ctl in (self.feature, self.alpha, self.who, self.user):
            ctl.observe(lambda _: self.update(), names="value")
        self.update()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _feature_label(self) -> str | None:
        """The label whose feature is selected (None for an unlabelled id)."""
        return next((lab for lab, j in self.features.items() if j == self.feature.value), None)

    def _lists(self, users: Any) -> Any:
        from .papers.p1 import steered_top_k

        return steered_top_k(
            self.model,
            self.site,
            self.sae,
            self.split,
            int(self.feature.value),
            sorted({0.0, float(self.alpha.value)}),
            users=users,
            part=self.part,
            k=self.k,
            keep_error=self.keep_error,
            positions=self.positions,
        )

    def _table(self, rows: Any, g: int | None, caption: str) -> str:
        import numpy as np

        ds = self.split.dataset
        items = rows["item"].to_numpy()
        frame = rows[["rank"]].copy()
        frame["title"] = ds.items["title"].to_numpy()[items]
        frame["labels"] = viz.item_labels_text(ds, items)
        for col in rows.columns.difference(["rank", "item", "alpha", "user", "score", "is_target"]):
            frame[col] = rows[col].to_numpy()
        has = np.asarray(ds.item_labels)[items, g] if g is not None else np.zeros(len(items), bool)
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
        body = "".join(
            ('<tr style="background:#fde2b8">' if h else "<tr>")  # rows carrying the steered label shaded
            + "".join(f"<td>{html.escape(str(v))}</td>" for v in row)
            + "</tr>"
            for h, row in zip(has, frame.itertuples(index=False), strict=True)
        )
        body = f'<table class="dataframe"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
        return (
            '<div style="flex:1;min-width:300px;font-size:0.85em">'
            f'<p style="margin:4px 0"><b>{html.escape(caption)}</b></p>{body}</div>'
        )

    def update(self) -> str:
        """Re-compute the view for the current selection; returns (and shows) its HTML."""
        ds = self.split.dataset
        lab = self._feature_label()
        g = ds.label_names.index(lab) if lab in ds.label_names else None
        a = float(self.alpha.value)
        what = f"feature {self.feature.value}" + (f" ({lab})" if lab else "")
        if self.who.value == self.ONE_USER:
            hit = (self._ids == self.user.value).nonzero()[0]
            if len(hit) == 0:
                self.output.value = f"<p>No user with id {self.user.value} in {html.escape(ds.name)}.</p>"
                return self.output.value
            u = int(hit[0])
            if not (self.split.targets(self.part)["user"] == u).any():
                self.output.value = f"<p>User {self.user.value} has no held-out {self.part} item.</p>"
                return self.output.value
            lists = self._lists([u])
            before, after = lists[lists["alpha"] == 0.0], lists[lists["alpha"] == a]
            self.output.value = (
                f"<p>User {self.user.value}: {html.escape(what)} + α = {a:g}.</p>"
                '<div style="display:flex;gap:16px;flex-wrap:wrap">'
                + self._table(before, g, f"before (base model) top-{self.k}")
                + self._table(after, g, f"after (α = {a:g}) top-{self.k}")
                + "</div>"
            )
            return self.output.value
        import numpy as np

        users = list(self.groups[self.who.value])
        lists = self._lists(users)
        before, after = lists[lists["alpha"] == 0.0], lists[lists["alpha"] == a]
        share = ""
        if g is not None:
            has = np.asarray(ds.item_labels)[:, g].astype(bool)
            s0, s1 = has[before["item"].to_numpy()].mean(), has[after["item"].to_numpy()].mean()
            share = f" {html.escape(lab or '')} share of the top-{self.k}: <b>{s0:.3f} → {s1:.3f}</b>."
        pairs_before = set(zip(before["user"], before["item"], strict=True))
        entered = after[
            [(u, i) not in pairs_before for u, i in zip(after["user"], after["item"], strict=True)]
        ]
        counts = entered["item"].value_counts().head(self.k)
        top = counts.rename_axis("item").reset_index(name="lists entered")
        top.insert(0, "rank", range(1, len(top) + 1))
        table = self._table(top, g, f"items that entered the most top-{self.k} lists")
        self.output.value = (
            f"<p>{html.escape(self.who.value)} ({lists['user'].nunique()} users with a {self.part} item): "
            f"{html.escape(what)} + α = {a:g}.{share}</p>" + table
        )
        return self.output.value


class PlaygroundPanel:
    """The steering playground, live (:mod:`recsae_core.playground`): choose an SAE (dataset · model · site),
    search its features by description, pick one, a user group or one user, and α; see the label shares,
    NDCG@k and the top-k change. Each change calls :func:`recsae_core.playground.steering_grid` (error term
    kept, so α = 0 is the base model) for α = 0 and the chosen α. The HTML book shows the precomputed
    :func:`recsae_core.viz.playground.playground_html` instead.

    Args:
        entries: the SAEs (:class:`recsae_core.playground.PlaygroundSAE`, with ``catalog`` filled by
            :func:`recsae_core.playground.describe_features`).
        config: groups, α unit, k (:class:`recsae_core.playground.PlaygroundConfig`).
        alpha: the slider's first value; device: where the models score (``"cuda"`` on a GPU).
    """

    ONE_USER = "one user"

    def __init__(
        self, entries: Sequence[Any], config: Any = None, *, alpha: float = 3.0, device: Any = None
    ) -> None:
        import ipywidgets as w
        import numpy as np

        from .playground import PlaygroundConfig, describe_features, user_groups

        if not entries:
            raise ValueError("PlaygroundPanel needs at least one PlaygroundSAE")
        self.entries, self.cfg, self.device = list(entries), config or PlaygroundConfig(), device
        self._groups: dict[int, dict[str, Any]] = {}
        for i, e in enumerate(self.entries):
            if e.catalog is None:
                e.catalog = describe_features(e.model, e.site, e.sae, e.split, e.part, device=device)
            rng = np.random.default_rng(self.cfg.seed)
            cand = np.unique(e.split.targets(e.part)["user"].to_numpy(np.int64))
            sample = rng.choice(cand, size=min(self.cfg.n_users, len(cand)), replace=False)
            self._groups[i] = user_groups(
                e.split,
                sample,
                e.part,
                heavy_labels=self.cfg.heavy_labels,
                heavy_share=self.cfg.heavy_share,
                history_quantile=self.cfg.history_quantile,
            )
        self.sae = w.Dropdown(
            options=[(f"{e.dataset} · {e.name}", i) for i, e in enumerate(self.entries)], description="SAE"
        )
        self.search = w.Text(placeholder="words of the description or #id", description="search")
        self.feature = w.Dropdown(options=[], description="feature", layout=w.Layout(width="60%"))
        lo, hi = min(self.cfg.alphas), max(self.cfg.alphas)
        unit = " (× max act)" if self.cfg.alpha_unit == "max_act" else ""
        self.alpha = w.FloatSlider(
            value=alpha, min=lo, max=hi, step=0.5, description=f"α{unit}", continuous_update=False
        )
        self.who = w.Dropdown(options=[], description="users")
        self.user = w.IntText(value=0, description="user id")
        self.output = w.HTML()
        self.widget = w.VBox(
            [
                w.HBox([self.sae, self.search]),
                w.HBox([self.feature, self.alpha]),
                w.HBox([self.who, self.user]),
                self.output,
            ],
            layout=w.Layout(width="100%"),
        )
        self._busy = False
        self._set_sae(0)
        self.sae.observe(lambda ch: self._set_sae(ch["new"]), names="value")
        self.search.observe(lambda _: self._filter(), names="value")
        for ctl in (self.feature, self.alpha, self.who, self.user):
            ctl.observe(lambda _: self.update(), names="value")

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    def _set_sae(self, i: int) -> None:
        e = self.entries[i]
        self._busy = True
        try:
            self.who.options = [*self._groups[i], self.ONE_USER]
            self.who.value = next(iter(self._groups[i]))
            first = int(e.split.targets(e.part)["user"].min())
            self.user.value = int(e.split.dataset.users["user_id"].to_numpy()[first])
            self._filter(update=False)
        finally:
            self._busy = False
        self.update()

    def _filter(self, update: bool = True) -> None:
        """Feature options whose ``#id description`` contains the search words (live features first)."""
        cat = self.entries[self.sae.value].catalog
        cat = cat.sort_values(["density", "feature"], ascending=[False, True])
        s = self.search.value.strip().lower()
        text = "#" + cat["feature"].astype(str) + " " + cat["description"].str.lower()
        hit = cat[text.str.contains(s, regex=False)] if s else cat
        busy, self._busy = self._busy, True
        try:
            keep = self.feature.value
            self.feature.options = [
                (f"#{f} {d[:70] or '(no description)'}", int(f))
                for f, d in zip(hit["feature"], hit["description"], strict=True)
            ]
            ids = [v for _, v in self.feature.options]
            # ipywidgets 8 leaves the value None when the options change: keep it or take the first
            self.feature.value = keep if keep in ids else (ids[0] if ids else None)
        finally:
            self._busy = busy
        if update:
            self.update()

    def update(self) -> str:
        """Re-compute the view for the current selection; returns (and shows) its HTML."""
        import numpy as np
        import pandas as pd

        from .playground import steering_grid

        if self._busy:
            return self.output.value
        e = self.entries[self.sae.value]
        ds = e.split.dataset
        if self.feature.value is None:
            self.output.value = f"<p>No feature matches “{html.escape(self.search.value)}”.</p>"
            return self.output.value
        j = int(self.feature.value)
        cat = e.catalog.set_index("feature")
        unit = float(cat.loc[j, "max_act"]) if self.cfg.alpha_unit == "max_act" else 1.0
        a = float(self.alpha.value) * unit
        if self.who.value == self.ONE_USER:
            hit = (ds.users["user_id"].to_numpy() == self.user.value).nonzero()[0]
            if len(hit) == 0 or not (e.split.targets(e.part)["user"] == int(hit[0])).any():
                self.output.value = (
                    f"<p>User {self.user.value} has no held-out {e.part} item in {ds.name}.</p>"
                )
                return self.output.value
            users, who = [int(hit[0])], f"user {self.user.value}"
        else:
            users, who = list(self._groups[self.sae.value][self.who.value]), self.who.value
        g = steering_grid(
            e.model,
            e.site,
            e.sae,
            e.split,
            j,
            sorted({0.0, a}),
            users=users,
            part=e.part,
            k=self.cfg.k,
            device=self.device,
        )
        i0, i1 = g.alphas.index(0.0), g.alphas.index(a)
        sh, nd = g.shares(), g.ndcg()
        lab = int(np.argmax(np.abs(sh[i1] - sh[i0]))) if a != 0 else int(np.argmax(sh[i0]))
        head = (
            f"<p><b>#{j}</b>: {html.escape(cat.loc[j, 'description'] or '(no description)')}<br>"
            f"{html.escape(who)}, α = {self.alpha.value:g}"
            + (f" × {unit:.3g}" if unit != 1.0 else "")
            + f": NDCG@{g.k} {nd[i0]:.4f} → <b>{nd[i1]:.4f}</b>; "
            f"{html.escape(ds.label_names[lab])} share {sh[i0, lab]:.3f} → <b>{sh[i1, lab]:.3f}</b>.</p>"
        )
        shares = pd.DataFrame({"label": ds.label_names, "before": sh[i0], "after": sh[i1]})
        shares = shares.assign(change=shares["after"] - shares["before"]).sort_values(
            "change", key=abs, ascending=False
        )
        parts = [_frame_html(shares.head(8).round(3), f"label shares of the top-{g.k} (largest changes)")]
        titles = ds.items["title"].to_numpy()
        if len(users) == 1:
            for idx, cap in ((i0, "before (α = 0, base model)"), (i1, f"after (α = {self.alpha.value:g})")):
                items = g.top[idx, 0]
                parts.append(
                    _frame_html(
                        pd.DataFrame(
                            {
                                "rank": range(1, g.k + 1),
                                "title": titles[items],
                                "labels": viz.item_labels_text(ds, items),
                            }
                        ),
                        f"top-{g.k} {cap}",
                    )
                )
        else:
            ent, left = g.changes(i1, None, self.cfg.n_changes)
            for pairs, cap in ((ent, "entering"), (left, "leaving")):
                parts.append(
                    _frame_html(
                        pd.DataFrame(
                            {"title": [titles[i] for i, _ in pairs], "lists": [c for _, c in pairs]}
                        ),
                        f"items {cap} the most top-{g.k} lists",
                    )
                )
        self.output.value = (
            head + '<div style="display:flex;gap:16px;flex-wrap:wrap">' + "".join(parts) + "</div>"
        )
        return self.output.value
