"""The P1 pipeline on ML-100k end to end, through the package's functions, with each step's seconds.

Steps (papers.md §1.4-1.8): P1's new-users split (:func:`recsae_core.data.splits.p1_new_users`) → SASRec
trained on the recommender's users or reloaded (:func:`recsae_core.cache.cached_fit`) → block-0 activations
of the SAE users and of the test users, every non-padding position (:func:`recsae_core.sae_eval.cached_activations`)
→ ReLU+L1 SAE (:func:`recsae_core.sae_eval.cached_sae`) → :func:`recsae_core.sae_eval.evaluate_sae` →
features vs neurons, logit effect, steering-feature choice and one steering curve (both meanings of α = 0)
from :mod:`recsae_core.papers.p1`.

A second run with nothing changed reloads the model, the activations and the SAE from the caches and
should take seconds; the SAE line says whether its cache hit.

Usage: ``python benchmarks/p1_pipeline.py [--dataset ml-100k] [--genre Sci-Fi] [--steps 3000] [--device cpu]``.
Needs the real data (``$RECSAE_DATA``, default ``../shared/datasets``). Caches: ``$RECSAE_HOME``.
"""

from __future__ import annotations

import argparse
import os
import time
from contextlib import contextmanager
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
SITE = "sasrec.block0"


@contextmanager
def step(name: str, times: dict[str, float]):
    t0 = time.perf_counter()
    yield
    times[name] = time.perf_counter() - t0
    print(f"  {name:<28s} {times[name]:8.2f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--genre", default="Sci-Fi", help="genre of the steering curve")
    ap.add_argument("--latents", type=int, default=512, help="dictionary size (P1 ML-1M dev: 512)")
    ap.add_argument("--l1", type=float, default=0.1, help="L1 coefficient (P1: 0.1)")
    ap.add_argument("--steps", type=int, default=3000, help="SAE steps (batch 1024; P1 ML-1M dev: 5,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("RECSAE_DATA", str(ROOT.parent / "shared" / "datasets"))

    times: dict[str, float] = {}
    t_all = time.perf_counter()
    with step("imports", times):
        import torch

        import recsae_core.sae as S
        from recsae_core.cache import cached_fit
        from recsae_core.data.loaders import load_dataset
        from recsae_core.data.splits import p1_new_users
        from recsae_core.papers import p1
        from recsae_core.sae_eval import cached_activations, cached_sae, evaluate_sae

    print(f"P1 pipeline on {args.dataset} (threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f})")
    with step("load + P1 split", times):
        ds = load_dataset(args.dataset, download=False, progress=False)
        split = p1_new_users(ds, seed=42)
    with step("SASRec (cached_fit)", times):
        fit = cached_fit("sasrec", split, seed=args.seed, device=args.device, progress=args.progress)
        model = fit.model.eval()
    print(f"    from cache: {fit.from_cache}; trained in {fit.seconds:.1f} s (best epoch {fit.best_epoch})")
    with step("activations (SAE + test users)", times):
        kw = dict(positions="all", device=args.device, progress=args.progress)
        train_acts = cached_activations(model, SITE, p1.sequences(split, "sae", model.maxlen), **kw)
        test_acts = cached_activations(model, SITE, p1.sequences(split, "test_full", model.maxlen), **kw)
    print(f"    rows: {len(train_acts):,} SAE-training, {len(test_acts):,} test")
    with step("SAE (cached_sae)", times):
        cfg = S.ReluL1Config(d_in=train_acts.acts.shape[1], n_latents=args.latents, l1_coeff=args.l1)
        tc = S.TrainConfig(steps=args.steps, batch_size=1024, lr=1e-3, warmup_steps=100)
        res = cached_sae(train_acts, cfg, tc, seed=args.seed, device=args.device, progress=args.progress)
        sae = res.sae.eval()
    print(f"    SAE cache hit: {res.meta.get('cache_hit')}; trained in {res.seconds:.1f} s")
    with step("evaluate_sae", times):
        report = evaluate_sae(
            sae,
            model,
            SITE,
            split,
            acts=test_acts,
            item_labels=ds.item_labels,
            label_names=ds.label_names,
            train_result=res,
            device=args.device,
        )
    print(report.to_frame().to_string())
    with step("features vs neurons", times):
        H = p1.encode_rows(sae, test_acts.acts)
        G = p1.row_labels(test_acts, ds.item_labels)
        fvn = p1.features_vs_neurons(H, test_acts.acts, G, ds.label_names)
    print(
        f"    mean max corr: SAE {fvn.attrs['sae_mean_max_corr']:.3f} vs neurons "
        f"{fvn.attrs['neuron_mean_max_corr']:.3f}; best {fvn['label'][0]} {fvn['sae_corr'][0]:.3f}"
    )
    with step("logit effect", times):
        eff = p1.logit_effects(sae, model.output_table)
        by_label = p1.logit_effect_by_label(eff, ds.item_labels, ds.label_names)
    with step("steering feature + curve", times):
        chosen = p1.steering_features(H, G, ds.label_names)
        feat = int(chosen.loc[chosen["label"] == args.genre, "feature"].item())
        curves = p1.steering_curves(
            model,
            SITE,
            sae,
            split,
            {args.genre: feat},
            item_labels=torch.as_tensor(ds.item_labels),
            label_names=ds.label_names,
        )
    print(
        f"    {args.genre} feature {feat}: mean logit effect on {args.genre} items "
        f"{by_label.loc[feat, args.genre]:+.3f} (others {by_label.loc[feat].drop(args.genre).mean():+.3f})"
    )
    cols = ["meaning", "alpha", "share", "ndcg@10", "hr@10", "coverage@10", "diversity@10", "ndcg_drop"]
    sel = curves[curves["alpha"].isin([-10.0, -4.0, 0.0, 4.0, 10.0])]
    print(sel[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"total {time.perf_counter() - t_all:.1f} s")


if __name__ == "__main__":
    main()
