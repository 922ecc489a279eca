"""What /status, the report and the export read: per-project counts, how shown answers ended, labels where
annotators overlap (agreement), labels on human-judged tasks (win-rates), and every pair with its provenance."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select

from backend.store.database import Database
from backend.store.tables import Annotation, Generation, PairRow, Project, Task, default_lineage


class SummaryQueries(Database):
    """Read-only summaries over the tables, for people rather than training."""

    def export_pairs(self, project_id: int) -> list[dict[str, Any]]:
        """Every pair of one project, oldest first, with its task, annotator, time and the policy that wrote
        the candidates compared (the generation's, else the task's while it still shows them): what a team's
        own training stack needs to filter and weigh labels. One query with outer joins: no pair goes missing."""
        shown = PairRow.generation.is_(None) | (PairRow.generation == Task.generation)
        policy = case((Generation.id.is_not(None), Generation.policy_version), (shown, Task.policy_version))
        with self.session() as s:
            rows = s.execute(
                select(
                    PairRow.id,
                    Annotation.task_id,
                    PairRow.prompt,
                    PairRow.chosen,
                    PairRow.rejected,
                    PairRow.chosen_finished,
                    PairRow.rejected_finished,
                    PairRow.annotator,
                    PairRow.selection,
                    PairRow.generation,
                    policy.label("policy_version"),
                    PairRow.created_at,
                    PairRow.project_id,
                    Project.lineage,
                )
                .outerjoin(Annotation, Annotation.id == PairRow.annotation_id)
                .outerjoin(Task, Task.id == Annotation.task_id)
                .outerjoin(Generation, Generation.id == PairRow.generation)
                .outerjoin(Project, Project.id == PairRow.project_id)
                .where(PairRow.project_id == project_id)
                .order_by(PairRow.id)
            )
            return [{**r._mapping, "lineage": r.lineage or default_lineage(project_id)} for r in rows]

    def overlapping_labels(self, lineage: str) -> list[tuple[int, str | None, int, str, str]]:
        """(task, generation, annotator, chosen, rejected) of the lineage's tasks that two or more annotators
        labelled: what inter-annotator agreement is computed from."""
        with self.session() as s:
            shared = (
                select(Annotation.task_id)
                .join(PairRow, PairRow.annotation_id == Annotation.id)
                .join(Project, Project.id == Annotation.project_id)
                .where(Project.lineage == lineage, PairRow.annotator.is_not(None))
                .group_by(Annotation.task_id)
                .having(func.count(func.distinct(PairRow.annotator)) > 1)
            )
            rows = s.execute(
                select(Annotation.task_id, PairRow.generation, PairRow.annotator, PairRow.chosen, PairRow.rejected)
                .join(PairRow, PairRow.annotation_id == Annotation.id)
                .where(Annotation.task_id.in_(shared))
            )
            return [tuple(r) for r in rows]

    def judged_labels(self, lineage: str) -> list[tuple[list[int], list[str], str]]:
        """(policy of each candidate, the candidates, the chosen answer) of each label on a human-judged task."""
        with self.session() as s:
            rows = s.execute(
                select(Generation.policies, Generation.candidates, PairRow.chosen)
                .join(PairRow, PairRow.generation == Generation.id)
                .join(Project, Project.id == PairRow.project_id)
                .where(Project.lineage == lineage, Generation.policies.is_not(None))
            )
            return [tuple(r) for r in rows]

    def counts(self) -> dict[int, dict[str, Any]]:
        """Per project: its lineage, annotations that gave pairs, pairs (also per SELECTION they were labelled
        under), pairs not yet fed to a training, annotations refused because they referred to candidates no
        longer known, and cancelled or empty ones."""
        with self.session() as s:
            per_project = select(Annotation.project_id, func.count()).group_by(Annotation.project_id)
            anns = dict(s.execute(per_project.where(Annotation.skipped.is_(False), Annotation.stale.is_(False))).all())
            stale = dict(s.execute(per_project.where(Annotation.stale.is_(True))).all())
            skipped = dict(s.execute(per_project.where(Annotation.skipped.is_(True))).all())
            pairs = dict(s.execute(select(PairRow.project_id, func.count()).group_by(PairRow.project_id)).all())
            new = dict(
                s.execute(
                    select(PairRow.project_id, func.count())
                    .join(Project, Project.id == PairRow.project_id)
                    .where(PairRow.id > Project.trained_pair_id)
                    .group_by(PairRow.project_id)
                ).all()
            )
            lineages = dict(s.execute(select(Project.id, Project.lineage)).all())
            by_selection: dict[int, dict[str, int]] = {}
            for pid, chosen_by, n in s.execute(
                select(PairRow.project_id, PairRow.selection, func.count()).group_by(
                    PairRow.project_id, PairRow.selection
                )
            ):
                by_selection.setdefault(pid, {})[chosen_by or "unrecorded"] = n
        ids = sorted(set(anns) | set(pairs) | set(lineages) | set(stale))
        return {
            pid: {
                "lineage": lineages.get(pid) or default_lineage(pid),
                "annotations": anns.get(pid, 0),
                "pairs": pairs.get(pid, 0),
                "new_pairs": new.get(pid, 0),
                "stale_annotations": stale.get(pid, 0),
                "skipped_annotations": skipped.get(pid, 0),
                "pairs_by_selection": by_selection.get(pid, {}),
            }
            for pid in ids
        }

    def answer_endings(self) -> dict[int, dict[str, Any]]:
        """Per project, how the candidates its tasks show ended: per policy version that wrote them, answers
        that finished and that were cut at MAX_NEW_TOKENS, with the finished share; and answers whose ending
        is not recorded (written before it was, or came with the task), read as finished until regenerated."""
        with self.session() as s:
            rows = s.execute(
                select(Task.project_id, Task.policy_version, Task.candidates, Task.finished).where(
                    Task.candidates.is_not(None)
                )
            ).all()
        found: dict[int, dict[str, Any]] = {}
        for project_id, version, candidates, finished in rows:
            mine = found.setdefault(project_id, {"by_policy": {}, "unknown": 0})
            if not finished:
                mine["unknown"] += len(candidates)
                continue
            tally = mine["by_policy"].setdefault(f"v{version}", {"finished": 0, "cut": 0})
            tally["finished"] += sum(1 for f in finished if f)
            tally["cut"] += sum(1 for f in finished if not f)
        for mine in found.values():
            for tally in mine["by_policy"].values():
                tally["finished_share"] = round(tally["finished"] / (tally["finished"] + tally["cut"]), 4)
        return found
