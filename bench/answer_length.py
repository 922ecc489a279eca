"""How long v0's candidates run: the share that ends (EOS) within each token budget, for MAX_NEW_TOKENS.

Samples one answer per prompt from the embedded SmolLM2 with the product's own candidate sampler
(workers.ml.generation, TEMPERATURE / TOP_P from the settings) at a long budget, then reads off, for each shorter
budget L, the share of answers that ended within L tokens: sampling is token by token, so an answer that ends
within L at the long budget is exactly the answer a budget of L would have given. One answer per prompt, so
the 95 % Wilson intervals treat prompts as independent draws. Prompts: the demo's everyday instructions and
the HH-RLHF test prompts (real users' first turns), half each.

    .venv/bin/python -m bench.answer_length            # 96 prompts at 512 tokens: 5 min on 2 idle cores
"""

from __future__ import annotations

import argparse
import time

from backend.core.settings import Settings
from backend.core.stats import rate
from bench.common import embedded_policy, header, hh_pairs, verdict
from bench.everyday import everyday_prompts

GOAL = 0.8  # the default MAX_NEW_TOKENS must let at least this share of v0's candidates finish


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=96, help="prompts in all, half everyday and half HH")
    parser.add_argument("--budget", type=int, default=512, help="the long budget every answer is sampled at")
    parser.add_argument("--lengths", default="96,128,192,256,320,384,512", help="budgets to report")
    args = parser.parse_args()

    import torch

    from workers.ml.generation import SamplingConfig, sample
    from workers.ml.loading import inference_dtype, load_policy

    settings = Settings()
    header(f"answer length: v0 candidates at {args.budget} tokens, {args.prompts} prompts")
    half = args.prompts // 2
    hh = list(dict.fromkeys(p["prompt"] for p in hh_pairs()[0] if "Assistant:" not in p["prompt"]))[
        : args.prompts - half
    ]
    prompts = everyday_prompts()[:half] + hh
    torch.manual_seed(0)
    model, tokenizer = load_policy(embedded_policy(), inference_dtype(settings.generation_dtype))
    cfg = SamplingConfig.from_settings(settings, 1)
    cfg = SamplingConfig(
        k=1,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        max_new_tokens=args.budget,
        batch_size=settings.generation_batch_size,
    )
    started = time.monotonic()
    answers, _ = sample(model, tokenizer, prompts, cfg)
    print(f"sampled in {time.monotonic() - started:.0f} s (temperature {cfg.temperature}, top_p {cfg.top_p})")
    # tokens up to and including EOS (the answer re-tokenised: within a token or two of what was sampled);
    # None: still going at the long budget
    lengths = [
        len(tokenizer(a.text, add_special_tokens=False)["input_ids"]) + 1 if a.finished else None for a in answers
    ]
    print(f"{'budget':>7} {'finished, all':>28} {'everyday':>10} {'HH':>8}")
    shares = {}
    for budget in [int(x) for x in args.lengths.split(",")]:
        ended = [n is not None and n <= budget for n in lengths]
        shares[budget] = rate(sum(ended), len(ended))
        print(
            f"{budget:>7} {str(shares[budget]):>28} {sum(ended[:half]) / half:>10.2f} "
            f"{sum(ended[half:]) / max(len(ended) - half, 1):>8.2f}"
        )
    current = settings.max_new_tokens
    share = shares.get(current) or rate(sum(n is not None and n <= current for n in lengths), len(lengths))
    return (
        0
        if verdict(
            f"MAX_NEW_TOKENS={current}: {share} of v0's candidates finish", f">= {GOAL:.0%}", share.value >= GOAL
        )
        else 1
    )


if __name__ == "__main__":
    raise SystemExit(main())
