"""What /predict returns per task: the score Label Studio orders its queue by, and a prediction that selects
nothing unless PRESELECT_CHOICE asks for the reward model's pick."""

from __future__ import annotations

from typing import Any

from backend.core.settings import QUEUE_BY_CHANCE
from backend.labels.preferences import Layout
from backend.labels.selection import confidence, informative_score, random_score
from backend.store import Task


def task_score(selection: str, task_id: int, row: Task | None, scores: list[float] | None) -> float | None:
    """The prediction score Label Studio orders the queue by (lowest first): a strategy that leaves the order
    to chance (SELECTION=random, dts), a uniform draw per task; any other, what labelling it teaches the
    reward head (once a refit has weighed it), else the reward model's confidence; None: nothing to say yet."""
    if selection in QUEUE_BY_CHANCE:
        return random_score(task_id)
    if row is not None and row.worth is not None:
        return informative_score(row.worth)
    return confidence(scores) if scores is not None else None


def prediction(
    layout: Layout, data: dict[str, Any], scores: list[float] | None, score: float, preselect: bool
) -> dict[str, Any]:
    """A prediction that selects nothing, carrying the task's score. The reward model's pick (pairwise) or order
    (ranker) is shown pre-selected only when PRESELECT_CHOICE is on: pre-selected, it anchors annotators, and
    clicking the picked answer un-selects it."""
    if not preselect or scores is None:
        return {"result": [], "score": round(score, 6)}
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    if layout.kind == "pairwise":
        value: dict[str, Any] = {"selected": "left" if order[0] == 0 else "right"}
    else:
        ids = [str(item.get("id")) for item in data[layout.answer_keys[0]]]
        value = {"ranker": {layout.control: [ids[i] for i in order]}}
    item = {"from_name": layout.control, "to_name": layout.to_name, "type": layout.kind, "value": value}
    return {"result": [item], "score": round(score, 6)}
