"""SAE training throughput and activation-collection cost on CPU.

Training (``--part train``): rows/s of the real training loop (:func:`recsae_core.sae.train_sae`: sampling,
forward, backward, Adam step, decoder constraint, bookkeeping) at batch 4096, d = 64, for 512 and 2048
latents and every architecture (TopK/BatchTopK k = 32), next to two plain-PyTorch baselines measured in
the same process: a dense autograd ReLU+L1 SAE and a sparsify-style TopK SAE (``topk`` + ``embedding_bag``
decoder, autograd). Each figure is the best of ``--repeats`` interleaved runs. Printed beside them: the
machine's fp32 matmul throughput (GFLOP/s of a 4096x64x2048 matmul), ``torch.get_num_threads()`` and
``os.getloadavg()``, and what bounds each architecture: its dense-GEMM FLOPs per step, the time those
would take at the measured matmul throughput (as a share of the step), and how many full passes over a
``B x m`` array one step makes (by construction of the kernels in :mod:`recsae_core.sae.kernels`).

Collection (``--part collect``, each case in a subprocess so its peak memory is its own): SASRec
``sasrec.block0`` at every non-padding position (maxlen 200, d 64, 2 blocks) for ML-100k (real data when
``$RECSAE_DATA`` or ``../shared/datasets`` has it, else a synthetic set of its shape) and for a synthetic
ML-1M-sized set (6,040 users, 3,416 items, lognormal history lengths with median ~100). Peak memory is the
growth of the process's peak RSS during collection (``VmHWM`` after resetting it).

Targets (papers' tooling on 2 quiet cores): a dense PyTorch ReLU+L1 SAE at m = 2048 trains ~25k rows/s, the
fastest TopK library (k = 32) ~36k rows/s; recsae should beat both by >= 1.5x, and BatchTopK / Matryoshka
should not be 2-3x slower than TopK. On a shared machine every figure moves with the load: read each
beside its load average.

P3 (``--part p3``): ms per step of P3's SAE on two-tower batches of P3's ML-1M sizes (d 20, 22 latents;
MF: 256 pairs, L_pred over all user x item pairs; NCF: 128 positive pairs through its MLP), the trainer's
hand-written P3 step against the autograd graph, at P3's beta and at beta = 0.

Usage: ``python benchmarks/bench_sae.py [--part train,collect,p3] [--latents 512,2048] [--threads 2]
[--repeats 3] [--profile] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import recsae_core.sae as S  # noqa: E402
from recsae_core.synthetic import planted_rows  # noqa: E402

D, B = 64, 4096
ARCHS = ("relu_l1", "topk", "batch_topk", "p3", "matryoshka")
QUOTED = {"dense_relu_l1": 25_000, "topk_library": 36_000}


def env() -> str:
    la = os.getloadavg()
    return f"threads={torch.get_num_threads()} load=({la[0]:.2f}, {la[1]:.2f}, {la[2]:.2f})"


def matmul_gflops(reps: int = 5) -> float:
    """fp32 GFLOP/s of ``(4096 x 64) @ (64 x 2048)`` (the encoder matmul of the m = 2048 SAEs)."""
    x, w = torch.randn(B, D), torch.randn(2048, D)
    out = torch.empty(B, 2048)
    best = float("inf")
    torch.mm(x, w.t(), out=out)
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(10):
            torch.mm(x, w.t(), out=out)
        best = min(best, (time.perf_counter() - t) / 10)
    return 2 * B * D * 2048 / best / 1e9


def config(arch: str, m: int) -> S.SAEConfig:
    if arch == "relu_l1":
        return S.ReluL1Config(d_in=D, n_latents=m)
    if arch == "topk":
        return S.TopKConfig(d_in=D, n_latents=m, k=32)
    if arch == "batch_topk":
        return S.BatchTopKConfig(d_in=D, n_latents=m, k=32)
    if arch == "p3":
        return S.P3Config(d_in=D, n_latents=m, beta=0.0)
    return S.MatryoshkaConfig(d_in=D, n_latents=m, beta=0.0)


# (dense-GEMM FLOPs per step in units of 2 B d m, full passes over a B x m array per step)
BOUNDS = {
    "relu_l1": (5, 9, "5 GEMMs (enc, dec, dW_dec, dF, dW_enc); ReLU in place; L1/bias grads folded"),
    "p3": (5, 9, "as relu_l1 (tied: both gradients land on one matrix)"),
    "matryoshka": (5, 9, "as p3; prefixes decoded block by block + cumsum (same GEMM FLOPs)"),
    "topk": (1, 2, "encoder GEMM + per-row topk; decode/backward sparse (CSR, B k entries)"),
    "batch_topk": (1, 3, "encoder GEMM + chunk-max batch selection; decode/backward sparse"),
}


def bench_ours(
    arch: str, m: int, data: torch.Tensor, warm: int, timed_blocks: int, cfg: S.SAEConfig | None = None
) -> float:
    """Rows/s of ``train_sae`` between its ``warm``-th step and the end (``timed_blocks * warm`` steps)."""
    stamps: list[float] = []
    tc = S.TrainConfig(steps=warm * (1 + timed_blocks), batch_size=B, warmup_steps=0, log_every=warm)
    S.train_sae(
        cfg or config(arch, m),
        data,
        tc,
        progress=False,
        callback=lambda s, r: stamps.append(time.perf_counter()),
        num_threads=None,
    )
    return B * warm * timed_blocks / (stamps[-1] - stamps[0])


def _baseline_params(m: int) -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    w = torch.randn(m, D)
    w /= w.norm(dim=1, keepdim=True)
    return [
        torch.nn.Parameter(w.clone()),
        torch.nn.Parameter(torch.zeros(m)),
        torch.nn.Parameter(w.clone()),
        torch.nn.Parameter(torch.zeros(D)),
    ]


def bench_dense_baseline(m: int, data: torch.Tensor, steps: int) -> float:
    """Plain autograd ReLU+L1 SAE (P1's dictionary_learning recipe: unit-norm decoder, Adam)."""
    W_enc, b_enc, W_dec, b_dec = params = _baseline_params(m)
    opt = torch.optim.Adam(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        x = data[torch.randint(len(data), (B,), generator=g)]
        f = torch.relu((x - b_dec) @ W_enc.T + b_enc)
        x_hat = f @ W_dec + b_dec
        loss = (x_hat - x).pow(2).sum(1).mean() + 0.1 * f.sum(1).mean()
        opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            W_dec.grad.sub_((W_dec.grad * W_dec).sum(1, keepdim=True) * W_dec)
        opt.step()
        with torch.no_grad():
            W_dec.div_(W_dec.norm(dim=1, keepdim=True))

    return _time_steps(step, steps)


def bench_topk_baseline(m: int, data: torch.Tensor, steps: int, k: int = 32) -> float:
    """sparsify-style TopK SAE in eager PyTorch: ``topk`` then an ``embedding_bag`` decoder, FVU loss."""
    W_enc, b_enc, W_dec, b_dec = params = _baseline_params(m)
    opt = torch.optim.Adam(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)

    def step() -> None:
        x = data[torch.randint(len(data), (B,), generator=g)]
        pre = torch.relu((x - b_dec) @ W_enc.T + b_enc)
        vals, idx = pre.topk(k, dim=1, sorted=False)
        x_hat = F.embedding_bag(idx, W_dec, per_sample_weights=vals, mode="sum") + b_dec
        loss = (x_hat - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            W_dec.div_(W_dec.norm(dim=1, keepdim=True))

    return _time_steps(step, steps)


def _time_steps(step, steps: int) -> float:
    for _ in range(2):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return B * steps / (time.perf_counter() - t)


def profile_arch(arch: str, m: int, data: torch.Tensor, top: int = 6) -> str:
    sae = S.train_sae(
        config(arch, m),
        data,
        S.TrainConfig(steps=2, batch_size=B, warmup_steps=0),
        progress=False,
        num_threads=None,
    ).sae
    with torch.profiler.profile() as prof:
        S.train_sae(
            sae, data, S.TrainConfig(steps=6, batch_size=B, warmup_steps=0), progress=False, num_threads=None
        )
    rows = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in rows)
    return ", ".join(f"{e.key} {100 * e.self_cpu_time_total / total:.0f}%" for e in rows[:top])


def part_train(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    data = planted_rows(65_536, d=D, n_groups=16, seed=0).acts
    gflops = matmul_gflops()
    print(f"\n## SAE training throughput (batch {B}, d {D}; rows/s = forward + backward + Adam step)")
    print(f"matmul 4096x64x2048 fp32: {gflops:.1f} GFLOP/s   [{env()}]")
    latents = [int(v) for v in args.latents.split(",")]
    best: dict[str, float] = {}
    for rep in range(args.repeats):
        for m in latents:
            for arch in ARCHS:
                r = bench_ours(arch, m, data, warm=3, timed_blocks=3)
                best[f"{arch}/{m}"] = max(best.get(f"{arch}/{m}", 0.0), r)
            if m == 2048 or m == max(latents):
                best["dense_relu_l1/base"] = max(
                    best.get("dense_relu_l1/base", 0.0), bench_dense_baseline(m, data, 6)
                )
                best["topk_library/base"] = max(
                    best.get("topk_library/base", 0.0), bench_topk_baseline(m, data, 6)
                )
        print(f"  repeat {rep + 1}/{args.repeats} done [{env()}]")
    mbase = max(latents)
    dense, lib = best["dense_relu_l1/base"], best["topk_library/base"]
    print(f"\nbaselines at m = {mbase} (same process, same load):")
    print(
        f"  dense autograd ReLU+L1         {dense:>9,.0f} rows/s  (quoted on 2 quiet cores: {QUOTED['dense_relu_l1']:,})"
    )
    print(
        f"  sparsify-style TopK (k = 32)   {lib:>9,.0f} rows/s  (quoted on 2 quiet cores: {QUOTED['topk_library']:,})"
    )
    print(
        f"\n{'arch':<11} {'m':>5} {'rows/s':>9} {'ms/step':>8} {'x dense':>8} {'x lib':>6} {'x topk':>7} {'GEMM@peak':>10} {'Bxm passes':>10}  bound"
    )
    out = {
        "matmul_gflops": gflops,
        "threads": torch.get_num_threads(),
        "load": os.getloadavg(),
        "rows_per_s": best,
    }
    for m in latents:
        for arch in ARCHS:
            r = best[f"{arch}/{m}"]
            ms = B / r * 1e3
            n_gemm, passes, why = BOUNDS[arch]
            gemm_ms = n_gemm * 2 * B * D * m / (gflops * 1e9) * 1e3
            vs_topk = r / best[f"topk/{m}"]
            print(
                f"{arch:<11} {m:>5} {r:>9,.0f} {ms:>8.1f} {r / dense:>8.2f} {r / lib:>6.2f} {vs_topk:>7.2f} "
                f"{gemm_ms / ms:>9.0%} {passes:>10}  {why}"
            )
    print(
        "(x dense / x lib: speed-up over the baselines measured above; GEMM@peak: share of the step the dense"
    )
    print(
        " GEMMs would take at the measured matmul throughput; the rest is memory passes, selection, optimiser)"
    )
    sel = {}
    for _ in range(args.repeats):
        for how in ("chunked", "two_stage", "flat"):
            cfg = S.BatchTopKConfig(d_in=D, n_latents=mbase, k=32, selection=how)
            sel[how] = max(sel.get(how, 0.0), bench_ours("batch_topk", mbase, data, 3, 2, cfg))
    print(
        f"\nBatchTopK selection at m = {mbase} (all exact): "
        + ", ".join(f"{h} {r:,.0f}" for h, r in sel.items())
        + " rows/s"
    )
    out["batch_topk_selection"] = sel
    if args.profile:
        print(f"\nprofile at m = {mbase} (top self-CPU ops):")
        for arch in ARCHS:
            print(f"  {arch:<11} {profile_arch(arch, mbase, data)}")
    print(f"[{env()}]")
    return out


# ------------------------------------------------------------------------------------------ collection
def _lognormal_seqs(
    n_users: int, n_items: int, median: float, maxlen: int, seed: int
) -> tuple[torch.Tensor, int]:
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(median), 0.9, n_users).astype(int), 20, 2314)
    seqs = np.zeros((n_users, maxlen), dtype=np.int64)
    for_len = np.minimum(lengths, maxlen)
    cols = np.arange(maxlen)[None, :] >= (maxlen - for_len)[:, None]
    seqs[cols] = rng.integers(1, n_items + 1, size=int(cols.sum()))
    return torch.from_numpy(seqs), int(lengths.sum())


def _real_ml100k(maxlen: int) -> tuple[torch.Tensor, int, int, str] | None:
    try:
        from recsae_core.batching import pad_left
        from recsae_core.data.loaders import load_dataset

        if "RECSAE_DATA" not in os.environ and (ROOT.parent / "shared" / "datasets").is_dir():
            os.environ["RECSAE_DATA"] = str(ROOT.parent / "shared" / "datasets")
        ds = load_dataset("ml-100k", download=False, progress=False)
    except Exception as e:
        print(f"  (ML-100k not available: {type(e).__name__}: {e}; using synthetic shapes)")
        return None
    df = ds.interactions.sort_values(["user", "timestamp"], kind="stable")
    seqs = pad_left(df["user"].to_numpy(), df["item"].to_numpy() + 1, ds.n_users, maxlen)
    return torch.from_numpy(seqs), ds.n_items, len(df), "ml-100k (real)"


def collect_child(case: str, threads: int) -> dict:
    """Runs in a subprocess: build the data and an (untrained) SASRec, collect block-0 activations."""
    torch.set_num_threads(threads)
    from recsae_core import probe
    from recsae_core.models.base import UserBatch
    from recsae_core.models.sasrec import SASRec, SASRecConfig

    maxlen = 200
    if case == "ml100k":
        real = _real_ml100k(maxlen)
        if real is None:
            seqs, n_events = _lognormal_seqs(943, 1682, 65, maxlen, 0)
            n_items, name = 1682, "ml-100k-shaped synthetic"
        else:
            seqs, n_items, n_events, name = real
    else:
        seqs, n_events = _lognormal_seqs(6040, 3416, 100, maxlen, 0)
        n_items, name = 3416, "ml-1m-sized synthetic"
    torch.manual_seed(0)
    model = SASRec(len(seqs), n_items, SASRecConfig(d=64, n_blocks=2, n_heads=1, maxlen=maxlen)).eval()
    batch = UserBatch(torch.arange(len(seqs)), seqs)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    rss0 = _status_kb("VmRSS")
    t = time.perf_counter()
    acts = probe.collect_activations(
        model, "sasrec.block0", batch, positions="all", batch_size=256, progress=False
    )
    secs = time.perf_counter() - t
    peak = _status_kb("VmHWM")
    return {
        "case": name,
        "users": len(seqs),
        "events": n_events,
        "rows": len(acts),
        "seconds": secs,
        "rows_per_s": len(acts) / secs,
        "array_mb": acts.acts.numel() * 4 / 2**20,
        "peak_growth_mb": (peak - rss0) / 1024,
        "threads": torch.get_num_threads(),
        "load": os.getloadavg(),
    }


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def part_collect(args: argparse.Namespace) -> list[dict]:
    print(
        "\n## Activation collection: SASRec sasrec.block0, every non-padding position (maxlen 200, d 64, 2 blocks)"
    )
    out = []
    for case in ("ml100k", "ml1m"):
        proc = subprocess.run(
            [sys.executable, __file__, "--collect-child", case, "--threads", str(args.threads)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr)
            raise SystemExit(f"collection case {case} failed")
        lines = proc.stdout.strip().splitlines()
        for line in lines[:-1]:
            print(line)
        r = json.loads(lines[-1])
        out.append(r)
        print(
            f"  {r['case']:<26} {r['users']:>5} users {r['rows']:>9,} rows  {r['seconds']:6.2f} s  "
            f"{r['rows_per_s']:>9,.0f} rows/s  array {r['array_mb']:6.1f} MB  peak +{r['peak_growth_mb']:6.1f} MB  "
            f"[threads={r['threads']} load=({r['load'][0]:.2f}, {r['load'][1]:.2f}, {r['load'][2]:.2f})]"
        )
    return out


P3_CASES = {
    # P3's ML-1M SAEs (papers.md §3.4): d 20, 22 latents; MF: 256 pairs per batch, L_pred over all
    # user x item pairs (closed form in the hand-written step); NCF: 128 positive pairs through the MLP
    "mf": ({"normalize_rows": True, "alpha": 0.1, "beta": 1.0, "kl_coeff": 0.01, "rho": 0.05}, 256, False),
    "ncf": (
        {"pre_bias": False, "alpha": 2.0, "beta": 10.0, "kl_coeff": 0.07, "pred_loss": "bce"},
        128,
        True,
    ),
}


def part_p3(args: argparse.Namespace) -> dict:
    """ms per step of P3's SAE on user/item batches of P3's sizes, through the whole loop (sampling,
    step, Adam, bookkeeping): the hand-written step (``fused=True``, the default) against the autograd
    graph (``fused=False``), at P3's beta and at beta = 0. Random models and embeddings (the cost does
    not depend on the values); 6,040 users x 3,706 items as ML-1M."""
    from recsae_core.models.twotower import MF, NCF, MFConfig, NCFConfig

    torch.set_num_threads(args.threads)
    print(f"\n## P3 SAE steps (d 20, 22 latents; ms/step of train_sae, best of {args.repeats})   [{env()}]")
    n_users, n_items, d, steps = 6040, 3706, 20, 1500
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    out: dict[str, float] = {}
    for _ in range(args.repeats):
        for kind, (fields, batch, pairwise) in P3_CASES.items():
            model = (
                MF(n_users, n_items, MFConfig(d=d)) if kind == "mf" else NCF(n_users, n_items, NCFConfig(d=d))
            )
            pairs = torch.stack(
                [
                    torch.randint(0, n_users, (200_000,), generator=gen),
                    torch.randint(0, n_items, (200_000,), generator=gen),
                ],
                1,
            )
            data = S.TwoTowerData(
                model.user_emb.weight.detach(), model.item_table().detach(), pairs, all_pairs=not pairwise
            )
            scorer = S.two_tower_scorer(model, pairwise=pairwise)
            for beta in (fields["beta"], 0.0):
                for fused in (True, False):
                    cfg = S.from_config(
                        {"architecture": "p3", "d_in": d, "n_latents": 22, **fields, "beta": beta}
                    ).cfg
                    tc = S.TrainConfig(steps=steps, batch_size=batch, lr=1e-3, warmup_steps=0, fused=fused)
                    t = time.perf_counter()
                    S.train_sae(cfg, data, tc, scorer=scorer, progress=False, num_threads=None)
                    ms = 1000 * (time.perf_counter() - t) / steps
                    key = f"{kind} beta={beta:g} {'hand-written' if fused else 'autograd'}"
                    out[key] = min(out.get(key, float("inf")), ms)
    print("| model | beta | hand-written ms/step | autograd ms/step | speed-up |\n|---|---|---|---|---|")
    for kind, (fields, _, _) in P3_CASES.items():
        for beta in (fields["beta"], 0.0):
            a, b = out[f"{kind} beta={beta:g} hand-written"], out[f"{kind} beta={beta:g} autograd"]
            print(f"| {kind} | {beta:g} | {a:.2f} | {b:.2f} | {b / a:.2f}x |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", default="train,collect")
    ap.add_argument("--latents", default="512,2048")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json", default=None)
    ap.add_argument("--collect-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.collect_child:
        print(json.dumps(collect_child(args.collect_child, args.threads)))
        return
    results: dict = {}
    parts = args.part.split(",")
    if "train" in parts:
        results["train"] = part_train(args)
    if "collect" in parts:
        results["collect"] = part_collect(args)
    if "p3" in parts:
        results["p3"] = part_p3(args)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
