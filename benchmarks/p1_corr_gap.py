"""Why recsae's mean max correlation on ``ml-1m-prefix`` (0.629) stays below P1's 0.658 (issue #14).

Two measurements, both through :mod:`recsae_core.papers.p1` and the caches (papers.md §1.4-1.6, §1.10, §4.1):

1. **Evaluation protocol** on the chapter's own run (:func:`recsae_core.papers.p1.run`): our rows (each test
   user's last ``maxlen`` events) vs P1's (``CausalLMDataset``: the last ``maxlen + 1`` events minus the
   last, so each user's final event is never a row and the window ends one event earlier), and a bootstrap
   over test users of the headline (how much 300 test users move it), and P1's per-genre numbers beside ours
   (:func:`recsae_core.papers.p1.genre_gap`).
2. **Base-model data** (:func:`recsae_core.papers.p1.training_users_curve`): SASRec trained on a fraction
   of the recommender's users (nested subsets; SAE users, test rows, SAE recipe unchanged), the headline
   and the genres' linear decodability at block 0 per fraction, each extrapolated to P1's 3,262 users
   (:func:`recsae_core.papers.p1.extrapolate_users`). P1's GPT4Rec saw 3,262 users; the prefix leaves 1,619.

Writes ``<out>/p1_corr_gap.json`` (both parts) and ``<out>/p1_corr_gap_curve.csv``, and prints them.
Training the smaller SASRecs takes minutes each on 2 cores (cached afterwards): run it under the heavy-run
lock. Usage: ``python benchmarks/p1_corr_gap.py [--dataset ml-1m-prefix] [--fractions 0.25,0.5,1]
[--seeds 0] [--out benchmarks/results]``. Needs the real data (``$RECSAE_DATA``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]


def protocol_effects(dataset: str, n_boot: int = 200) -> dict[str, float]:
    """Part 1: the headline on our rows, on P1's rows, and its bootstrap spread over test users."""
    import dataclasses

    import numpy as np
    import torch

    from recsae_core import metrics, probe
    from recsae_core.papers import p1

    run = p1.run(dataset)
    ours = metrics.mean_max_correlation(run.sae_acts, run.labels)
    full = run.split.extra["test_full"].sort_values(["user", "timestamp"], kind="stable")
    not_last = full.groupby("user").cumcount(ascending=False).to_numpy() > 0
    split2 = dataclasses.replace(run.split, extra={**run.split.extra, "test_p1": full[not_last]})
    seqs = p1.sequences(split2, "test_p1", int(run.model.maxlen))
    acts = probe.collect_activations(run.model, run.site, seqs, positions="all", progress=False)
    p1_rows = metrics.mean_max_correlation(
        p1.encode_rows(run.sae, acts.acts), p1.row_labels(acts, run.item_labels)
    )
    users = run.test_acts.users.numpy()
    by_user = [np.flatnonzero(users == u) for u in np.unique(users)]
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(n_boot):
        idx = torch.from_numpy(
            np.concatenate([by_user[i] for i in rng.integers(0, len(by_user), len(by_user))])
        )
        boot.append(metrics.mean_max_correlation(run.sae_acts[idx], run.labels[idx]))
    gap = p1.genre_gap(run)
    print(gap.round(3).to_string(index=False))
    return {
        "genre_gap": gap.to_dict(orient="records"),
        "test_users": len(by_user),
        "rows_ours": len(run.sae_acts),
        "mean_max_corr_ours_rows": ours,
        "rows_p1": len(acts.acts),
        "mean_max_corr_p1_rows": p1_rows,
        "bootstrap_sd": float(np.std(boot)),
        "bootstrap_p2.5": float(np.quantile(boot, 0.025)),
        "bootstrap_p97.5": float(np.quantile(boot, 0.975)),
        "p1_ml1m_dev": p1.P1_ML1M_DEV["mean_max_corr"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-1m-prefix")
    ap.add_argument("--fractions", default="0.25,0.5,1", help="fractions of the recommender's users")
    ap.add_argument("--seeds", default="0", help="base-model seeds")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()

    import pandas as pd
    import torch

    from recsae_core.papers import p1

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proto = protocol_effects(args.dataset)
    print(json.dumps(proto, indent=1), flush=True)
    t1 = time.perf_counter()
    curve = p1.training_users_curve(
        args.dataset,
        [float(f) for f in args.fractions.split(",")],
        model_seeds=[int(s) for s in args.seeds.split(",")],
        device=args.device,
        progress=False,
    )
    t2 = time.perf_counter()
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(curve.round(4).to_string(index=False))
    curve.to_csv(out / "p1_corr_gap_curve.csv", index=False)
    extrapolated = {}
    if curve["train_users"].nunique() >= 3:
        for col in ("mean_max_corr", "linear_r", "ndcg@10"):
            extrapolated[col] = p1.extrapolate_users(curve, column=col)
            print(f"{col} at P1's {p1.P1_ML1M_TRAIN_USERS} users:", json.dumps(extrapolated[col]))
    result = {
        "dataset": args.dataset,
        "protocol": proto,
        "curve": curve.to_dict(orient="records"),
        "curve_rows": curve.attrs,
        "extrapolated": extrapolated,
        "seconds": {"protocol": t1 - t0, "curve": t2 - t1},
        "threads": torch.get_num_threads(),
        "loadavg": os.getloadavg(),
    }
    (out / "p1_corr_gap.json").write_text(json.dumps(result, indent=1))
    print(f"wrote {out / 'p1_corr_gap.json'} ({t2 - t0:.0f} s)")


if __name__ == "__main__":
    main()
