"""Seeded splits, each named after the protocol that uses it.

| function | used by | what |
|---|---|---|
| :func:`leave_one_out` | base-model quality, SASRec (P1/P2 style) | per user: last event = test, second-to-last = valid (by time; without timestamps, seeded random) |
| :func:`p1_new_users` | P1 | newest 10 % of users (by first event) = test; the rest 60/40 into model-training and SAE-training users |
| :func:`p3_holdout` | P3 | per user 5 positives held out for test (p ∝ exp(popularity share)), 1 more for validation |
| :func:`p2_temporal` | P2 (ReChorus ``ML_1MTOPK``) | global temporal 80/10/10 on the day index; users/items unseen in train dropped |

All are vectorised (no per-user Python loops) and deterministic given ``seed``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .dataset import RecDataset, Split

__all__ = ["leave_one_out", "p1_new_users", "p2_temporal", "p3_holdout"]


def _ordered(df: pd.DataFrame, rng: np.random.Generator, by_time: bool) -> pd.DataFrame:
    """Rows grouped by user, in time order (file order breaks ties) or a seeded random order."""
    df = df.assign(_row=np.arange(len(df)))
    if by_time:
        keys = ["user", "timestamp", "_row"]
    else:
        df["_key"] = rng.random(len(df))
        keys = ["user", "_key"]
    df = df.sort_values(keys, kind="stable")
    return df.drop(columns=[c for c in ("_row", "_key") if c in df.columns]).reset_index(drop=True)


def _position_from_end(df: pd.DataFrame) -> np.ndarray:
    """0 for each user's last row, 1 for the one before, ... (``df`` grouped by user)."""
    return df.groupby("user", sort=False).cumcount(ascending=False).to_numpy()


def leave_one_out(ds: RecDataset, seed: int = 0, min_interactions: int = 3) -> Split:
    """Leave-one-out: each user's last event is the test target, the one before it the validation target.

    Order is by timestamp when the data has them (ties kept in file order); otherwise one seeded random
    event per user is held out for test and another for validation. Users with fewer than
    ``min_interactions`` events stay entirely in ``train``.
    """
    rng = np.random.default_rng(seed)
    df = _ordered(ds.interactions, rng, ds.has_timestamps)
    from_end = _position_from_end(df)
    counts = df.groupby("user", sort=False)["item"].transform("size").to_numpy()
    eligible = counts >= min_interactions
    test = df[eligible & (from_end == 0)].reset_index(drop=True)
    valid = df[eligible & (from_end == 1)].reset_index(drop=True)
    train = df[~eligible | (from_end >= 2)].reset_index(drop=True)
    name = "loo-time" if ds.has_timestamps else "loo-random"
    return Split(name, ds, train, valid, test, seed=seed)


