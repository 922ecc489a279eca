"""Which comparisons annotators label, given the Bayesian head (workers.ml.head): the pair of K each task shows
and the order the tasks are served in. bench/label_efficiency.py measures every strategy here against the
random control; workers/jobs/select.py runs the one SELECTION names.

A task holds K candidates (rows of features already in the head's units). A strategy returns a Plan: the
candidates each task shows (Pairwise: two of K; a Ranker shows all K, in a random order against position
bias) and each task's worth, higher first, which Label Studio's queue follows.

  random     a random two of K; a random order (the control)
  variance   the pair whose reward difference is least known, x'Sx; tasks by that worth
  fisher     the pair with most Fisher information p(1-p) x'Sx; tasks by that
  bald       the pair whose label says most about the head's weights (mutual information); tasks by that
  ucb-gap    DeltaUCB-style optimism |mean| + sd; tasks by that
  dts        double Thompson sampling: the best of K under one posterior draw against the best other one
             under a second draw; tasks in a random order (it chooses the pair, as in the papers, not the
             prompt: backend.core.settings.QUEUE_BY_CHANCE)
  d-optimal  one batch chosen jointly: greedily the comparison with most Fisher information given the ones
             already queued (rank-one updates of the covariance), so a batch does not ask one question twice
  v-optimal  the same, jointly, by how much a label lowers the predictive variance over every comparison
             offered (transductive design): a pair unlike the rest, an outlier, teaches little about them
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import torch

from backend.core.settings import QUEUE_BY_CHANCE, SELECTIONS
from workers.ml.head import BayesianHead


@dataclass
class Plan:
    shown: list[list[int]]  # per task, the candidates it shows, in the order shown
    worth: list[float]  # per task, what labelling it teaches the head: the queue serves the highest first


def plan(
    head: BayesianHead | None,
    tasks: list[torch.Tensor],
    strategy: str,
    shown: int = 2,
    generator: torch.Generator | None = None,
    first: int | None = None,
) -> Plan:
    """The candidates each task shows and its worth under `strategy`; tasks: per task its [K, d] features
    (any K >= shown). Without a head (SELECTION=random) every strategy is random. `first`: only the first
    tasks of the order are wanted (d-optimal then conditions on those alone; the rest keep what they would
    teach after them)."""
    if strategy not in SELECTIONS:
        raise ValueError(f"unknown selection strategy {strategy!r}; one of {SELECTIONS}")
    generator = generator or torch.Generator().manual_seed(0)
    if head is None or strategy == "random":
        return Plan(
            [_shuffled(_random_pair(len(t), shown, generator), generator) for t in tasks],
            torch.rand(len(tasks), generator=generator, dtype=torch.float64).tolist(),
        )
    if strategy in ("d-optimal", "v-optimal"):
        wanted = len(tasks) if first is None else min(first, len(tasks))
        return _joint(head, tasks, shown, generator, wanted, strategy)
    draws = head.sample(2 * len(tasks), generator) if strategy == "dts" else None
    picked, worth = [], []
    for i, features in enumerate(tasks):
        options = _comparisons(len(features), shown)
        if draws is not None:  # the queue's order is left to chance below
            pairwise = shown < len(features)
            picked.append(list(_double_thompson(features, *draws[2 * i : 2 * i + 2]) if pairwise else options[0]))
            continue
        values = head.worth(_differences(features, options), strategy)
        if shown < len(features):  # Pairwise: the pair worth most
            best = int(torch.argmax(values))
            picked.append(list(options[best]))
            worth.append(float(values[best]))
        else:  # a ranking answers all its comparisons
            picked.append(list(options[0]))
            worth.append(float(values.sum()))
    if strategy in QUEUE_BY_CHANCE:
        worth = torch.rand(len(tasks), generator=generator, dtype=torch.float64).tolist()
    return Plan([_shuffled(s, generator) for s in picked], worth)


def _comparisons(k: int, shown: int) -> list[tuple[int, ...]]:
    """What a task may show: every pair of K (Pairwise), or the one full ranking."""
    return list(combinations(range(k), 2)) if shown < k else [tuple(range(k))]


def _differences(features: torch.Tensor, options: list[tuple[int, ...]]) -> torch.Tensor:
    """[options * comparisons, d]: a pair's difference, or every pair's of a ranking (rows in option order)."""
    return torch.stack([features[a] - features[b] for option in options for a, b in combinations(option, 2)])


def _random_pair(k: int, shown: int, generator: torch.Generator) -> list[int]:
    return sorted(torch.randperm(k, generator=generator)[: min(shown, k)].tolist())


def _shuffled(candidates: list[int], generator: torch.Generator) -> list[int]:
    """The order shown: random, so that position carries nothing an annotator could lean on."""
    return [candidates[i] for i in torch.randperm(len(candidates), generator=generator).tolist()]


def _double_thompson(features: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> tuple[int, int]:
    """The best candidate under one posterior draw of the weights, against the best of the others under a
    second, independent draw: optimism about what could win, without asking the same question twice."""
    a = int(torch.argmax(features @ first))
    rewards = features @ second
    rewards[a] = -torch.inf
    return a, int(torch.argmax(rewards))


def _joint(
    head: BayesianHead, tasks: list[torch.Tensor], shown: int, generator: torch.Generator, first: int, design: str
) -> Plan:
    """A greedy optimal design: repeatedly the task option (a pair, or a whole ranking) worth most given the
    comparisons already queued, then rank-one updates of the covariance S by what it answers (each row's
    weight is its Fisher weight l = p(1-p)). A row's worth:
      d-optimal  l x'Sx, its own information (the log-determinant's gain);
      v-optimal  l x'SHSx / (1 + l x'Sx) with H = X'LX over every comparison offered: how much it lowers the
                 weighted predictive variance summed over them all, so a pair unlike the rest counts less.
    The worth recorded is the conditional one, so it never rises along the order."""
    options = [(i, o) for i, t in enumerate(tasks) for o in _comparisons(len(t), shown)]
    x = torch.cat([_differences(tasks[i], [o]) for i, o in options])
    row_option = torch.cat([torch.full((len(o) * (len(o) - 1) // 2,), j) for j, (_, o) in enumerate(options)])
    option_task = torch.tensor([i for i, _ in options])
    p = torch.sigmoid(head.mean(x))
    weight = p * (1 - p)
    cov, variance = head.cov.clone(), head.variance(x)
    spread = (x.T * weight) @ x if design == "v-optimal" else None  # H
    reach = ((x @ cov @ spread) * (x @ cov)).sum(1) if spread is not None else None  # x'SHSx
    open_option = torch.ones(len(options), dtype=torch.bool)
    shown_of: list[list[int]] = [[] for _ in tasks]
    worth = [0.0] * len(tasks)
    for picked in range(len(tasks)):
        row_worth = weight * variance if reach is None else weight * reach / (1 + weight * variance)
        value = torch.zeros(len(options), dtype=torch.float64).index_add_(0, row_option, row_worth)
        best = int(torch.argmax(value.masked_fill(~open_option, -torch.inf)))
        task = int(option_task[best])
        shown_of[task], worth[task] = list(options[best][1]), float(value[best])
        open_option &= option_task != task
        if picked >= first:  # past the wanted ones: no more conditioning
            continue
        for r in torch.nonzero(row_option == best).flatten().tolist():  # condition on what its label answers
            u = cov @ x[r]
            gain = weight[r] / (1 + weight[r] * (x[r] @ u))
            xu = x @ u
            if reach is not None:  # x'S'HS'x for S' = S - g u u'
                hu = spread @ u
                reach = reach - 2 * gain * xu * (x @ (cov @ hu)) + gain**2 * xu**2 * (u @ hu)
            variance = variance - gain * xu**2
            cov = cov - gain * torch.outer(u, u)
    return Plan([_shuffled(s, generator) for s in shown_of], worth)
