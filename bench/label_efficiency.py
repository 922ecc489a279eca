"""Fewer labels: does choosing which comparison to label next save labels, on real human preferences?

Simulated annotators replay HH-RLHF harmless-base (../shared/data, one pair per prompt) in the order each
strategy asks for. The reward head is a Bayesian logistic regression (Laplace approximation) on frozen
features: the embedded SmolLM2-135M's last hidden state at each answer's EOS, read through the same reward-token
contract the reward model uses (workers.ml.scoring). Features are computed once and cached; everything after
that runs in seconds per seed.

Strategies (each picks the next batch from the unlabelled pool):
  random     the control
  variance   posterior variance of the reward difference, x' S x
  fisher     Fisher information of the comparison under the head, p(1-p) x' S x
  ucb-gap    DeltaUCB-style optimism, |mean difference| + sd: favours large predicted differences

    .venv/bin/python -m bench.label_efficiency                 # 5 seeds, checkpoints 50..800 labels
    .venv/bin/python -m bench.label_efficiency --seeds 10 --held-out 800
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from pathlib import Path

from bench.common import MODEL_CACHE, ROOT, embedded_policy, header, hh_pairs, verdict
from workers.ml.head import CRITERIA

CHECKPOINTS = (50, 100, 200, 400, 800)
STRATEGIES = ("random", *CRITERIA)
FEATURES = MODEL_CACHE / "hh-harmless-smollm2-eos.pt"
FIT_SECONDS: dict[int, list[float]] = {}  # labels -> seconds each refit of the head took


def features(pairs: list[dict[str, str]], max_length: int):
    """[pairs, 2, hidden]: the product's frozen features (workers.ml.features) of (prompt, chosen) and (prompt,
    rejected) under the embedded SmolLM2; cached on disk by the pairs' content and max_length."""
    import torch

    from workers.ml.features import eos_features
    from workers.ml.loading import inference_dtype, load_policy

    digest = hashlib.sha256(repr((max_length, [(p["prompt"], p["chosen"], p["rejected"]) for p in pairs])).encode())
    cache = FEATURES.with_name(f"{FEATURES.stem}-{digest.hexdigest()[:12]}.pt")
    if cache.is_file():
        return torch.load(cache)
    model, tokenizer = load_policy(embedded_policy(), inference_dtype())
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        if done % 400 < 8 or done == total:
            print(f"  features {done}/{total} ({time.monotonic() - started:.0f} s)", flush=True)

    prompts = [p["prompt"] for p in pairs for _ in (0, 1)]
    answers = [p[side] for p in pairs for side in ("chosen", "rejected")]
    result = eos_features(
        model, tokenizer, prompts, answers, [None] * len(answers), max_length=max_length, progress=progress
    )  # HH answers: whether they ended is not recorded
    result = result.view(len(pairs), 2, -1)
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(result, cache)
    return result


def run(
    diffs, held, strategy: str, seed: int, budget: int, batch: int, warm_start: int, prior: float | None
) -> dict[int, float]:
    """Labels in the order the strategy asks for; held-out accuracy after every batch."""
    import torch

    from workers.ml.head import BayesianHead, HeadConfig

    generator = torch.Generator().manual_seed(seed)
    signs = torch.where(torch.rand(len(diffs), generator=generator) < 0.5, -1.0, 1.0).double()
    pool = diffs * signs[:, None]  # the annotator sees the pair in either order and says which one is better
    labels = (signs > 0).double()
    head = BayesianHead(diffs.shape[1], HeadConfig(prior_precision=prior), typical=pool)
    chosen = torch.randperm(len(pool), generator=generator)[:warm_start].tolist()
    accuracy = {}
    while True:
        began = time.perf_counter()
        head.fit(pool[chosen] * (2 * labels[chosen] - 1)[:, None])  # oriented: chosen minus rejected
        FIT_SECONDS.setdefault(len(chosen), []).append(time.perf_counter() - began)
        accuracy[len(chosen)] = float(((held @ head.w) > 0).double().mean())
        if len(chosen) >= budget:
            return accuracy
        if strategy == "random":
            scores = torch.rand(len(pool), generator=generator, dtype=torch.float64)
        else:
            scores = head.worth(pool, strategy)
        scores[chosen] = -math.inf
        chosen += torch.topk(scores, min(batch, budget - len(chosen))).indices.tolist()