def _split_last(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(history, last event) per user of a frame grouped by user in time order."""
    last = _position_from_end(df) == 0
    return df[~last].reset_index(drop=True), df[last].reset_index(drop=True)


def p1_new_users(
    ds: RecDataset,
    seed: int = 42,
    test_frac: float = 0.1,
    sae_frac: float = 0.4,
    max_valid_users: int = 10_000,
) -> Split:
    """P1's split (Klenitskiy et al., `data_split.py`: RePlay ``NewUsersSplitter`` + ``ColdUserRandomSplitter``).

    1. Test users: the newest ``test_frac`` of users by first interaction, whole histories. The split date is
       the earliest first interaction among them; other users keep only events before it.
    2. Keep non-test users with more than one event; split them at random (``seed``) into ``train``
       (1 − ``sae_frac``: fits the recommender) and ``extra["sae"]`` (``sae_frac``: never seen by the
       recommender; trains the SAE; its users' last events, at most ``max_valid_users``, are the validation
       targets).
    3. Items unseen in ``train`` are dropped from the SAE and test parts ("drop cold items").

    Parts: ``train``; ``valid`` (last event of sampled SAE users; their history: their earlier events);
    ``test`` (last event of each test user; history: their earlier events); ``extra["sae"]`` and
    ``extra["test_full"]`` (whole sequences, for activation collection).
    """
    ds.require_timestamps("P1's new-users split")
    rng = np.random.default_rng(seed)
    df = _ordered(ds.interactions, rng, by_time=True)
    first = df.groupby("user", sort=False)["timestamp"].min().sort_index()
    order = np.lexsort((first.index.to_numpy(), first.to_numpy()))
    n_test = max(1, round(test_frac * len(first)))
    test_users = first.index.to_numpy()[order[-n_test:]]
    split_date = first.loc[test_users].min()
    is_test = df["user"].isin(test_users).to_numpy()
    old = df[~is_test & (df["timestamp"].to_numpy() < split_date)]
    sizes = old.groupby("user", sort=False)["item"].transform("size").to_numpy()
    old = old[sizes > 1]
    users = np.sort(old["user"].unique())
    perm = rng.permutation(len(users))
    n_sae = round(sae_frac * len(users))
    sae_users = users[perm[:n_sae]]
    in_sae = old["user"].isin(sae_users).to_numpy()
    train = old[~in_sae].reset_index(drop=True)
    known = np.zeros(ds.n_items, dtype=bool)
    known[train["item"].to_numpy()] = True
    sae = old[in_sae]
    sae = sae[known[sae["item"].to_numpy()]].reset_index(drop=True)
    test_full = df[is_test]
    test_full = test_full[known[test_full["item"].to_numpy()]].reset_index(drop=True)
    # Validation: last event of (at most max_valid_users) SAE users with at least two events left.
    sae_multi = sae[sae.groupby("user", sort=False)["item"].transform("size").to_numpy() > 1]
    vusers = np.sort(sae_multi["user"].unique())
    if len(vusers) > max_valid_users:
        vusers = np.sort(rng.choice(vusers, max_valid_users, replace=False))
    valid_hist, valid = _split_last(sae_multi[sae_multi["user"].isin(vusers)])
    test_multi = test_full[test_full.groupby("user", sort=False)["item"].transform("size").to_numpy() > 1]
    test_hist, test = _split_last(test_multi.reset_index(drop=True))
    return Split(
        "p1-new-users",
        ds,
        train,
        valid,
        test,
        extra={"sae": sae, "test_full": test_full},
        seed=seed,
        context={"valid": valid_hist, "test": test_hist},
    )


def _weighted_top_n(df: pd.DataFrame, weights: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Per user, a weighted sample of ``n`` rows without replacement (Efraimidis-Spirakis keys).

    Returns a boolean mask over ``df``'s rows.
    """
    keys = np.log(rng.random(len(df))) / weights  # larger is better
    rank = pd.Series(keys).groupby(df["user"].to_numpy()).rank(ascending=False, method="first").to_numpy()
    return rank <= n


def p3_holdout(
    ds: RecDataset, seed: int = 42, n_test: int = 5, n_valid: int = 1, min_train: int = 2
) -> Split:
    """P3's per-user hold-out (Arviv et al., ML-1M ``data_processing``): 5 positives per user for test.

    Interactions are binarised (every rating is a positive). Held-out items are drawn without replacement
    with p ∝ exp(popularity share), popularity share = the item's number of users / number of users (nearly
    uniform, as in the authors' code). ``n_valid`` more per user form the validation part (used only for
    early stopping). Users with fewer than ``n_test + n_valid + min_train`` events stay entirely in train.
    """
    rng = np.random.default_rng(seed)
    df = _ordered(ds.interactions, rng, ds.has_timestamps).assign(rating=np.float32(1.0))
    pop = np.bincount(df["item"].to_numpy(), minlength=ds.n_items) / max(1, df["user"].nunique())
    w = np.exp(pop[df["item"].to_numpy()])
    counts = df.groupby("user", sort=False)["item"].transform("size").to_numpy()
    eligible = counts >= n_test + n_valid + min_train
    held = _weighted_top_n(df, w, n_test + n_valid, rng) & eligible
    hdf = df[held]
    # Among held rows: the first n_test by a second seeded draw go to test, the rest to validation.
    r = pd.Series(rng.random(len(hdf))).groupby(hdf["user"].to_numpy()).rank(method="first").to_numpy()
    test = hdf[r <= n_test].reset_index(drop=True)
    valid = hdf[r > n_test].reset_index(drop=True)
    train = df[~held].reset_index(drop=True)
    return Split("p3-holdout", ds, train, valid, test, seed=seed)


def p2_temporal(
    ds: RecDataset,
    train_frac: float = 0.8,
    valid_frac: float = 0.1,
    min_rating: float | None = None,
    seed: int = 0,
) -> Split:
    """P2's global temporal split (ReChorus ``ML_1MTOPK``): first 80 % of days train, next 10 % valid, rest test.

    Days are ``timestamp // 86400``; the cut points are quantiles of the distinct days. Users and items that
    do not occur in ``train`` are dropped from valid and test. ``min_rating`` keeps only ratings at or above
    it (P2 uses 4 on ML-1M). Valid and test may hold several events per user: each row is one evaluation case
    (ReChorus evaluates every test interaction), read with its own history: the split sets
    :attr:`~recsae_core.data.dataset.Split.case_histories` (ReChorus' history and masking rule).
    """
    ds.require_timestamps("P2's temporal split")
    if not 0 < train_frac < train_frac + valid_frac < 1:
        raise ValueError(f"need 0 < train_frac < train_frac + valid_frac < 1, got {train_frac}, {valid_frac}")
    df = _ordered(ds.interactions, np.random.default_rng(seed), by_time=True)
    if min_rating is not None:
        df = df[df["rating"].to_numpy() >= min_rating].reset_index(drop=True)
    day = df["timestamp"].to_numpy() // 86400
    days = np.unique(day)
    cut1 = days[int(np.floor(train_frac * len(days)))]
    cut2 = days[int(np.floor((train_frac + valid_frac) * len(days)))]
    train = df[day < cut1].reset_index(drop=True)
    known_u = np.zeros(ds.n_users, bool)
    known_u[train["user"].to_numpy()] = True
    known_i = np.zeros(ds.n_items, bool)
    known_i[train["item"].to_numpy()] = True
    rest = df[(day >= cut1) & known_u[df["user"].to_numpy()] & known_i[df["item"].to_numpy()]]
    rday = rest["timestamp"].to_numpy() // 86400
    valid = rest[rday < cut2].reset_index(drop=True)
    test = rest[rday >= cut2].reset_index(drop=True)
    return Split("p2-temporal", ds, train, valid, test, seed=seed, case_histories=True)
