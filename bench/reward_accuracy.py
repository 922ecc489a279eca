"""Reward-model accuracy on held-out human preferences (HH-RLHF), trained with our reward recipe.

Pairs are split by prompt with the reward job's own rule (workers.jobs.train.split: 10% of prompts held out,
by hash, seeded), so no prompt is in both halves. Pairs with a side longer than --max-length are dropped before
training (trl would drop them silently), and the sizes used are printed. Accuracy is the share of held-out
pairs whose chosen answer scores higher, computed with workers.ml.loading.score (the scoring path /predict
serves), and compared with two baselines on the same pairs: chance, and "the longer answer wins".
Goal (ours, none was set): the 95% Wilson interval of the accuracy lies above chance.

Run from the repository root (bench/README.md has more):

    .venv/bin/python -m bench.reward_accuracy             # CPU slice: 256 train / 64 held-out pairs: ~7 min
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

from bench import common


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=common.HH_DATA, help="HH-RLHF jsonl.gz with {chosen, rejected}")
    parser.add_argument(
        "--model",
        default="embedded",
        help="starting policy: dir, hub id, `embedded` (SmolLM2-135M-Instruct policy v0) or `tiny`",
    )
    parser.add_argument("--limit", type=int, default=256, help="train pairs to use (0 = all that fit)")
    parser.add_argument("--eval-limit", type=int, default=64, help="held-out pairs to use (0 = all that fit)")
    parser.add_argument("--max-length", type=int, default=256, help="tokens per side, prompt included")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-5, help="learning rate (the recipe's default)")
    parser.add_argument("--batch-size", type=int, default=4, help="per-device train batch (pairs)")
    parser.add_argument(
        "--bf16",
        choices=["auto", "on", "off"],
        default="auto",
        help="auto: workers.ml.loading.use_bf16() (bf16 GPUs); on also works on AMX/AVX512-BF16 CPUs",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of training (SEED)")
    return parser


def load_split(args: argparse.Namespace, tokenizer: object) -> tuple[list[dict[str, str]], list[dict[str, str]], str]:
    """(train, held-out) pairs that fit max_length, limited, and a line describing the sizes."""
    from workers.jobs.train import split

    pairs, skipped = common.hh_pairs(args.data)
    train, held = split(pairs, lambda p: p["prompt"], args.seed)
    fit_train = (
        [p for p in train if common.fits(tokenizer, p, args.max_length)]
        if args.limit == 0
        else _first_fitting(train, tokenizer, args.max_length, args.limit)
    )
    fit_held = (
        [p for p in held if common.fits(tokenizer, p, args.max_length)]
        if args.eval_limit == 0
        else _first_fitting(held, tokenizer, args.max_length, args.eval_limit)
    )
    sizes = (
        f"{len(pairs)} pairs parsed ({skipped} skipped: prompts differ or an answer is empty/identical), split by "
        f"prompt {len(train)} train / {len(held)} held out; used {len(fit_train)} train / {len(fit_held)} held-out "
        f"pairs that fit {args.max_length} tokens"
    )
    return fit_train, fit_held, sizes


def _first_fitting(pairs: list[dict[str, str]], tokenizer: object, max_length: int, limit: int) -> list[dict[str, str]]:
    """The first `limit` pairs in file order that fit (tokenizing only as many as needed)."""
    kept = []
    for pair in pairs:
        if common.fits(tokenizer, pair, max_length):
            kept.append(pair)
            if len(kept) == limit:
                break
    return kept


def accuracy(model_dir: Path, pairs: list[dict[str, str]], bf16: bool) -> float:
    """Share of pairs whose chosen answer gets the higher reward, scored as /predict's scores are."""
    import torch

    from workers.ml.loading import load_reward
    from workers.ml.scoring import score

    model, tokenizer = load_reward(model_dir, torch.bfloat16 if bf16 else torch.float32)
    prompts = [p["prompt"] for p in pairs]
    unknown = [None] * len(pairs)  # whether the answers ended is not recorded: read as finished, no penalty
    chosen, rejected = (
        score(model, tokenizer, prompts, [p[side] for p in pairs], unknown, 0.0) for side in ("chosen", "rejected")
    )
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(pairs)


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion: honest error bars for small held-out sets."""
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def main(argv: list[str] | None = None) -> bool:
    args = make_parser().parse_args(argv)
    common.header("reward-model accuracy on held-out HH-RLHF pairs")
    from workers.ml.loading import load_tokenizer, use_bf16
    from workers.recipes import RECIPES
    from workers.recipes.base import RecipeInputs

    model_path = Path(common.resolve_model(args.model))
    bf16 = {"auto": use_bf16(), "on": True, "off": False}[args.bf16]
    train, held, sizes = load_split(args, load_tokenizer(model_path))
    print(f"data {args.data.name}: {sizes}")
    print(
        f"model {model_path} | epochs {args.epochs} | lr {args.lr} | batch {args.batch_size} | "
        f"max_length {args.max_length} | bf16 {bf16} | seed {args.seed}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-reward-") as tmp:
        inputs = RecipeInputs(
            policy_dir=model_path,
            reference_dir=model_path,
            out_dir=Path(tmp) / "reward",
            pairs=train,
            eval_pairs=held,
            bf16=bf16,
            seed=args.seed,
            overrides={
                "learning_rate": args.lr,
                "num_train_epochs": args.epochs,
                "max_length": args.max_length,
                "per_device_train_batch_size": args.batch_size,
            },
        )
        with common.Timer() as timer, common.quiet():
            metrics = RECIPES["reward"].train(inputs)
        with common.quiet():
            ours = accuracy(inputs.out_dir, held, bf16)
    n = len(held)
    longer = sum(len(p["chosen"]) > len(p["rejected"]) for p in held) / n
    low, high = wilson(ours, n)
    print(
        f"trained in {timer.seconds:.0f} s (train_runtime {metrics.get('train_runtime', float('nan')):.0f} s, "
        f"{metrics.get('train_samples_per_second', float('nan')):.2f} pairs/s); trl eval_accuracy "
        f"{metrics.get('eval_accuracy', float('nan')):.3f} (mean of batch means)"
    )
    print(f"baseline 'longer answer wins': {longer:.3f} on the same {n} held-out pairs (chance: 0.500)")
    print(
        f"ours (reward recipe, scored by workers.ml.loading.score): {ours:.3f} on {n} held-out pairs, "
        f"95% CI [{low:.3f}, {high:.3f}], trained on {len(train)} pairs"
    )
    print(f"ratio ours / longer-answer baseline: {ours / longer:.2f}x; ours / chance: {ours / 0.5:.2f}x")
    return common.verdict(
        f"held-out accuracy {ours:.3f} (n={n}, CI low {low:.3f})", "95% CI above chance (0.5)", low > 0.5
    )


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
