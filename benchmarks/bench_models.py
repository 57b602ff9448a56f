"""SASRec+ and BERT4Rec training and full-ranking evaluation speed on CPU.

Cases (each runs in its own subprocess so that its peak memory, ``ru_maxrss``, is its own):

* ``ml100k_epoch``: one training epoch of SASRec (d 64, 2 blocks, 1 head, maxlen 200, batch 128, full CE)
  on ML-100k leave-one-out (real data via ``load_dataset`` when ``$RECSAE_DATA`` or ``../shared/datasets``
  has it, else a synthetic set of the same shape), plus the validation pass.
* ``ml1m_epoch``: the same on a synthetic ML-1M-sized set (6,040 users, 3,416 items, lognormal history
  lengths with median ≈ 100, ≈ 0.9M events).
* ``ml1m_eval``: full-ranking evaluation (all items, seen masked, K ∈ {5, 10, 20, 50}) of 6,040 users at
  maxlen 200 on that set.
* ``bert4rec_ml100k_epoch``, ``bert4rec_ml1m_epoch``, ``bert4rec_ml1m_eval``: the same three for BERT4Rec
  with its defaults (P1: d 64, 2 blocks, 2 heads, 64 positions, mask probability 0.2, batch 128; masked-LM
  epoch, evaluation with the appended ``[MASK]``).

Targets (2 quiet cores): ≤ 3.5 s per ML-100k epoch, < 50 s per ML-1M-sized epoch, evaluation < 3 s.
Every figure is printed with ``torch.get_num_threads()`` and ``os.getloadavg()``: other processes on a
shared machine slow these down, so read them with the load average in mind.

OpenMP wait policy: the cases run with ``OMP_WAIT_POLICY=PASSIVE`` unless the variable is already set
(``--omp-wait-policy`` overrides). With libgomp's default (active spinning), two torch threads on a 2-core
machine that other processes also use wait at every parallel region for a descheduled sibling; measured
here at load ≈ 2–4, an ML-100k epoch took 20–27 s with the default policy and 3.5–3.8 s with PASSIVE.
The variable must be set before ``import torch``.

Usage: ``python benchmarks/bench_models.py [--cases ml100k_epoch,ml1m_epoch,ml1m_eval] [--epochs 2]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CASES = (
    "ml100k_epoch",
    "ml1m_epoch",
    "ml1m_eval",
    "bert4rec_ml100k_epoch",
    "bert4rec_ml1m_epoch",
    "bert4rec_ml1m_eval",
)


def synthetic(
    n_users: int, n_items: int, median_len: float, seed: int = 0, min_len: int = 20, max_len: int = 2314
):
    """A timestamped dataset with lognormal history lengths (σ 0.9) and Zipf-like item popularity."""
    from recsae_core.data.dataset import RecDataset

    rng = np.random.default_rng(seed)
    lens = np.clip(np.round(np.exp(rng.normal(np.log(median_len), 0.9, n_users))), min_len, max_len).astype(
        int
    )
    user = np.repeat(np.arange(n_users), lens)
    t = np.concatenate([np.arange(n) for n in lens])
    pop = 1.0 / np.arange(1, n_items + 1) ** 0.8
    item = rng.choice(n_items, size=len(user), p=pop / pop.sum())
    inter = pd.DataFrame(
        {
            "user": user,
            "item": item.astype(np.int64),
            "rating": np.ones(len(user), np.float32),
            "timestamp": t,
        }
    )
    items = pd.DataFrame({"item_id": np.arange(n_items), "title": [""] * n_items})
    return RecDataset(
        f"synthetic-{n_users}x{n_items}",
        inter,
        items,
        np.zeros((n_items, 0), bool),
        [],
        pd.DataFrame({"user_id": np.arange(n_users)}),
    )


def ml100k():
    """Real ML-100k when available, else a synthetic set of its shape; returns (dataset, source)."""
    from recsae_core.data.loaders import load_dataset

    data = os.environ.get("RECSAE_DATA") or str(ROOT.parent / "shared" / "datasets")
    if Path(data).is_dir():
        os.environ["RECSAE_DATA"] = data
        try:
            return load_dataset("ml-100k", download=False, progress=False), "real"
        except Exception as e:
            print(f"(ml-100k not loadable: {e}; using a synthetic stand-in)", file=sys.stderr)
    return synthetic(943, 1682, 65.0), "synthetic"


def _env() -> dict:
    import torch

    return {"threads": torch.get_num_threads(), "loadavg": [round(x, 2) for x in os.getloadavg()]}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(case: str, epochs: int, threads: int | None = None) -> dict:
    import torch

    if threads:
        torch.set_num_threads(threads)

    from recsae_core.batching import eval_data, masked_sequences, train_sequences
    from recsae_core.data.splits import leave_one_out
    from recsae_core.evaluate import evaluate_data
    from recsae_core.models.bert4rec import BERT4Rec, BERT4RecConfig
    from recsae_core.models.sasrec import SASRec, SASRecConfig
    from recsae_core.train import _adam, _epoch_masked, _epoch_sequential

    class _NoBar:
        def update(self, n: int) -> None: ...
        def set_postfix(self, **kw: object) -> None: ...

    bert = case.startswith("bert4rec_")
    if case.endswith("ml100k_epoch"):
        ds, source = ml100k()
    else:
        ds, source = synthetic(6040, 3416, 100.0), "synthetic"
    split = leave_one_out(ds)
    torch.manual_seed(0)
    if bert:
        cfg = BERT4RecConfig()  # d 64, 2 blocks, 2 heads, 64 positions, mask 0.2, batch 128, dropout 0.1
        model = BERT4Rec(ds.n_users, ds.n_items, cfg)
    else:
        cfg = SASRecConfig()  # d 64, 2 blocks, 1 head, maxlen 200, batch 128, dropout 0.2
        model = SASRec(ds.n_users, ds.n_items, cfg)
    out = {
        "case": case,
        "data": source,
        "users": ds.n_users,
        "items": ds.n_items,
        "events": len(ds.interactions),
    }
    if case.endswith("_epoch"):
        t = time.perf_counter()
        if bert:
            seqs = masked_sequences(split, cfg.maxlen)
            nonpad = float((seqs.items > 0).float().mean())
            epoch_fn, betas = _epoch_masked, (0.9, 0.999)
        else:
            seqs = train_sequences(split, cfg.maxlen)
            nonpad = float((seqs.inputs > 0).float().mean())
            epoch_fn, betas = _epoch_sequential, (0.9, 0.98)
        out["build_s"] = round(time.perf_counter() - t, 3)
        out["nonpad_frac"] = round(nonpad, 3)
        opt = _adam(model, cfg.lr, cfg.weight_decay, betas)
        gen = torch.Generator().manual_seed(0)
        out["rss_before_mb"] = round(_rss_mb())
        times, envs = [], []
        for _ in range(epochs):
            model.train()
            envs.append(_env())
            t = time.perf_counter()
            epoch_fn(model, opt, seqs, cfg, gen, torch.device("cpu"), _NoBar())
            times.append(time.perf_counter() - t)
        out["epoch_s"] = [round(x, 2) for x in times]
        out["env"] = envs
        model.eval()
        vdata = eval_data(split, "valid", model.maxlen)
        t = time.perf_counter()
        evaluate_data(model.score, vdata, (10,))
        out["valid_s"] = round(time.perf_counter() - t, 2)
    else:
        t = time.perf_counter()
        data = eval_data(split, "test", model.maxlen)
        out["build_s"] = round(time.perf_counter() - t, 3)
        model.eval()
        out["rss_before_mb"] = round(_rss_mb())
        times, envs = [], []
        for _ in range(max(epochs, 2)):
            envs.append(_env())
            t = time.perf_counter()
            metrics = evaluate_data(model.score, data, (5, 10, 20, 50), batch_size=512)
            times.append(time.perf_counter() - t)
        out["eval_s"] = [round(x, 2) for x in times]
        out["eval_users"] = int(metrics["n_cases"])
        out["env"] = envs
    out["peak_rss_mb"] = round(_rss_mb())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--epochs", type=int, default=2, help="epochs (or evaluation repeats) per case")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument(
        "--omp-wait-policy",
        default=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
        help="OMP_WAIT_POLICY for the cases (default PASSIVE unless already set)",
    )
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--json", help="also write the results to this JSON file")
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args.epochs, args.threads)))
        return
    results = []
    for case in args.cases.split(","):
        if case not in CASES:
            raise SystemExit(f"unknown case {case!r}; cases: {', '.join(CASES)}")
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                case,
                "--epochs",
                str(args.epochs),
                "--threads",
                str(args.threads),
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "OMP_WAIT_POLICY": args.omp_wait_policy},
        )
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            raise SystemExit(f"{case} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(line[0][7:])
        results.append(r)
        env = "; ".join(f"threads {e['threads']}, load {e['loadavg']}" for e in r["env"])
        env += f"; OMP_WAIT_POLICY={args.omp_wait_policy}"
        if "epoch_s" in r:
            print(
                f"{case:21s} [{r['data']}, {r['users']} users, {r['items']} items, {r['events']} events, "
                f"non-pad {r['nonpad_frac']}]: epochs {r['epoch_s']} s, validation {r['valid_s']} s, "
                f"peak RSS {r['peak_rss_mb']} MB (before training {r['rss_before_mb']} MB) | {env}"
            )
        else:
            print(
                f"{case:21s} [{r['data']}, {r['eval_users']} users, {r['items']} items]: full-ranking eval "
                f"{r['eval_s']} s, peak RSS {r['peak_rss_mb']} MB (before {r['rss_before_mb']} MB) | {env}"
            )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
