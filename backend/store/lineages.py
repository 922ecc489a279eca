"""Projects, the lineage each trains in, and the durable trigger state: which pairs a queued chain took, which a
successful chain trained on, and a pending "Start Training"."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, case, func, select, update

from backend.store.database import Database
from backend.store.tables import PairRow, Project, default_lineage

_POOLED = (
    select(func.count(), func.max(PairRow.id))
    .join(Project, Project.id == PairRow.project_id)
    .where(Project.lineage == select(Project.lineage).where(Project.id == bindparam("of_project")).scalar_subquery())
)


_UNTRAINED = _POOLED.where(PairRow.id > Project.queued_pair_id)  # (new pairs, the newest of them)


class LineageQueries(Database):
    """Reads and writes of projects, lineages and their retrain trigger."""

    # projects
    def save_project(self, project_id: int, **fields: Any) -> Project:
        """Create or update a project; None values leave a field as it is."""
        with self._write_session() as s:
            project = s.get(Project, project_id) or Project(
                id=project_id,
                trained_pair_id=0,
                queued_pair_id=0,
                train_requested=False,
                lineage=default_lineage(project_id),
            )
            for name, value in fields.items():
                if value is not None:
                    setattr(project, name, value)
            s.add(project)
            return project

    def project(self, project_id: int) -> Project | None:
        with self.session() as s:
            return s.get(Project, project_id)

    def project_ids(self) -> list[int]:
        with self.session() as s:
            return list(s.scalars(select(Project.id).order_by(Project.id)))

    def lineage_of(self, project_id: int) -> str:
        """The lineage a project trains and is served from (its own unless it pools with others)."""
        with self.session() as s:
            return s.scalar(select(Project.lineage).where(Project.id == project_id)) or default_lineage(project_id)

    def lineage_projects(self, lineage: str) -> list[int]:
        with self.session() as s:
            return list(s.scalars(select(Project.id).where(Project.lineage == lineage).order_by(Project.id)))

    def selection_of(self, project_id: int, default: str) -> str:
        """The project's SELECTION (its connection's extra_params), else the backend's default: the one rule (the
        webhook's pair insert applies it in SQL, labels._INSERT_PAIRS, to stay one statement)."""
        with self.session() as s:
            return s.scalar(select(Project.selection).where(Project.id == project_id)) or default

    def untrained_pairs(self, project_id: int) -> tuple[int, int]:
        """(pairs of the project's lineage not yet handed to a queued chain, newest pair id): the webhook's
        retrain trigger, derived from the store so that it survives restarts."""
        with self.engine.connect() as conn:  # two Core reads: no ORM session needed (the webhook calls it)
            new, newest = conn.execute(_UNTRAINED, {"of_project": project_id}).one()
            return new, newest or conn.execute(_POOLED, {"of_project": project_id}).one()[1] or 0

    def mark_queued(self, lineage: str, upto_pair_id: int) -> None:
        """The lineage's pairs up to this id are in a queued chain: webhooks stop re-triggering for them."""
        with self._write_session() as s:
            s.execute(update(Project).where(Project.lineage == lineage).values(queued_pair_id=upto_pair_id))

    def mark_trained(self, lineage: str, upto_pair_id: int) -> None:
        """A chain trained on the lineage's pairs up to this id and succeeded: its trigger is cleared."""
        with self._write_session() as s:
            s.execute(
                update(Project)
                .where(Project.lineage == lineage)
                .values(trained_pair_id=upto_pair_id, train_requested=False)
            )

    def request_training(self, project_id: int) -> None:
        """ "Start Training" was pressed: due until a chain of the lineage succeeds, whatever happens meanwhile."""
        with self._write_session() as s:
            lineage = s.scalar(select(Project.lineage).where(Project.id == project_id))
            s.execute(update(Project).where(Project.lineage == lineage).values(train_requested=True))

    def due_lineages(self, retrain_every: int) -> dict[str, str]:
        """Lineages that must train (durable state): lineage -> why. Due when RETRAIN_EVERY pairs arrived since
        the last successful chain, or "Start Training" is pending, and it has pairs at all."""
        with self.session() as s:
            rows = s.execute(
                select(
                    Project.lineage,
                    func.count(PairRow.id),
                    func.sum(case((PairRow.id > Project.trained_pair_id, 1), else_=0)),
                    func.max(case((Project.train_requested, 1), else_=0)),
                )
                .join(PairRow, PairRow.project_id == Project.id)
                .group_by(Project.lineage)
            ).all()
        due = {}
        for lineage, pairs, new, requested in rows:
            if requested and pairs:
                due[lineage] = "Start Training pending"
            elif (new or 0) >= retrain_every:
                due[lineage] = f"{new} pairs since the last successful training"
        return due
