"""Fewer labels: does choosing which comparison to label next save labels?

Two settings:
  loop  the product's own: prompts with K candidates each, sampled once from the embedded policy v0 and
        cached (bench/candidate_pool.py); a simulated annotator (bench/annotators.py: a gold reward model
        trained on human preferences, three readable rules, or `--annotator FILE.py:FUNC`) labels the pair each
        strategy (workers/ml/choice.py) shows, B per round, refitting the head between rounds
        (bench/selection_loop.py). Metric: agreement with the annotator's preference on held-out prompts' pairs.
  hh    the realism check: HH-RLHF harmless-base replayed (one fixed human pair per prompt), in the order
        a per-comparison criterion asks for; metric: held-out accuracy.

The head is the product's Bayesian logistic regression (Laplace) on frozen v0 features: the last hidden
state at each answer's reward token (workers.ml.features). Savings: labels a strategy needs to reach random's
final mean agreement, against the labels random itself first needs, with a paired bootstrap over seeds.

    .venv/bin/python -m bench.label_efficiency --setting loop       # every built-in annotator, 10 seeds
    .venv/bin/python -m bench.label_efficiency --setting loop --annotator my_rules.py:prefers
    .venv/bin/python -m bench.label_efficiency --setting hh
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import torch

from backend.core.settings import SELECTIONS as STRATEGIES
from backend.core.settings import Settings
from bench.annotators import built_in, load
from bench.candidate_pool import Candidate, Pool, candidate_pool, file_prompts, hh_prompts, pool_features
from bench.common import HH_DATA, ROOT, header, hh_pairs, percentile, verdict
from bench.selection_loop import LoopSpec, Preferences, Run, simulate

GOAL = 0.25  # the share of labels the default strategy must save
RICH = ((-1,), (15,))  # +rich features: the reward token's state in the last layer; the answer's mean in layer 15
RESAMPLES = 2000


def default_strategy() -> str:
    """The product's SELECTION default: the strategy the verdict is about."""
    return Settings.model_fields["selection"].default


def labels_to_reach(curve: dict[int, float], target: float) -> float | None:
    """Labels at which the curve first reaches target, interpolated linearly between checkpoints."""
    points = sorted(curve.items())
    for (n0, v0), (n1, v1) in zip([(points[0][0], -1.0), *points], points, strict=False):
        if v1 >= target:
            return float(n1) if v1 == v0 or n0 == n1 else n0 + (n1 - n0) * (target - v0) / (v1 - v0)
    return None


def mean_curve(runs: list[Run]) -> dict[int, float]:
    return {n: sum(r.curve[n] for r in runs) / len(runs) for n in runs[0].curve}


def saving(strategy: list[Run], control: list[Run]) -> tuple[float, float | None, float | None]:
    """1 - labels the strategy needs / labels random needs to reach random's final mean agreement; -inf when
    the strategy never gets there within the budget. Returns (saving, labels needed, random's labels)."""
    reference = mean_curve(control)
    target = reference[max(reference)]
    needs, base = labels_to_reach(mean_curve(strategy), target), labels_to_reach(reference, target)
    return (1 - needs / base if needs is not None else -float("inf")), needs, base


