"""Base-model quality: leave-one-out, full ranking over all items, the user's seen items masked.

For each (dataset, model) pair: train with early stopping on validation NDCG@10 (``recsae_core.train.fit``,
through the artifact cache), then report test NDCG@10 and HR@10 (ties optimistic; see
``recsae_core.evaluate``). Pairs (as in the issue):

| dataset | models |
|---|---|
| ``ml-100k`` | sasrec, bert4rec, bprmf, lightgcn, mf, ncf, pop |
| ``lastfm-2k`` (no timestamps: random leave-one-out, no SASRec) | bprmf, lightgcn, mf, ncf, pop |
| ``ml-1m-prefix`` (ML-1M users 1–2999, timestamped) | sasrec, bert4rec, pop |
| ``ml-1m-notime`` (all ML-1M ratings, no timestamps) | bprmf, lightgcn, mf, ncf, pop |

The configs are the models' documented defaults with the per-dataset overrides in :data:`OVERRIDES`
(epoch caps for CPU time; each is listed in the table). Results go to ``benchmarks/results/quality.{md,csv}``
(gitignored) and are printed.

Usage: ``python benchmarks/quality.py [--datasets ml-100k,...] [--models sasrec,...] [--no-cache]``.
Needs the real data (``$RECSAE_DATA``, default ``../shared/datasets``).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

# libgomp reads this when torch is imported: passive waiting keeps 2 threads efficient on a shared machine
# (see benchmarks/bench_models.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
PAIRS: dict[str, tuple[str, ...]] = {
    "ml-100k": ("sasrec", "bert4rec", "bprmf", "lightgcn", "mf", "ncf", "pop"),
    "lastfm-2k": ("bprmf", "lightgcn", "mf", "ncf", "pop"),
    "ml-1m-prefix": ("sasrec", "bert4rec", "pop"),
    "ml-1m-notime": ("bprmf", "lightgcn", "mf", "ncf", "pop"),
}
# Per-(dataset, model) overrides of the defaults, to bound CPU time on ML-1M: epoch caps, and a larger batch
# for LightGCN (one full-graph propagation per step: 12.6 s per epoch at 16,384 triples per step on 2 cores).
OVERRIDES: dict[tuple[str, str], dict] = {
    ("ml-1m-notime", "bprmf"): {"epochs": 60},
    ("ml-1m-notime", "lightgcn"): {"epochs": 80, "batch_size": 16384},
    ("ml-1m-notime", "mf"): {"epochs": 40},
    ("ml-1m-notime", "ncf"): {"epochs": 30},
}


def _markdown(df: pd.DataFrame) -> str:
    cells = [[str(c) for c in df.columns]] + [[str(v) for v in row] for row in df.itertuples(index=False)]
    lines = ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join([lines[0], "|" + "---|" * len(df.columns), *lines[1:]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", default=",".join(PAIRS))
    ap.add_argument("--models", default="", help="restrict to these models (default: all of each dataset's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-cache", action="store_true", help="always retrain (fit instead of cached_fit)")
    ap.add_argument("--progress", action="store_true", help="show tqdm bars")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quality"))
    args = ap.parse_args()
    os.environ.setdefault("RECSAE_DATA", str(ROOT.parent / "shared" / "datasets"))

    from recsae_core.cache import cached_fit
    from recsae_core.data.loaders import load_dataset
    from recsae_core.data.splits import leave_one_out
    from recsae_core.evaluate import evaluate
    from recsae_core.train import fit

    only = set(filter(None, args.models.split(",")))
    rows = []
    for name in args.datasets.split(","):
        ds = load_dataset(name, download=False, progress=False)
        split = leave_one_out(ds, seed=args.seed)
        for model in PAIRS[name]:
            if only and model not in only:
                continue
            cfg = OVERRIDES.get((name, model))
            t0 = time.perf_counter()
            if args.no_cache:
                res = fit(model, split, cfg, seed=args.seed, progress=args.progress)
            else:
                res = cached_fit(model, split, cfg, seed=args.seed, progress=args.progress)
            m = evaluate(res.model, split, "test", ks=(10,))
            h = res.history
            row = {
                "dataset": name,
                "split": split.name,
                "model": model,
                "test_ndcg@10": round(m["ndcg@10"], 4),
                "test_hr@10": round(m["hr@10"], 4),
                "valid_ndcg@10": round(float(h["valid_ndcg@10"].max()), 4),
                "best_epoch": res.best_epoch,
                "epochs_run": int(h["epoch"].max()),
                "train_min": round(res.seconds / 60, 1),
                "cached": res.from_cache,
                "overrides": cfg or "",
                "threads": torch.get_num_threads(),
                "load1": round(os.getloadavg()[0], 2),
            }
            rows.append(row)
            print(
                f"{name:13s} {model:9s} NDCG@10 {row['test_ndcg@10']:.4f} HR@10 {row['test_hr@10']:.4f} "
                f"(best epoch {row['best_epoch']}/{row['epochs_run']}, {row['train_min']} min"
                f"{', cached' if res.from_cache else ''}, wall {time.perf_counter() - t0:.0f} s, "
                f"threads {row['threads']}, load {row['load1']})",
                flush=True,
            )
    df = pd.DataFrame(rows)
    if df.empty:
        return
    pop = df[df.model == "pop"].set_index("dataset")["test_ndcg@10"]
    df["ndcg_vs_pop"] = [
        round(r["test_ndcg@10"] / pop.get(r["dataset"], float("nan")), 2) for _, r in df.iterrows()
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out.with_suffix(".csv"), index=False)
    md = _markdown(df.drop(columns=["threads", "load1"]))
    out.with_suffix(".md").write_text(md + "\n")
    print()
    print(md)


if __name__ == "__main__":
    main()
