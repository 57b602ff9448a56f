"""Cases and activation levels as P2 defines them (papers.md §2.7).

* **Levels** (:func:`activation_levels`): every positive activation of every latent on the case rows is
  pooled and cut at its deciles (``pd.qcut(q=10)``): levels 1–10; an inactive row has level 0.
* **Cases** (:func:`sample_cases`): per latent, the ``n_describe + n_heldout`` most active rows with level
  ``>= min_level`` are split at random (seeded) into *describe* cases (to write the description) and
  *held-out* cases (to score it; P2 reuses the describe cases when no more than ``n_describe`` exist, and so
  do we — :attr:`LatentCases.reused` says so), plus ``n_random`` random rows where the latent is inactive.
* **A case** (:class:`CasePool`) is one row of the SAE's input: for a user representation (a sequence
  site's last position, ``sasrec.last``, ``<model>.user``) the user's last ``history`` items (P2: 9) and
  the model's **top-1** item (seen items masked) with the row's level; for an item table (``<model>.item``)
  the item itself.
* **Item text** (:func:`item_text`): MovieLens "Title (Year) (Genre, …)", Last.fm "artist (tag, …)".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from recsae_core import metrics, probe
from recsae_core.batching import history_frame, pad_left
from recsae_core.data.dataset import RecDataset, Split
from recsae_core.models.base import Recommender
from recsae_core.sae.base import SparseAutoencoder
from recsae_core.utils import resolve_device

__all__ = [
    "Case",
    "CaseConfig",
    "CasePool",
    "LatentCases",
    "activation_levels",
    "build_pool",
    "case_text",
    "item_text",
    "sample_cases",
]

N_LEVELS = 10


@dataclass
class CaseConfig:
    """How many cases of each kind a latent gets (defaults: P2, papers.md §2.7)."""

    n_describe: int = 5
    """Cases shown to the explainer (P2: 5 "train" cases)."""
    n_heldout: int = 5
    """Active cases the description is scored on (P2: 5 "test" cases, level >= 5, unused for describing)."""
    n_random: int = 5
    """Random cases where the latent is inactive (P2: 5)."""
    min_level: int = 5
    """Lowest level a describe/held-out case may have (P2: 5)."""
    seed: int = 0
    """Seeds the describe/held-out split and the random cases."""

    def __post_init__(self) -> None:
        for name in ("n_describe", "n_heldout", "n_random"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"CaseConfig.{name} must be an int >= 1, got {v!r}")
        if not 1 <= self.min_level <= N_LEVELS:
            raise ValueError(f"CaseConfig.min_level must be in 1..{N_LEVELS}, got {self.min_level}")


@dataclass
class CasePool:
    """The rows cases are drawn from, with what an explainer may read about each.

    Attributes:
        acts: ``(N, M)`` SAE activations of the rows.
        reps: ``(N, D)`` the base model's vectors at the site (coherence, hard negatives).
        users: ``(N,)`` the user behind the row (-1 for item rows).
        items: ``(N,)`` the row's item: the model's top-1 for user rows, the item itself for item rows.
        history: ``(N, H)`` the user's last ``H`` history items, oldest first, -1 = none (item rows: H = 0).
        kind: ``"user"`` or ``"item"``; ``site``: the site name.
        levels: ``(N, M)`` int8 levels 0–10 (:func:`activation_levels`); ``edges``: the 9 decile edges.
    """

    acts: torch.Tensor
    reps: torch.Tensor
    users: torch.Tensor
    items: torch.Tensor
    history: torch.Tensor
    kind: str
    site: str
    levels: torch.Tensor = field(init=False)
    edges: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        n = self.acts.shape[0]
        for name in ("reps", "users", "items", "history"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"CasePool.{name} has {getattr(self, name).shape[0]} rows, acts has {n}")
        if self.kind not in ("user", "item"):
            raise ValueError(f"CasePool.kind must be 'user' or 'item', got {self.kind!r}")
        self.levels, self.edges = activation_levels(self.acts)

    def __len__(self) -> int:
        return self.acts.shape[0]


@dataclass(frozen=True)
class Case:
    """One case of one latent: the pool row, its role, the latent's activation and level there."""

    latent: int
    row: int
    role: str  # "describe" | "heldout" | "random" | "hard"
    activation: float
    level: int


@dataclass
class LatentCases:
    """A latent's cases (P2 §2.7). ``reused``: the held-out cases are the describe cases (too few active)."""

    latent: int
    describe: list[Case]
    heldout: list[Case]
    random: list[Case]
    reused: bool = False