def bootstrap(strategy: list[Run], control: list[Run], seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the saving, resampling seeds (the same ones for both: paired)."""
    g = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(RESAMPLES):
        pick = torch.randint(len(control), (len(control),), generator=g).tolist()
        values.append(saving([strategy[i] for i in pick], [control[i] for i in pick])[0])
    return percentile(values, 2.5), percentile(values, 97.5)


def share(saving: float) -> str:
    """A saving as a signed percentage; -inf (random's final agreement never reached) as 'never'."""
    return f"{saving:+.0%}" if saving != -float("inf") else "never"


def report(title: str, runs: dict[str, list[Run]], default: str, measure: str) -> tuple[str, bool]:
    """The agreement table and each strategy's saving with its interval and cost; returns the verdict's
    figures and whether the default strategy passed."""
    print(f"\n--- annotator {title} ---")
    names = list(runs)
    checkpoints = sorted(runs[names[0]][0].curve)
    shown = [n for n in checkpoints if n in (checkpoints[0], checkpoints[-1]) or n % 50 == 0]
    print(f"{measure} by labels, mean [min, max] over {len(runs[names[0]])} seeds")
    print(f"{'labels':>7} " + " ".join(f"{s:>21}" for s in names))
    for n in shown:
        cells = [
            f"{sum(r.curve[n] for r in rs) / len(rs):.3f} [{min(r.curve[n] for r in rs):.3f}, "
            f"{max(r.curve[n] for r in rs):.3f}]"
            for rs in runs.values()
        ]
        print(f"{n:>7} " + " ".join(f"{c:>21}" for c in cells))
    _, _, base = saving(runs["random"], runs["random"])
    target = mean_curve(runs["random"])[checkpoints[-1]]
    print(
        f"labels to reach random's final mean {measure} ({target:.3f}); random first gets there at "
        f"{base:.0f}. Saving = 1 - labels / {base:.0f}, 95 % paired bootstrap over seeds; cost per round: "
        "choosing and refitting"
    )
    result = {}
    for name, rs in runs.items():
        point, needs, _ = saving(rs, runs["random"])
        low, high = bootstrap(rs, runs["random"])
        result[name] = (point, low, high, needs)
        choose = 1000 * sum(sum(r.choose_seconds) for r in rs) / max(1, sum(len(r.choose_seconds) for r in rs))
        fit = 1000 * sum(sum(r.fit_seconds) for r in rs) / sum(len(r.fit_seconds) for r in rs)
        print(
            f"  {name:<16} {f'{needs:.0f}' if needs is not None else 'never':>6} labels  saving {share(point)} "
            f"[{share(low)}, {share(high)}]  choose {choose:.0f} ms, refit {fit:.0f} ms"
        )
    point, low, high, _ = result[default]
    others = {name: r for name, r in result.items() if name != "random"}
    summary = f"{title}: default {default} saves {share(point)} [{share(low)}, {share(high)}]"
    if others:
        best = max(others, key=lambda name: (others[name][1], others[name][0]))  # the highest lower bound
        p, lo, hi, _ = others[best]
        summary += f"; best strategy {best} {share(p)} [{share(lo)}, {share(hi)}]"
    return summary, point >= GOAL and low > 0


def hh_pool(path: Path, limit: int) -> tuple[Pool, Preferences]:
    """HH-RLHF pairs as a pool of K=2 (chosen first; finished unknown) with the human label as the annotator."""
    pairs, _ = hh_pairs(path)
    pairs = pairs[:limit] if limit else pairs
    content = hashlib.sha256(repr([(p["prompt"], p["chosen"], p["rejected"]) for p in pairs]).encode())
    pool = Pool(
        [p["prompt"] for p in pairs],
        [[Candidate(p["chosen"], None), Candidate(p["rejected"], None)] for p in pairs],
        f"hh-{content.hexdigest()[:12]}",  # the features' cache follows the pairs, not only their count
    )
    prob = torch.full((len(pairs), 2, 2), 0.5, dtype=torch.float64)
    prob[:, 0, 1], prob[:, 1, 0] = 1.0, 0.0
    return pool, Preferences(prob)


def run_strategies(features, prefs: Preferences, strategies: list[str], seeds: int, spec: LoopSpec, rich=None):
    """Every strategy over every seed; `NAME+rich` runs on the richer features."""
    runs = {}
    for name in strategies:
        base, _, variant = name.partition("+")
        source = rich if variant else features
        started = time.monotonic()
        runs[name] = [simulate(source, prefs, base, seed, spec) for seed in range(seeds)]
        print(f"  {name}: {seeds} seeds in {time.monotonic() - started:.0f} s", flush=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--setting", choices=("loop", "hh"), default="loop")
    p.add_argument(
        "--annotator",
        action="append",
        help=f"loop: one of {sorted(built_in())} or FILE.py:FUNC; repeatable (default: every built-in one)",
    )
    p.add_argument("--prompts", type=int, default=500, help="loop: prompts in the pool (HH-RLHF's, single-turn)")
    p.add_argument("--prompt-file", type=Path, help="loop: prompts from a file (one per line, or a JSON list)")
    p.add_argument("--k", type=int, default=4, help="loop: candidates per prompt")
    p.add_argument("--max-new-tokens", type=int, default=128, help="loop: the candidates' token budget")
    p.add_argument("--data", type=Path, default=HH_DATA, help="hh: the pairs")
    p.add_argument("--limit", type=int, default=0, help="hh: only the first N pairs (a smoke run); 0 = all")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--budget", type=int, default=None, help="labels per run (loop 150, hh 800)")
    p.add_argument("--batch", type=int, default=10, help="labels per round (one refit each)")
    p.add_argument("--warm-start", type=int, default=10, help="random labels before any strategy chooses")
    p.add_argument("--held-out", type=int, default=None, help="prompts kept out for agreement (loop 100, hh 700)")
    p.add_argument("--noise", type=float, default=0.0, help="share of labels flipped")
    p.add_argument(
        "--strategies",
        default=",".join([*STRATEGIES, "random+rich", "dts+rich"]),
        help="comma list; NAME+rich reads richer features: the reward token's last layer beside the mean of "
        "layer 15 over the answer's tokens",
    )
    p.add_argument("--out", type=Path, default=ROOT / ".cache" / "label_efficiency.png")
    args = p.parse_args(argv)
    strategies = args.strategies.split(",")
    if "random" not in strategies:
        strategies.insert(0, "random")
    default = default_strategy()
    if default not in strategies:
        strategies.append(default)
    loop = args.setting == "loop"
    spec = LoopSpec(
        budget=args.budget or (150 if loop else 800),
        batch=args.batch,
        warm_start=args.warm_start,
        held_out=args.held_out or (100 if loop else 700),
        noise=args.noise,
    )
    header(f"label efficiency, {args.setting} setting: strategies against a random two of K")
    started = time.monotonic()
    if loop:
        prompts = file_prompts(args.prompt_file, args.prompts) if args.prompt_file else hh_prompts(args.prompts)
        pool = candidate_pool(prompts, args.k, args.max_new_tokens)
        annotators = [load(a) for a in (args.annotator or sorted(built_in()))]
    else:
        pool, human = hh_pool(args.data, args.limit)
        annotators = [("human (HH-RLHF)", None)]
    features = pool_features(pool)
    rich = pool_features(pool, *RICH) if any("+rich" in s for s in strategies) else None
    print(
        f"{len(pool.prompts)} prompts x {len(pool.candidates[0])} candidates; features {tuple(features.shape)} "
        f"({time.monotonic() - started:.0f} s, cached); budget {spec.budget}, {spec.batch} per round, warm start "
        f"{spec.warm_start}, {spec.held_out} held-out prompts, noise {spec.noise:.0%}, {args.seeds} seeds"
    )
    verdicts, curves = [], {}
    for name, annotator in annotators:
        prefs = Preferences.of(pool, annotator) if annotator is not None else human
        print(f"\nannotator {name}: decides {prefs.decided():.0%} of candidate pairs (the rest are ties)", flush=True)
        runs = run_strategies(features, prefs, strategies, args.seeds, spec, rich)
        verdicts.append(report(name, runs, default, "agreement" if loop else "held-out accuracy"))
        print(f"  {verdicts[-1][0]}", flush=True)
        curves[name] = runs
    _plot(curves, args.out)
    print(f"plot written to {args.out}")
    ok = verdict(
        " | ".join(figures for figures, _ in verdicts),
        f"default SELECTION={default} needs >= {GOAL:.0%} fewer labels than random, 95 % interval above 0, "
        "for every annotator",
        all(passed for _, passed in verdicts),
    )
    return 0 if ok else 1


def _plot(curves: dict[str, dict[str, list[Run]]], out: Path) -> None:
    """Agreement against labels, one panel per annotator, a line per strategy (mean; band min-max over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4.2), squeeze=False)
    for ax, (annotator, runs) in zip(axes[0], curves.items(), strict=True):
        for name, rs in runs.items():
            xs = sorted(rs[0].curve)
            ax.plot(xs, [sum(r.curve[n] for r in rs) / len(rs) for n in xs], label=name)
            ax.fill_between(
                xs, [min(r.curve[n] for r in rs) for n in xs], [max(r.curve[n] for r in rs) for n in xs], alpha=0.1
            )
        ax.set_title(annotator, fontsize=10)
        ax.set_xlabel("labels")
        ax.set_ylabel("held-out agreement")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
