"""What the labels say beyond training pairs: how often annotators agree where tasks overlap (the ceiling a
reward model's accuracy can reach), and how often humans prefer a new policy's answer over the previous
one's on blind human-judged tasks."""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations
from typing import Any

from backend.core.stats import rate


def agreement(rows: list[tuple[int, str | None, int, str, str]]) -> dict[str, Any]:
    """Share of (annotator, annotator, comparison) triples that chose the same answer, over comparisons two
    annotators both made on the same task and generation."""
    choices: dict[tuple[Any, ...], dict[int, str]] = defaultdict(dict)
    for task, generation, annotator, chosen, rejected in rows:
        choices[(task, generation, frozenset((chosen, rejected)))][annotator] = chosen
    agree = total = 0
    tasks = set()
    for (task, _, _), by_annotator in choices.items():
        for a, b in combinations(sorted(by_annotator), 2):
            total += 1
            agree += by_annotator[a] == by_annotator[b]
            tasks.add(task)
    return {**rate(agree, total).as_dict(), "tasks": len(tasks)}


def human_win_rates(rows: list[tuple[list[int], list[str], str]]) -> dict[str, dict[str, Any]]:
    """Per "policy vNEW vs vOLD": how often annotators chose the new policy's answer, with its interval."""
    outcomes: dict[tuple[int, int], list[bool]] = defaultdict(list)
    for policies, candidates, chosen in rows:
        if len(policies) != 2 or chosen not in candidates:
            continue
        new, old = max(policies), min(policies)
        outcomes[(new, old)].append(policies[candidates.index(chosen)] == new)
    return {
        f"policy v{new} vs v{old}": rate(sum(won), len(won)).as_dict() for (new, old), won in sorted(outcomes.items())
    }
