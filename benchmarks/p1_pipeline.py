"""The P1 pipeline end to end through the package's functions, with each step's seconds.

Steps (papers.md §1.4-1.8): :func:`recsae_core.papers.p1.run` (P1's new-users split → the base model trained on
the recommender's users or reloaded → block-0 activations of the SAE users and of the test users, every
non-padding position → the SAE, all cached) → :func:`recsae_core.sae_eval.evaluate_sae` → features vs neurons,
logit effect, steering-feature choice and one steering curve (both meanings of α = 0).

``--recipe p1`` (default) is P1's ML-1M SAE recipe (:func:`recsae_core.papers.p1.p1_sae_config`: raw inputs,
unsquared reconstruction; 5,000 steps × 1,024); ``--recipe library`` the library's ReLU+L1 defaults (scalar
input normalisation, squared reconstruction) with the same optimisation, to see what the recipe changes.

A second run with nothing changed reloads the model, the activations and the SAE from the caches and should
take seconds; the SAE line says whether its cache hit.

Usage: ``python benchmarks/p1_pipeline.py [--dataset ml-1m-prefix] [--model sasrec] [--recipe p1|library]
[--genre Sci-Fi] [--steps 5000] [--device cpu]``. Needs the real data (``$RECSAE_DATA``, default
``../shared/datasets``). Caches: ``$RECSAE_HOME``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--model", default="sasrec", help="sasrec (P1's GPT4Rec sizes) or bert4rec")
    ap.add_argument("--recipe", default="p1", choices=["p1", "library"])
    ap.add_argument("--genre", default="Sci-Fi", help="genre of the steering curve")
    ap.add_argument("--latents", type=int, default=512, help="dictionary size (P1 ML-1M dev: 512)")
    ap.add_argument("--l1", type=float, default=0.1, help="L1 coefficient (P1: 0.1)")
    ap.add_argument("--steps", type=int, default=5000, help="SAE steps of 1024 rows (P1 ML-1M dev: 5,000)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("RECSAE_DATA", str(ROOT.parent / "shared" / "datasets"))

    t_all = time.perf_counter()
    import torch

    import recsae_core.sae as S
    from recsae_core.papers import p1
    from recsae_core.sae_eval import evaluate_sae

    print(f"P1 pipeline on {args.dataset} (threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.2f})")
    d_in = 64
    if args.recipe == "p1":
        cfg = p1.p1_sae_config(d_in, n_latents=args.latents, l1_coeff=args.l1)
    else:
        cfg = S.ReluL1Config(d_in=d_in, n_latents=args.latents, l1_coeff=args.l1)
    run = p1.run(
        args.dataset,
        args.model,
        sae_config=cfg,
        train_config=p1.p1_train_config(steps=args.steps),
        seed=args.seed,
        device=args.device,
        progress=args.progress,
    )
    print(
        f"    model from cache: {run.fit.from_cache}; trained in {run.fit.seconds:.1f} s (best {run.fit.best_epoch})"
    )
    print(f"    rows: {len(run.train_acts):,} SAE-training, {len(run.test_acts):,} test")
    print(
        f"    SAE ({args.recipe}: input_norm {cfg.input_norm}, recon {cfg.recon}) cache hit: "
        f"{run.sae_result.meta.get('cache_hit')}; trained in {run.sae_result.seconds:.1f} s"
    )
    with run.timed("evaluate_sae"):
        report = evaluate_sae(
            run.sae,
            run.model,
            run.site,
            run.split,
            acts=run.test_acts,
            item_labels=run.item_labels,
            label_names=run.label_names,
            train_result=run.sae_result,
            device=args.device,
        )
    print(p1.reconstruction_summary(run, report).to_string(index=False))
    with run.timed("features vs neurons"):
        fvn = p1.features_vs_neurons(run.sae_acts, run.test_acts.acts, run.labels, run.label_names)
    print(
        f"    mean max corr: SAE {fvn.attrs['sae_mean_max_corr']:.3f} vs neurons "
        f"{fvn.attrs['neuron_mean_max_corr']:.3f}; best {fvn['label'][0]} {fvn['sae_corr'][0]:.3f}"
    )
    with run.timed("steering feature + curve"):
        chosen = p1.steering_features(run.sae_acts, run.labels, run.label_names)
        feat = int(chosen.loc[chosen["label"] == args.genre, "feature"].item())
        curves = p1.steering_curves(
            run.model,
            run.site,
            run.sae,
            run.split,
            {args.genre: feat},
            item_labels=run.item_labels,
            label_names=run.label_names,
        )
    eff = p1.logit_effects(run.sae, run.model.output_table)
    print(
        p1.steering_selectivity(eff, run.item_labels, {args.genre: feat}, run.label_names).to_string(
            index=False
        )
    )
    for meaning in ("p1", "ours"):
        print(
            p1.steering_table(curves, args.genre, meaning=meaning).to_string(
                float_format=lambda v: f"{v:.4f}"
            )
        )
    print(p1.steering_tradeoff(curves).to_string(index=False))
    print(run.times_frame().to_string(float_format=lambda v: f"{v:.2f}"))
    print(f"total {time.perf_counter() - t_all:.1f} s")


if __name__ == "__main__":
    main()
