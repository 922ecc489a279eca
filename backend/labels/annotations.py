"""An annotation, from its payload to stored preference pairs: which candidates the annotator compared (they may
have been regenerated while the task was open), the pairs its result implies, and what follows for training.
Used by the webhook, the reconciler's resync and `python -m backend resync` alike."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from backend.core.settings import Settings
from backend.labels.inputs import InvalidRequest, layout_of, require, task_ref, utc
from backend.labels.preferences import (
    FINISHED_KEY,
    GENERATION_KEY,
    InvalidAnnotation,
    Layout,
    pairs_from_result,
)
from backend.labels.trigger import Trigger
from backend.store import Generation, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Saved:
    """What storing annotations left: their pairs, the project's untrained pairs, and what follows: nothing, or
    a retrain the caller has run off its request path (`Trigger.train`)."""

    project: int
    pairs: int
    new_pairs: int
    follows: Literal["nothing", "retrain"]

    def summary(self) -> dict[str, Any]:
        """The webhook's answer: `training: requested` when a retrain follows."""
        due = {"training": "requested"} if self.follows == "retrain" else {}
        return {"project": self.project, "pairs": self.pairs, "new_pairs": self.new_pairs, **due}


class Annotations:
    """Stores annotations as preference pairs; the trigger says whether a retrain follows."""

    def __init__(self, settings: Settings, store: Store, trigger: Trigger) -> None:
        self.settings, self.store, self.trigger = settings, store, trigger

    def save_all(self, project_id: int, config: str, annotated: list[tuple[dict[str, Any], Any]]) -> Saved:
        """Store each (annotation, its task object or None); then one decision on what follows."""
        pairs, untrained = 0, None
        for annotation, task in annotated:
            count, untrained = self.save(project_id, config, annotation, task)
            pairs += count
        new, newest = untrained if untrained is not None else self.store.untrained_pairs(project_id)
        follows = "retrain" if self.trigger.due(new, newest) else "nothing"
        return Saved(project_id, pairs, new, follows)

    def save(self, project_id: int, config: str, annotation: dict[str, Any], task: Any) -> tuple[int, tuple[int, int]]:
        """Validate and store one annotation; returns (its pairs, the project's untrained pairs)."""
        annotation_id = require(annotation, "id", int)
        task_id = task_ref(annotation) if not isinstance(task, dict) else task.get("id")
        if not isinstance(task_id, int) or isinstance(task_id, bool):
            raise InvalidRequest("annotation must name its task")
        task_data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(task_data, dict):
            row = self.store.tasks([task_id]).get(task_id)
            if row is None:
                raise InvalidRequest(f"task {task_id} is unknown and the payload carries no task data")
            task_data = row.data
        result = annotation.get("result") or []
        skipped = bool(annotation.get("was_cancelled")) or not result
        if skipped:  # Label Studio counts the task as done; nothing is learned from it
            log.info(
                "annotation %s of task %s is %s: stored, no pairs (counted as skipped in /status)",
                annotation_id,
                task_id,
                "cancelled" if annotation.get("was_cancelled") else "empty",
            )
        layout = layout_of(config)
        shown = None if skipped else self._shown(layout, task_id, task_data, annotation, result)
        if shown is None and not skipped:
            log.warning(
                "annotation %s of task %s refers to candidates that were replaced and are not kept; "
                "stored as stale, no pairs",
                annotation_id,
                task_id,
            )
        try:
            pairs = pairs_from_result(layout, shown[0], result) if shown else []
        except InvalidAnnotation as exc:
            raise InvalidRequest(f"annotation {annotation_id}: {exc}", status=422) from None
        untrained = self.store.save_annotation(
            project_id,
            annotation_id,
            task_id,
            result,
            pairs,
            skipped,
            generation=shown[1] if shown else None,
            stale=shown is None and not skipped,
            annotator=_annotator(annotation.get("completed_by")),
            selection=self.settings.selection,
        )
        return len(pairs), untrained

    def _shown(
        self, layout: Layout, task_id: int, data: dict[str, Any], annotation: dict[str, Any], result: Any
    ) -> tuple[dict[str, Any], str | None] | None:
        """The task data the annotator compared, and its generation: the webhook carries the task as it is
        now, and its candidates may have been regenerated while the annotator had it open. A Ranker result
        names its generation in the item ids; for Pairwise it is the generation Label Studio was showing
        when the annotator started. None: that generation is not known (any more)."""
        current = data.get(GENERATION_KEY)
        if not isinstance(current, str):
            return data, None  # candidates that came with the task, or from before generations were tagged
        ranked = layout.generation_ranked(result)
        if ranked == current:
            return data, current  # the usual case, without a query
        generations = self.store.generations(task_id)
        wanted = ranked or _generation_at(generations, annotation) or current
        if wanted == current:
            return data, current
        old = next((g for g in generations if g.id == wanted), None)
        if old is None:
            return None
        log.info(
            "annotation %s of task %s: learned from generation %s the annotator saw, not the current %s",
            annotation.get("id"),
            task_id,
            wanted,
            current,
        )
        kept = {k: v for k, v in data.items() if k != FINISHED_KEY}  # the current candidates' flags are not its
        return {**kept, **layout.candidates_to_data(old.candidates, old.id, old.finished)}, old.id


def _generation_at(generations: list[Generation], annotation: dict[str, Any]) -> str | None:
    """The generation Label Studio showed when the annotator opened the task: its first draft, or the
    annotation's time minus the time spent on it (lead_time), both by Label Studio's clock."""
    started = [utc(annotation.get("draft_created_at"))]
    created, lead = utc(annotation.get("created_at")), annotation.get("lead_time")
    if created is not None and isinstance(lead, (int, float)) and math.isfinite(lead) and 0 <= lead < 1e7:
        started.append(created - timedelta(seconds=float(lead)))
    known = [t for t in started if t is not None]
    if not known:
        return None
    start = min(known)
    shown = [g for g in generations if g.shown_at is not None and g.shown_at <= start]
    return shown[-1].id if shown else None


def _annotator(completed_by: Any) -> int | None:
    """Label Studio's user id of who labelled it: an id in webhooks, `{"id": ...}` in some exports."""
    value = completed_by.get("id") if isinstance(completed_by, dict) else completed_by
    return value if isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63 else None
