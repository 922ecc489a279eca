"""The product's labelling loop, simulated for bench/label_efficiency.py --setting loop: every round the head is
refitted on the labels so far (workers.ml.head, as workers/jobs/select.py does), a strategy (workers.ml.choice)
picks the next batch of tasks and the pair of K each shows, and a simulated annotator labels them. Each task
(prompt) is labelled once, as in Label Studio. Agreement is measured on held-out prompts' candidate pairs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import combinations

import torch

from bench.annotators import Annotator
from bench.candidate_pool import Pool
from workers.ml.choice import plan
from workers.ml.head import BayesianHead


@dataclass
class Preferences:
    """An annotator's view of a pool: prob[i, a, b] = P(candidate a preferred to b for prompt i)."""

    prob: torch.Tensor  # [prompts, K, K]

    @classmethod
    def of(cls, pool: Pool, annotator: Annotator) -> Preferences:
        prepare = getattr(annotator, "prepare", None)
        if prepare is not None:
            pairs = zip(pool.prompts, pool.candidates, strict=True)
            prepare([(p, c.text, c.finished) for p, cands in pairs for c in cands])
        k = len(pool.candidates[0])
        prob = torch.full((len(pool.prompts), k, k), 0.5, dtype=torch.float64)
        for i, (prompt, cands) in enumerate(zip(pool.prompts, pool.candidates, strict=True)):
            for a, b in combinations(range(k), 2):
                p = float(annotator(prompt, cands[a].text, cands[b].text))
                if not 0.0 <= p <= 1.0:
                    raise ValueError(f"the annotator returned {p} for a pair: a probability lies in [0, 1]")
                prob[i, a, b], prob[i, b, a] = p, 1.0 - p
        return cls(prob)

    def decided(self) -> float:
        """Share of pairs the annotator does not see as a tie: the pairs agreement can be measured on."""
        k = self.prob.shape[1]
        a, b = torch.triu_indices(k, k, 1)
        upper = self.prob[:, a, b]
        return float((upper != 0.5).double().mean())


@dataclass
class Run:
    curve: dict[int, float] = field(default_factory=dict)  # labels -> held-out agreement
    fit_seconds: list[float] = field(default_factory=list)
    choose_seconds: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class LoopSpec:
    budget: int  # labels
    batch: int  # labels per round, one refit each
    warm_start: int  # random labels before any strategy chooses
    held_out: int  # prompts kept out, for agreement
    noise: float  # share of labels flipped


def simulate(features: torch.Tensor, prefs: Preferences, strategy: str, seed: int, spec: LoopSpec) -> Run:
    """One seed of one strategy. The seed fixes the held-out split, the warm start and every label's draw, so
    strategies labelling the same comparison get the same answer (common random numbers)."""
    g = torch.Generator().manual_seed(seed)
    n, k, _ = features.shape
    order = torch.randperm(n, generator=g)
    held, pool = order[: spec.held_out], order[spec.held_out :]
    draw, flip = torch.rand(n, k, k, generator=g, dtype=torch.float64), torch.rand(n, k, k, generator=g) < spec.noise
    scale = features[pool].reshape(-1, features.shape[-1]).std(0) + 1e-6  # the product: units of the pool's spread
    f = features / scale
    typical = (f[pool, 1:] - f[pool, :-1]).reshape(-1, f.shape[-1])  # neighbours: answers to one prompt
    a, b = torch.triu_indices(k, k, 1)
    held_x = (f[held][:, a] - f[held][:, b]).reshape(-1, f.shape[-1])
    held_p = prefs.prob[held][:, a, b].reshape(-1)
    decided = held_p != 0.5
    held_x, held_wins = held_x[decided], held_p[decided] > 0.5

    labelled: list[torch.Tensor] = []
    open_tasks = pool.tolist()
    warm = [open_tasks[i] for i in torch.randperm(len(open_tasks), generator=g)[: spec.warm_start].tolist()]
    picks = [(i, sorted(torch.randperm(k, generator=g)[:2].tolist())) for i in warm]
    run = Run()
    choice_g = torch.Generator().manual_seed(seed + 1)
    while True:
        for i, (x, y) in picks:
            wins = bool(draw[i, x, y] < prefs.prob[i, x, y]) ^ bool(flip[i, x, y])
            labelled.append(f[i, x] - f[i, y] if wins else f[i, y] - f[i, x])  # oriented chosen - rejected
            open_tasks.remove(i)
        began = time.perf_counter()
        head = BayesianHead(f.shape[-1], typical=typical).fit(torch.stack(labelled))
        run.fit_seconds.append(time.perf_counter() - began)
        run.curve[len(labelled)] = float(((head.mean(held_x) > 0) == held_wins).double().mean())
        if len(labelled) >= spec.budget:
            return run
        began = time.perf_counter()
        take = min(spec.batch, spec.budget - len(labelled))
        chosen = plan(head, [f[i] for i in open_tasks], strategy, shown=2, generator=choice_g, first=take)
        best = torch.topk(torch.tensor(chosen.worth), take).indices.tolist()
        picks = [(open_tasks[j], sorted(chosen.shown[j])) for j in best]
        run.choose_seconds.append(time.perf_counter() - began)
