"""Choosing what annotators label, in plain numbers both sides share: the backend serves these scores in
/predict, workers write them to Label Studio (workers.jobs.select). Label Studio's uncertainty sampling
serves the lowest prediction score first."""

from __future__ import annotations

import hashlib
import math
from itertools import pairwise


def draw(task_id: int, version: int | None, purpose: str) -> float:
    """A uniform number in [0, 1) fixed by the task, a version and a purpose: reruns of a job draw the same."""
    digest = hashlib.sha256(f"{purpose}:{task_id}:{version}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def informative_score(worth: float) -> float:
    """1 / (1 + worth), in (0, 1]: the comparison worth most to the reward head gets the lowest score, so
    annotators see it first."""
    return 1.0 / (1.0 + worth) if math.isfinite(worth) and worth > 0 else 1.0


def random_score(task_id: int) -> float:
    """SELECTION=random: a score fixed per task and uniform, so ordering by it is a random order."""
    return draw(task_id, None, "order")


def confidence(scores: list[float]) -> float:
    """The reward model's mean confidence over adjacent candidates, sigma(|r_a - r_b|), in [0.5, 1): the
    task score before the head has features for a task."""
    order = sorted(scores, reverse=True)
    return sum(1.0 / (1.0 + math.exp(-abs(a - b))) for a, b in pairwise(order)) / (len(order) - 1)
