"""What the onboarding pages (book/quickstart.ipynb, book/your_recommender.ipynb) need beyond the paper modules.

* :class:`GRU4Rec` — a recommender that is **not** one of recsae's base models: a two-layer GRU over the
  user's item sequence (GRU4Rec-style, Hidasi et al. 2016, trained like SASRec+ with full-softmax
  cross-entropy at every position). It shows what wrapping your own model as a
  :class:`~recsae_core.models.base.Recommender` takes: ``sites``, ``representation``, ``score_from``
  (and ``score``, ``n_items``, ``maxlen`` for a sequential model). The guide prints its source.
* :func:`fit_gru4rec` — "your own training loop": plain Adam over :func:`recsae_core.batching.train_sequences`
  with :func:`recsae_core.train.linear_cross_entropy`, early stopping on validation NDCG@10
  (:func:`recsae_core.evaluate.evaluate`). recsae never needs to know how a model was trained.
* :func:`check_sites` — the interface contract: scoring a site's own representation must give ``score``.
* :func:`write_interactions_csv` — a dataset written as "your own" CSV files (interactions + item catalogue),
  the input :func:`recsae_core.data.loaders.load_csv` reads.
* :func:`feature_cards`, :func:`item_activations`, :func:`steered_lists_table`, :func:`report_table` — the
  pages' tables: the feature chosen for each genre with its items (P1 §1.7-1.8), one user's top-k before
  and after steering, and the few numbers of an SAE report a newcomer needs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from recsae_core.models.base import Recommender, UserBatch

__all__ = [
    "CSVFiles",
    "GRU4Rec",
    "GRU4RecConfig",
    "check_sites",
    "feature_cards",
    "fit_gru4rec",
    "item_activations",
    "report_table",
    "steered_lists_table",
    "write_interactions_csv",
]


# ---------------------------------------------------------------------------------------------- the model
@dataclass
class GRU4RecConfig:
    """A small GRU4Rec-style sequential recommender and how :func:`fit_gru4rec` trains it."""

    d: int = 64
    """Hidden size = item embedding size (SASRec+'s 64, so the SAE sees the same width)."""
    n_layers: int = 2
    """Stacked GRU layers; each one's output is a site (``gru4rec.layer0`` ... ) of shape ``(B, L, D)``."""
    maxlen: int = 50
    """History length (the most recent items). A GRU steps through positions one after another, so its cost
    grows with this; ML-100k's median history is 65 events."""
    dropout: float = 0.2
    """Dropout on the embeddings and between layers (training only)."""
    lr: float = 3e-3
    """Adam learning rate (1e-3 reached the same validation NDCG@10 more slowly on ML-100k)."""
    batch_size: int = 128
    """Users per batch."""
    epochs: int = 30
    """Maximum epochs."""
    patience: int = 5
    """Epochs without a better validation NDCG@10 before stopping (the best epoch's weights are kept)."""

    def __post_init__(self) -> None:
        for name in ("d", "n_layers", "maxlen", "batch_size", "epochs", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"GRU4RecConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GRU4RecConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.lr <= 0:
            raise ValueError(f"GRU4RecConfig.lr must be > 0, got {self.lr}")


class GRU4Rec(Recommender):
    """Item sequence → stacked GRUs → the last position's state dotted with the item embeddings.

    Sites (what the SAE can read and replace):

    * ``gru4rec.layer{i}``: ``(B, L, D)`` output of GRU layer ``i`` at every position (P1 reads its
      transformer's block 0 the same way);
    * ``gru4rec.last``: ``(B, D)`` the linear head's output at the last position, the user vector.

    The GRUs have no biases, so a zero input (the padding embedding) keeps a zero state exactly: the left
    padding before a history changes nothing, and batches may drop their all-padding columns.
    """

    sites: ClassVar[dict[str, str]] = {}

    def __init__(self, n_users: int, n_items: int, config: GRU4RecConfig | None = None) -> None:
        super().__init__()
        cfg = config or GRU4RecConfig()
        self.config, self.n_users, self.n_items, self.maxlen = cfg, n_users, n_items, cfg.maxlen
        self.item_emb = nn.Embedding(n_items + 1, cfg.d, padding_idx=0)  # row 0 = padding
        self.grus = nn.ModuleList(
            nn.GRU(cfg.d, cfg.d, batch_first=True, bias=False) for _ in range(cfg.n_layers)
        )
        self.head = nn.Linear(
            cfg.d, cfg.d
        )  # GRU states lie in (-1, 1): a linear head gives logits their scale
        self.sites = {
            **{
                f"gru4rec.layer{i}": f"(B, L, D) output of GRU layer {i} at every position"
                for i in range(cfg.n_layers)
            },
            "gru4rec.last": "(B, D) the head's output at the last position (the user vector)",
        }
        nn.init.normal_(self.item_emb.weight, 0.0, 0.05)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    @property
    def output_table(self) -> torch.Tensor:
        """``(n_items, D)``: scores are ``state · output_table.T`` (tied with the input embeddings)."""
        return self.item_emb.weight[1:]

    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.dropout(x, self.config.dropout, self.training)

    def _run(self, x_BLD: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """GRU layers ``start .. stop - 1`` over ``x_BLD`` (dropout between layers while training)."""
        for i in range(start, stop):
            x_BLD = self.grus[i](self._drop(x_BLD) if i > 0 else x_BLD)[0]
        return x_BLD

    def hidden(self, seqs_BL: torch.Tensor) -> torch.Tensor:
        """``(B, L, D)`` user vectors at every position (training scores them all)."""
        return self.head(self._run(self._drop(self.item_emb(seqs_BL)), 0, len(self.grus)))

    # --- the Recommender interface ------------------------------------------------------------------
    def _seqs(self, batch: UserBatch) -> torch.Tensor:
        if batch.seqs is None:
            raise ValueError("GRU4Rec needs UserBatch.seqs (left-padded histories, item i stored as i + 1)")
        return batch.seqs

    def representation(self, site: str, batch: UserBatch) -> torch.Tensor:
        self.check_site(site)
        x = self.item_emb(self._seqs(batch))
        if site == "gru4rec.last":
            return self.head(self._run(x, 0, len(self.grus))[:, -1])
        return self._run(x, 0, int(site.removeprefix("gru4rec.layer")) + 1)

    def score_from(self, site: str, rep: torch.Tensor, batch: UserBatch) -> torch.Tensor:
        self.check_site(site)
        if site == "gru4rec.last":
            return rep @ self.output_table.T  # (B, n_items)
        h_BLD = self._run(rep, int(site.removeprefix("gru4rec.layer")) + 1, len(self.grus))
        return self.head(h_BLD[:, -1]) @ self.output_table.T

    def score(self, batch: UserBatch) -> torch.Tensor:
        return self.score_from("gru4rec.last", self.representation("gru4rec.last", batch), batch)


def fit_gru4rec(
    split: Any,
    config: GRU4RecConfig | dict[str, Any] | None = None,
    *,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Any:
    """Train a :class:`GRU4Rec` on ``split.train`` (full-softmax cross-entropy at every position, Adam),
    validating NDCG@10 on ``split.valid`` after each epoch; returns a :class:`recsae_core.train.TrainResult`
    (``model_name="gru4rec"``) with the best epoch's weights, in eval mode."""
    from tqdm.auto import tqdm

    from recsae_core.batching import train_sequences
    from recsae_core.evaluate import evaluate
    from recsae_core.train import TrainResult, linear_cross_entropy
    from recsae_core.utils import resolve_device, seed_everything

    cfg = GRU4RecConfig(**config) if isinstance(config, dict) else (config or GRU4RecConfig())
    split.dataset.require_timestamps("GRU4Rec (a sequential model)")
    t0 = time.perf_counter()
    gen = seed_everything(seed)
    dev = resolve_device(device)
    model = GRU4Rec(split.dataset.n_users, split.dataset.n_items, cfg).to(dev)
    seqs = train_sequences(split, cfg.maxlen)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    norm = float(seqs.lengths.sum()) / math.ceil(len(seqs) / cfg.batch_size)  # mean targets per batch
    rows, best, best_epoch, best_state, bad = [], -math.inf, 0, None, 0
    for epoch in tqdm(range(1, cfg.epochs + 1), desc="fit gru4rec", disable=not progress):
        t_train = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        for idx in torch.randperm(len(seqs), generator=gen).split(cfg.batch_size):
            inp, lab = seqs.inputs[idx], seqs.labels[idx]
            first = int((inp != 0).any(0).nonzero()[0])  # all-padding columns change nothing (no biases)
            inp, lab = inp[:, first:].to(dev), lab[:, first:].to(dev)
            keep = lab > 0
            loss_sum = linear_cross_entropy(model.hidden(inp)[keep], model.output_table, lab[keep] - 1)
            opt.zero_grad(set_to_none=True)
            (loss_sum / norm).backward()
            opt.step()
            total, count = total + float(loss_sum.detach()), count + int(keep.sum())
        t_valid = time.perf_counter()
        m = evaluate(model, split, "valid", ks=(10,), device=dev)
        rows.append(
            {
                "epoch": epoch,
                "loss": total / max(count, 1),
                "valid_ndcg@10": m["ndcg@10"],
                "valid_hr@10": m["hr@10"],
                "train_s": t_valid - t_train,
                "valid_s": time.perf_counter() - t_valid,
            }
        )
        if m["ndcg@10"] > best:
            best, best_epoch, bad = m["ndcg@10"], epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= cfg.patience:
                break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, pd.DataFrame(rows), best_epoch, cfg, "gru4rec", time.perf_counter() - t0)


@torch.no_grad()
def check_sites(model: Recommender, split: Any, part: str = "test", n_users: int = 64) -> pd.DataFrame:
    """The interface contract, site by site: ``score_from(site, representation(site))`` must equal
    ``score`` (else a spliced SAE with its error term kept would not give the base model back).

    Returns one row per site: ``site``, ``shape`` (of the representation for ``n_users`` users of ``part``),
    ``max |difference|`` (to ``score``) and ``ok`` (difference ≤ 1e-5 × the largest score)."""
    from recsae_core.probe import part_batch

    model.eval()
    batch = part_batch(model, split, part)
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    batch = UserBatch(batch.users[:n_users], None if batch.seqs is None else batch.seqs[:n_users]).to(dev)
    base = model.score(batch)
    tol = 1e-5 * float(base.abs().max().clamp_min(1.0))
    rows = []
    for site in model.sites:
        rep = model.representation(site, batch)
        diff = float((model.score_from(site, rep, batch) - base).abs().max())
        rows.append({"site": site, "shape": tuple(rep.shape), "max |difference|": diff, "ok": diff <= tol})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class CSVFiles:
    """The two files :func:`write_interactions_csv` writes, and the columns :func:`load_csv` must be told."""

    interactions: Path
    items: Path
    columns: ClassVar[dict[str, str]] = {
        "user_col": "uid",
        "item_col": "sku",
        "rating_col": "stars",
        "timestamp_col": "ts",
        "item_id_col": "sku",
        "title_col": "name",
        "labels_col": "genres",
    }


def write_interactions_csv(ds: Any, folder: str | Path) -> CSVFiles:
    """Write ``ds`` as a shop would export it: ``clicks.csv`` (``uid, sku, stars, ts``: original ids, one
    row per event) and ``catalogue.csv`` (``sku, name, genres`` with genres joined by ``|``).

    :func:`recsae_core.data.loaders.load_csv` with :attr:`CSVFiles.columns` reads them back into the same
    interactions and labels (item and user indices may be renumbered: ``load_csv`` numbers ids in its own
    order). Timestamps are written only when ``ds`` has them.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    inter = ds.interactions
    clicks = pd.DataFrame(
        {
            "uid": ds.users["user_id"].to_numpy()[inter["user"].to_numpy()],
            "sku": ds.items["item_id"].to_numpy()[inter["item"].to_numpy()],
            "stars": inter["rating"].to_numpy(),
        }
    )
    if ds.has_timestamps:
        clicks["ts"] = inter["timestamp"].to_numpy()
    labels = np.asarray(ds.item_labels, dtype=bool)
    names = np.asarray(ds.label_names, dtype=object)
    catalogue = pd.DataFrame(
        {
            "sku": ds.items["item_id"].to_numpy(),
            "name": ds.items["title"].to_numpy(),
            "genres": ["|".join(names[row]) for row in labels],
        }
    )
    out = CSVFiles(folder / "clicks.csv", folder / "catalogue.csv")
    clicks.to_csv(out.interactions, index=False)
    catalogue.to_csv(out.items, index=False)
    return out


# ------------------------------------------------------------------------------------------------ tables
def item_activations(acts_NM: Any, items_N: Any, n_items: int, min_rows: int = 5) -> torch.Tensor:
    """``(m, n_items)`` mean activation of each feature over the rows whose input item is each item (what a
    feature *reads*); items behind fewer than ``min_rows`` rows get 0, so one chance row cannot top a list.

    For a site after which the model is not linear in the representation (a GRU layer), this is the way to
    name a feature's items; P1's logit effect (:func:`recsae_core.papers.p1.logit_effects`, what a feature
    *writes*) assumes SASRec's residual stream.
    """
    h = torch.as_tensor(acts_NM).double()
    items = torch.as_tensor(items_N, dtype=torch.int64)
    if h.shape[0] != items.shape[0]:
        raise ValueError(f"{h.shape[0]} activation rows but {items.shape[0]} items")
    if len(items) and (int(items.min()) < 0 or int(items.max()) >= n_items):
        raise ValueError(f"row items must lie in [0, {n_items}) (rows without an item carry -1)")
    count_I = torch.bincount(items, minlength=n_items).double()
    sum_IM = torch.zeros(n_items, h.shape[1], dtype=torch.float64).index_add_(0, items, h)
    mean_IM = sum_IM / count_I.clamp_min(1)[:, None]
    mean_IM[count_I < min_rows] = 0.0
    return mean_IM.T.float().contiguous()


def feature_cards(
    chosen: pd.DataFrame,
    item_scores_MI: Any,
    dataset: Any,
    labels: Sequence[str],
    k: int = 5,
    *,
    items_column: str = "top items it pushes up",
) -> pd.DataFrame:
    """One row per label: the feature :func:`recsae_core.papers.p1.steering_features` chose for it, how well
    it tracks the label, and the ``k`` items with the highest ``item_scores_MI`` for that feature (P1 §1.7's
    logit effect, :func:`recsae_core.papers.p1.logit_effects`, or :func:`item_activations`), with how many
    of them carry the label.

    Columns: ``genre``, ``feature``, ``correlation``, ``fires on genre rows`` (P(f > 0 | genre)),
    ``items_column`` (titles joined by "; "), ``of them in genre`` (e.g. "4/5").
    """
    from recsae_core.papers.p1 import top_bottom_items

    by_label = chosen.set_index("label")
    missing = [lab for lab in labels if lab not in by_label.index]
    if missing:
        raise KeyError(
            f"labels {missing} are not in the steering-feature table; it has {list(by_label.index)}"
        )
    lab_matrix = np.asarray(dataset.item_labels, dtype=bool)
    rows = []
    for lab in labels:
        feat = int(by_label.loc[lab, "feature"])
        g = list(dataset.label_names).index(lab)
        top = top_bottom_items(item_scores_MI, feat, k=k, dataset=dataset)
        top = top[top["side"] == "top"]
        rows.append(
            {
                "genre": lab,
                "feature": feat,
                "correlation": float(by_label.loc[lab, "corr"]),
                "fires on genre rows": float(by_label.loc[lab, "fraction_fired"]),
                items_column: "; ".join(top["title"].astype(str)),
                "of them in genre": f"{int(lab_matrix[top['item'].to_numpy(), g].sum())}/{len(top)}",
            }
        )
    return pd.DataFrame(rows)


def report_table(report: Any, k: int = 10) -> pd.DataFrame:
    """The few numbers of an :class:`~recsae_core.sae_eval.SAEReport` a newcomer needs, each with what it
    means: explained variance, L0, dead and dense features, NDCG@k and HR@k of the base model, spliced
    (error term dropped) and spliced with the error kept (which must equal the base model)."""
    acc = report.accuracy
    rows = [
        (
            "explained variance",
            report.explained_variance,
            "share of the site's variance the reconstruction keeps (1 = perfect)",
        ),
        ("L0", report.l0, f"features active per row, of {report.n_latents}"),
        ("dead features", report.dead_fraction, "share of features that never fire on these rows"),
        ("dense features", report.dense_fraction, "share firing on more than 10 % of rows (hard to read)"),
    ]
    for variant, text in (
        ("base", "the model as trained"),
        ("spliced", "reconstruction in place of the site (error term dropped)"),
        ("spliced_keep_error", "reconstruction + error term: must equal the base model"),
    ):
        if variant in acc:
            for m in ("ndcg", "hr"):
                rows.append((f"{m.upper()}@{k}, {variant.replace('_', ' ')}", acc[variant][f"{m}@{k}"], text))
    return pd.DataFrame(rows, columns=["quantity", "value", "what it means"])


def steered_lists_table(lists: pd.DataFrame, dataset: Any, label: str, alpha: float) -> pd.DataFrame:
    """One user's top-k before (α = 0) and after steering (α = ``alpha``), side by side, from
    :func:`recsae_core.papers.p1.steered_top_k`; items carrying ``label`` are marked ●, the held-out item ✓.

    Columns: ``rank``, ``before``, ``after`` (titles with their marks). ``attrs`` hold ``share_before`` and
    ``share_after`` (the label's share of each list).
    """
    if lists["user"].nunique() != 1:
        raise ValueError("steered_lists_table shows one user's lists; filter `lists` to one user")
    if label not in dataset.label_names:
        raise KeyError(f"{label!r} is not a label of {dataset.name}")
    g = list(dataset.label_names).index(label)
    has = np.asarray(dataset.item_labels, dtype=bool)[:, g]
    titles = dataset.items["title"].to_numpy()

    def column(a: float) -> tuple[list[str], float]:
        r = lists[lists["alpha"] == a].sort_values("rank")
        if r.empty:
            raise ValueError(f"lists have no rows for α = {a:g}")
        items = r["item"].to_numpy()
        text = [
            f"{'● ' if has[i] else ''}{titles[i]}{' ✓' if t else ''}"
            for i, t in zip(items, r["is_target"].to_numpy(), strict=True)
        ]
        return text, float(has[items].mean())

    before, s0 = column(0.0)
    after, s1 = column(float(alpha))
    out = pd.DataFrame(
        {"rank": range(1, len(before) + 1), "before (α = 0)": before, f"after (α = {alpha:g})": after}
    )
    out.attrs = {"share_before": s0, "share_after": s1}
    return out