def activation_levels(acts_NM: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(levels (N, M) int8, edges (9,))``: P2's levels (papers.md §2.7).

    All positive activations are pooled and binned at their deciles as ``pd.qcut(q=10)`` does (bins
    ``(e_{i-1}, e_i]``, the first closed): levels 1–10; zero activations get level 0.
    """
    a = torch.as_tensor(acts_NM).float()
    pos = a[a > 0]
    if pos.numel() == 0:
        return torch.zeros(a.shape, dtype=torch.int8), torch.zeros(N_LEVELS - 1)
    edges = torch.from_numpy(np.quantile(pos.double().numpy(), np.arange(1, N_LEVELS) / N_LEVELS)).float()
    lev = 1 + torch.searchsorted(edges, a.contiguous(), right=False)
    lev = torch.where(a > 0, lev, torch.zeros_like(lev))
    return lev.to(torch.int8), edges


def sample_cases(
    pool: CasePool, latents: Sequence[int] | None = None, config: CaseConfig | None = None
) -> dict[int, LatentCases]:
    """P2's cases per latent (module docstring). Latents without any row at ``min_level`` are left out, and
    so are latents that fire on every row: with no inactive row there is no random case, and P2's
    confidence (half of it the precision on random inactive cases) is undefined for them.

    Deterministic given ``config.seed`` (each latent draws from its own generator, so the cases of a latent
    do not depend on which other latents are asked for).
    """
    cfg = config or CaseConfig()
    acts, lev = pool.acts, pool.levels
    ids = range(acts.shape[1]) if latents is None else [int(j) for j in latents]
    out: dict[int, LatentCases] = {}
    for j in ids:
        col = acts[:, j]
        ok = torch.nonzero(lev[:, j] >= cfg.min_level).squeeze(1)
        inactive = torch.nonzero(col <= 0).squeeze(1).numpy()
        if len(ok) == 0 or len(inactive) == 0:
            continue
        order = ok[torch.argsort(-col[ok], stable=True)][: cfg.n_describe + cfg.n_heldout]
        rng = np.random.default_rng([cfg.seed, j])
        top = order[torch.from_numpy(rng.permutation(len(order)))]
        desc, held = top[: cfg.n_describe], top[cfg.n_describe :]
        reused = len(held) == 0
        if reused:
            held = desc
        rand = rng.choice(inactive, size=min(cfg.n_random, len(inactive)), replace=False)

        def mk(rows: Sequence[int], role: str, j: int = j) -> list[Case]:
            return [Case(j, int(r), role, float(acts[r, j]), int(lev[r, j])) for r in rows]

        out[j] = LatentCases(
            j, mk(desc.tolist(), "describe"), mk(held.tolist(), "heldout"), mk(rand, "random"), reused
        )
    return out


@torch.no_grad()
def build_pool(
    model: Recommender,
    site: str,
    sae: SparseAutoencoder,
    split: Split,
    part: str = "test",
    *,
    history: int = 9,
    users: torch.Tensor | Sequence[int] | None = None,
    batch_size: int = 512,
    device: str | torch.device | None = None,
) -> CasePool:
    """The case rows of ``sae`` at ``site`` (module docstring).

    User rows are the evaluation cases of ``part`` (:func:`recsae_core.probe.eval_cases`: histories from
    ``Split.history_for(part)``, seen items masked for the top-1); a ``(B, L, D)`` site is read at the last
    position (where P2 infers and P1 steers). Item sites give one row per item of the table.
    """
    dev = resolve_device(device)
    model.eval().to(dev)
    sae = sae.eval().to(dev)
    model.check_site(site)
    if site.endswith(".item"):
        batch = probe.part_batch(model, split, part)
        table = model.representation(site, batch.to(dev)).float()
        n = table.shape[0]
        acts = sae.encode(table.to(sae.W_enc.dtype)).float().cpu()
        return CasePool(
            acts,
            table.cpu(),
            torch.full((n,), -1),
            torch.arange(n),
            torch.zeros(n, 0, dtype=torch.int64),
            "item",
            site,
        )
    data = probe.eval_cases(model, split, part, users)
    reps, acts, us, top1 = [], [], [], []
    for eb in data.batches(batch_size):
        b = eb.batch.to(dev)
        rep = model.representation(site, b)
        rep = rep[:, -1] if rep.ndim == 3 else rep  # left padding: the last column is the latest item
        reps.append(rep.float().cpu())
        acts.append(sae.encode(rep.to(sae.W_enc.dtype)).float().cpu())
        top1.append(metrics.top_k_items(model.score(b), 1, (eb.seen_rows, eb.seen_items)).cpu()[:, 0])
        us.append(eb.batch.users.cpu())
    users_t = torch.cat(us)
    hist = history_frame(split, part)
    n_users = split.dataset.n_users
    last = (
        pad_left(hist["user"].to_numpy(), hist["item"].to_numpy() + 1, n_users, history) if history else None
    )
    h = torch.from_numpy(last[users_t.numpy()] - 1) if last is not None else torch.zeros(len(users_t), 0)
    return CasePool(torch.cat(acts), torch.cat(reps), users_t, torch.cat(top1), h.long(), "user", site)


# ---------------------------------------------------------------------------------------------- text
def item_text(ds: RecDataset, item: int, max_labels: int = 4) -> str:
    """P2's item text (papers.md §2.7): MovieLens "Title (Year) (Genre, …)"; Last.fm "artist (tag, …)"."""
    row = ds.items.iloc[int(item)]
    title = str(row.get("title", f"item {item}"))
    year = row.get("year")
    if year is not None and not pd.isna(year) and f"({int(year)})" not in title:
        title = f"{title} ({int(year)})"
    labs = [ds.label_names[g] for g in np.flatnonzero(ds.item_labels[int(item)])][:max_labels]
    return f"{title} ({', '.join(labs)})" if labs else title


def case_text(pool: CasePool, ds: RecDataset, case: Case, *, show_level: bool = True) -> str:
    """A case as P2's prompt lists it: one line per item, ``<item text>\\t<activation level>``; history items
    at 0, the top-1 (user rows) or the item (item rows) with its level, or "unknown" when simulating."""
    lines = [f"{item_text(ds, int(i))}\t0" for i in pool.history[case.row].tolist() if i >= 0]
    lines.append(f"{item_text(ds, int(pool.items[case.row]))}\t{case.level if show_level else 'unknown'}")
    return "\n".join(lines)
