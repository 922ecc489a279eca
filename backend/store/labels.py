"""Annotations and the preference pairs they imply: stored idempotently on the webhook's hot path, read back per
lineage for training, per project for export, and for agreement and human win-rates."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, delete, func, insert, select
from sqlalchemy.engine import Connection

from backend.store.database import chunks
from backend.store.lineages import LineageQueries
from backend.store.tables import (
    Annotation,
    Generation,
    PairRow,
    Project,
    Task,
    utcnow,
)

if TYPE_CHECKING:  # the labels domain makes pairs; the store only keeps them
    from backend.labels.preferences import Pair

# The webhook's statements, built once: building them per call took about half of save_annotation's time.
_DELETE_ANNOTATION = delete(Annotation).where(Annotation.id == bindparam("annotation_id"))


_STORED_ANNOTATION = select(
    Annotation.project_id, Annotation.task_id, Annotation.result, Annotation.skipped, Annotation.stale
).where(Annotation.id == bindparam("annotation_id"))


_STORED_PAIRS = (
    select(
        PairRow.prompt,
        PairRow.chosen,
        PairRow.rejected,
        PairRow.chosen_finished,
        PairRow.rejected_finished,
        PairRow.generation,
        PairRow.annotator,
    )
    .where(PairRow.annotation_id == bindparam("annotation_id"))
    .order_by(PairRow.id)
)


_INSERT_ANNOTATION = insert(Annotation)


_INSERT_PAIRS = insert(PairRow).values(
    selection=func.coalesce(
        select(Project.selection).where(Project.id == bindparam("of_project")).scalar_subquery(),
        bindparam("fallback_selection"),
    )
)


def _stored_as(conn: Connection, annotation_id: int, annotation: tuple, pairs: list[tuple]) -> bool:
    """Whether this annotation is stored exactly so, with exactly these pairs, in this order."""
    row = conn.execute(_STORED_ANNOTATION, {"annotation_id": annotation_id}).one_or_none()
    return (
        row is not None
        and tuple(row) == annotation
        and [tuple(p) for p in conn.execute(_STORED_PAIRS, {"annotation_id": annotation_id})] == pairs
    )


class LabelQueries(LineageQueries):
    """Reads and writes of annotations and pairs (storing one answers with the lineage's untrained pairs)."""

    # annotations and pairs
    def save_annotation(
        self,
        project_id: int,
        annotation_id: int,
        task_id: int,
        result: Any,
        pairs: list[Pair],
        skipped: bool,
        generation: str | None = None,
        stale: bool = False,
        annotator: int | None = None,
        selection: str | None = None,
    ) -> tuple[int, int]:
        """Replace an annotation and its pairs atomically (an update replaces); a repeat of what is stored (Label
        Studio's re-save, a resync overlapping a webhook) writes nothing, so its pairs keep their ids and add
        nothing toward RETRAIN_EVERY. Each pair records the project's SELECTION (`selection` where the project
        names none). Returns the lineage's untrained pairs as `untrained_pairs` does, counted just after the
        commit: SQLite writers queue on the writer lock, which is then held for the writes alone."""
        stored = (project_id, task_id, result, skipped, stale)
        stored_pairs = [
            (p.prompt, p.chosen, p.rejected, p.chosen_finished, p.rejected_finished, generation, annotator)
            for p in pairs
        ]
        with self._writer(), self.engine.begin() as conn:  # statements built once: this is the webhook's hot path
            if not _stored_as(conn, annotation_id, stored, stored_pairs):
                conn.execute(_DELETE_ANNOTATION, {"annotation_id": annotation_id})  # its pairs go too (CASCADE)
                now = utcnow()
                conn.execute(
                    _INSERT_ANNOTATION,
                    {
                        "id": annotation_id,
                        "project_id": project_id,
                        "task_id": task_id,
                        "result": result,
                        "skipped": skipped,
                        "stale": stale,
                        "updated_at": now,
                    },
                )
                if pairs:
                    conn.execute(
                        _INSERT_PAIRS,
                        [
                            {
                                "annotation_id": annotation_id,
                                "project_id": project_id,
                                "prompt": p.prompt,
                                "chosen": p.chosen,
                                "rejected": p.rejected,
                                "chosen_finished": p.chosen_finished,
                                "rejected_finished": p.rejected_finished,
                                "generation": generation,
                                "annotator": annotator,
                                "created_at": now,
                                "of_project": project_id,
                                "fallback_selection": selection,
                            }
                            for p in pairs
                        ],
                    )
        return self.untrained_pairs(project_id)

    def annotation_results(self, annotation_ids: Iterable[int]) -> dict[int, Any]:
        """The stored result of each of these annotations that is stored."""
        with self.session() as s:
            return {
                i: r
                for chunk in chunks(list(annotation_ids))
                for i, r in s.execute(select(Annotation.id, Annotation.result).where(Annotation.id.in_(chunk)))
            }

    def delete_annotations(self, annotation_ids: Iterable[int]) -> int:
        ids = list(annotation_ids)
        with self._write_session() as s:
            s.execute(delete(PairRow).where(PairRow.annotation_id.in_(ids)))
            return s.execute(delete(Annotation).where(Annotation.id.in_(ids))).rowcount

    def delete_tasks(self, task_ids: Iterable[int]) -> dict[str, int]:
        """Forget deleted tasks with their annotations and pairs (Label Studio deletes those with the task)."""
        ids = list(task_ids)
        with self._write_session() as s:
            annotations = select(Annotation.id).where(Annotation.task_id.in_(ids))
            s.execute(delete(PairRow).where(PairRow.annotation_id.in_(annotations)))
            return {
                "deleted_annotations": s.execute(delete(Annotation).where(Annotation.task_id.in_(ids))).rowcount,
                "deleted_tasks": s.execute(delete(Task).where(Task.id.in_(ids))).rowcount,
            }

    def delete_project(self, project_id: int) -> dict[str, int]:
        """Forget a deleted project entirely: its settings, tasks, annotations and pairs."""
        with self._write_session() as s:
            s.execute(delete(PairRow).where(PairRow.project_id == project_id))
            counts = {
                "deleted_annotations": s.execute(
                    delete(Annotation).where(Annotation.project_id == project_id)
                ).rowcount,
                "deleted_tasks": s.execute(delete(Task).where(Task.project_id == project_id)).rowcount,
            }
            s.execute(delete(Project).where(Project.id == project_id))
            return counts

    def clear_project(self, project_id: int) -> None:
        """Drop a project's annotations and pairs (before a resync from Label Studio)."""
        with self._write_session() as s:
            s.execute(delete(PairRow).where(PairRow.project_id == project_id))
            s.execute(delete(Annotation).where(Annotation.project_id == project_id))

    def pairs(self, lineage: str, *, judged: bool) -> list[dict[str, Any]]:
        """Every pair of the lineage's projects, oldest first, with whether each side ended; judged=False
        leaves out the labels of human-judged tasks (new policy against old), which judge the policy and stay
        out of its training unless HUMAN_JUDGE_TRAIN: every caller decides."""
        with self.session() as s:
            query = (
                select(
                    PairRow.id,
                    PairRow.prompt,
                    PairRow.chosen,
                    PairRow.rejected,
                    PairRow.chosen_finished,
                    PairRow.rejected_finished,
                    PairRow.project_id,
                )
                .join(Project, Project.id == PairRow.project_id)
                .where(Project.lineage == lineage)
            )
            if not judged:
                query = query.outerjoin(Generation, Generation.id == PairRow.generation).where(
                    Generation.policies.is_(None)
                )
            return [dict(r._mapping) for r in s.execute(query.order_by(PairRow.id))]
