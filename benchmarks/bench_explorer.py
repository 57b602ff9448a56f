"""Time the feature explorer (:func:`recsae_core.explorer.explore_sae`) on a P2 page's SAE.

The P2 ``ml-1m-notime`` page spent 645 s of its 21 minutes on two explorers (1,024 features each); most
of it rebuilt the sampled users' evaluation cases from the 1M-row split once per feature (about 0.3 s each).
This script loads (or trains, through the artifact cache) P2's base model on ``--dataset``, takes its k = 8
P2 SAE from the SAE cache (trained on the first run) and times the explorer's two stages: describe and score
(:func:`recsae_core.concepts.describe_sae`) and the cards (:func:`recsae_core.explorer.feature_cards`, with
the causal effect of every live feature on ``--users`` sampled users). One kernel thread, as the book runs.

Usage: ``python benchmarks/bench_explorer.py [--dataset ml-1m-notime] [--model bprmf] [--users 100]``.
Needs the real data (``$RECSAE_DATA``). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ml-1m-notime")
    ap.add_argument("--model", default="bprmf")
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--k", type=int, default=8)
    args = ap.parse_args()

    import torch

    from recsae_core import concepts, explorer
    from recsae_core.papers import p2

    torch.set_num_threads(1)
    bm = p2.p2_base_models(args.dataset, [args.model], progress=False)
    model, split = bm.results[args.model].model, bm.split
    site = p2.p2_site(model)
    rows = p2.p2_train_activations(model, site, split, weighting="users", progress=False)
    tc = p2.p2_train_config(lr=3e-4, batch_size=4, rows_per_sample=p2.p2_rows_per_sample(rows))
    run = p2.train_p2_sae(model, site, split, rows, args.k, train_config=tc, progress=False)  # the page's SAE
    cs = p2.p2_concept_split(split)
    t0 = time.perf_counter()
    d = concepts.describe_sae(model, site, run.sae, cs)
    t1 = time.perf_counter()
    data = explorer.feature_cards(
        model,
        site,
        run.sae,
        cs,
        d.pool,
        d.table,
        d.scores,
        config=explorer.ExplorerConfig(n_users=args.users),
    )
    t2 = time.perf_counter()
    live = sum(1 for c in data["features"] if not c.get("dead"))
    print(
        json.dumps(
            {
                "dataset": args.dataset,
                "model": args.model,
                "k": args.k,
                "features": len(data["features"]),
                "live": live,
                "users": data["n_users"],
                "describe_s": round(t1 - t0, 1),
                "cards_s": round(t2 - t1, 1),
                "cards_ms_per_live_feature": round(1000 * (t2 - t1) / max(live, 1), 1),
                "payload_mb": round(explorer.payload_bytes(data) / 1e6, 2),
            }
        )
    )


if __name__ == "__main__":
    main()