def labels_to_reach(curve: dict[int, float], target: float) -> int | None:
    return next((n for n in sorted(curve) if curve[n] >= target), None)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--held-out", type=int, default=700, help="pairs kept out of the pool, for accuracy")
    p.add_argument("--batch", type=int, default=10, help="labels chosen per refit")
    p.add_argument("--warm-start", type=int, default=10, help="random labels before any strategy chooses")
    p.add_argument(
        "--prior",
        type=float,
        default=None,
        help="prior precision of the head's weights (default: the "
        "product's, the mean squared norm of the pool's comparisons)",
    )
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--limit", type=int, default=0, help="use only the first N pairs (a smoke run); 0 = all")
    p.add_argument("--out", type=Path, default=ROOT / ".cache" / "label_efficiency.png")
    args = p.parse_args()
    import torch

    header("label efficiency: informative vs random order, HH-RLHF harmless-base")
    if not args.data.is_file():
        print(f"no data at {args.data}: pass --data")
        return 2
    pairs, skipped = hh_pairs(args.data)
    pairs = pairs[: args.limit] if args.limit else pairs
    started = time.monotonic()
    feats = features(pairs, args.max_length).double()
    print(
        f"{len(pairs)} pairs ({skipped} skipped); features {tuple(feats.shape)} in {time.monotonic() - started:.0f} s "
        f"(cached in {FEATURES.parent})"
    )
    mean, std = feats.reshape(-1, feats.shape[-1]).mean(0), feats.reshape(-1, feats.shape[-1]).std(0) + 1e-6
    diffs = ((feats[:, 0] - mean) / std) - ((feats[:, 1] - mean) / std)
    order = torch.randperm(len(diffs), generator=torch.Generator().manual_seed(12345))
    held, pool = diffs[order[: args.held_out]], diffs[order[args.held_out :]]
    budget = max(n for n in CHECKPOINTS if n <= len(pool) - args.batch)
    curves = {
        s: [run(pool, held, s, seed, budget, args.batch, args.warm_start, args.prior) for seed in range(args.seeds)]
        for s in STRATEGIES
    }
    print(
        f"\nheld-out: {args.held_out} pairs (one Wilson 95% interval at 65% is +/- "
        f"{1.96 * math.sqrt(0.65 * 0.35 / args.held_out):.3f}); pool {len(pool)}; {args.seeds} seeds; "
        f"batches of {args.batch}; mean [min, max] over seeds"
    )
    print(f"{'labels':>8} " + " ".join(f"{s:>22}" for s in STRATEGIES))
    for n in (n for n in CHECKPOINTS if n <= budget):
        cells = []
        for s in STRATEGIES:
            values = [c[n] for c in curves[s]]
            cells.append(f"{sum(values) / len(values):.3f} [{min(values):.3f}, {max(values):.3f}]")
        print(f"{n:>8} " + " ".join(f"{c:>22}" for c in cells))
    mean_curve = {s: {n: sum(c[n] for c in curves[s]) / args.seeds for n in curves[s][0]} for s in STRATEGIES}
    print("\npaired by seed (same warm start, same held-out set): accuracy minus random's, mean [min, max]")
    print(f"{'labels':>8} " + " ".join(f"{s:>22}" for s in STRATEGIES[1:]))
    for n in (n for n in CHECKPOINTS if n <= budget):
        cells = []
        for s in STRATEGIES[1:]:
            gaps = [c[n] - r[n] for c, r in zip(curves[s], curves["random"], strict=True)]
            cells.append(f"{sum(gaps) / len(gaps):+.3f} [{min(gaps):+.3f}, {max(gaps):+.3f}]")
        print(f"{n:>8} " + " ".join(f"{c:>22}" for c in cells))
    target = mean_curve["random"][budget]
    random_needs = labels_to_reach(mean_curve["random"], target) or budget
    print(
        f"\nlabels to reach random order's mean accuracy at {budget} labels ({target:.3f}), on the mean curve "
        f"(every {args.batch} labels); per seed in brackets. Random order itself first gets there at "
        f"{random_needs}: the curve flattens, so the saving is measured against that, not against {budget}."
    )
    best, best_needed = None, None
    for s in STRATEGIES:
        needed = labels_to_reach(mean_curve[s], target)
        per_seed = [labels_to_reach(c, target) for c in curves[s]]
        saving = f"{1 - needed / random_needs:+.0%} vs random's {random_needs}" if needed else "never within the budget"
        print(f"  {s:<9} {needed if needed else '-':>5}  ({saving}); seeds: {per_seed}")
        if s != "random" and needed and (best_needed is None or needed < best_needed):
            best, best_needed = s, needed
    print(
        "head refit time (what a refit job spends fitting, features cached): "
        + ", ".join(
            f"{n} labels {1000 * sum(FIT_SECONDS[n]) / len(FIT_SECONDS[n]):.0f} ms"
            for n in CHECKPOINTS
            if n in FIT_SECONDS
        )
    )
    _plot(mean_curve, curves, args.out)
    print(f"plot written to {args.out}")
    measured = (
        f"best informative order: {best} needs {best_needed} labels, random {random_needs} "
        f"({1 - best_needed / random_needs:.0%} fewer)"
        if best
        else "no informative order reaches random's final accuracy within the budget"
    )
    return (
        0
        if verdict(
            measured, ">= 25% fewer labels than random", bool(best_needed) and best_needed <= 0.75 * random_needs
        )
        else 1
    )


def _plot(mean_curve: dict, curves: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for s, curve in mean_curve.items():
        xs = sorted(curve)
        lows = [min(c[n] for c in curves[s]) for n in xs]
        highs = [max(c[n] for c in curves[s]) for n in xs]
        ax.plot(xs, [curve[n] for n in xs], label=s)
        ax.fill_between(xs, lows, highs, alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("labels")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(
        "HH-RLHF harmless-base: Bayesian reward head on frozen SmolLM2 features\n(mean over seeds, band = min-max)",
        fontsize=10,
    )
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
