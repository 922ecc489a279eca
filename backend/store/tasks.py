"""Tasks and their candidates: what Label Studio sent, what workers generated and scored, how each answer
ended, what labelling a task is worth, and the frozen features the selection head refits on."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from backend.store.database import Database, chunks
from backend.store.tables import Annotation, Feature, Generation, Task, utcnow


class TaskQueries(Database):
    """Reads and writes of tasks, candidates, generations, scores, worth and features."""

    # tasks
    def save_tasks(self, project_id: int, tasks: Iterable[tuple[int, dict[str, Any]]]) -> None:
        """Record tasks' data in a few bulk statements (Label Studio sends thousands at once); candidates
        already generated are kept."""
        rows = {task_id: data for task_id, data in tasks}
        now = utcnow()
        with self._write_session() as s:
            known = {i for chunk in chunks(list(rows)) for i in s.scalars(select(Task.id).where(Task.id.in_(chunk)))}
            if known:
                s.execute(
                    update(Task),
                    [{"id": i, "project_id": project_id, "data": rows[i], "updated_at": now} for i in known],
                )
            new = [
                {"id": i, "project_id": project_id, "data": d, "updated_at": now}
                for i, d in rows.items()
                if i not in known
            ]
            if new:
                s.execute(insert(Task), new)

    def tasks(self, task_ids: Iterable[int]) -> dict[int, Task]:
        with self.session() as s:
            return {
                t.id: t for chunk in chunks(list(task_ids)) for t in s.scalars(select(Task).where(Task.id.in_(chunk)))
            }

    def project_tasks(self, project_id: int) -> list[Task]:
        with self.session() as s:
            return list(s.scalars(select(Task).where(Task.project_id == project_id).order_by(Task.id)))

    def labeled_task_ids(self, project_id: int) -> set[int]:
        with self.session() as s:
            q = select(Annotation.task_id).where(Annotation.project_id == project_id, Annotation.skipped.is_(False))
            return set(s.scalars(q))

    def set_candidates(
        self,
        task_id: int,
        candidates: list[str],
        policy_version: int | None,
        data: dict[str, Any],
        generation: str | None = None,
        shown_at: datetime | None = None,
        policies: list[int] | None = None,
        pool: list[str] | None = None,
        finished: list[bool] | None = None,
    ) -> None:
        """The task's new candidates, whether each ended or was cut (None: unknown, candidates that came with
        the task), and the generation they form (kept for annotations made on it later); `pool`: every answer
        sampled, when the task shows a chosen few. Their scores and worth are to come. A task deleted
        meanwhile (TASKS_DELETED) stays deleted."""
        with self._write_session() as s:
            task = s.get(Task, task_id)
            if task is None:
                return
            task.candidates, task.finished, task.policy_version, task.data = candidates, finished, policy_version, data
            task.scores = task.reward_version = None
            task.generation, task.pool, task.worth = generation, pool, None
            if generation is not None:
                s.merge(
                    Generation(
                        id=generation,
                        task_id=task_id,
                        project_id=task.project_id,
                        candidates=candidates,
                        finished=finished,
                        policy_version=policy_version,
                        shown_at=shown_at,
                        policies=policies,
                    )
                )

    def generations(self, task_id: int) -> list[Generation]:
        """Every generation of a task's candidates we wrote, oldest first by when Label Studio showed them."""
        with self.session() as s:
            return list(
                s.scalars(
                    select(Generation)
                    .where(Generation.task_id == task_id)
                    .order_by(Generation.shown_at, Generation.created_at)
                )
            )

    def set_worth(self, worth: dict[int, float]) -> None:
        """What labelling each task now teaches the reward head (after a refit), in one bulk statement."""
        if worth:
            with self._write_session() as s:
                known = {
                    i for chunk in chunks(list(worth)) for i in s.scalars(select(Task.id).where(Task.id.in_(chunk)))
                }
                if known:
                    s.execute(update(Task), [{"id": i, "worth": worth[i]} for i in known])

    def features(self, keys: Iterable[str]) -> dict[str, bytes]:
        """Cached feature vectors by key (workers.ml.features.feature_key); missing keys are left out."""
        with self.session() as s:
            return {
                k: v
                for chunk in chunks(list(keys))
                for k, v in s.execute(select(Feature.key, Feature.vector).where(Feature.key.in_(chunk)))
            }

    def save_features(self, vectors: dict[str, bytes]) -> None:
        """Cache feature vectors; a key stored meanwhile (another job) is kept as it is."""
        with self._write_session() as s:
            known = {
                k
                for chunk in chunks(list(vectors))
                for k in s.scalars(select(Feature.key).where(Feature.key.in_(chunk)))
            }
            new = [{"key": k, "vector": v} for k, v in vectors.items() if k not in known]
            if new:
                s.execute(insert(Feature), new)

    def set_scores(self, task_id: int, scores: list[float], reward_version: int) -> None:
        with self._write_session() as s:
            task = s.get(Task, task_id)
            if task is not None:
                task.scores, task.reward_version = scores, reward_version

    def tasks_without_candidates(self) -> dict[int, list[int]]:
        """Per project, the tasks still waiting for candidates (a generation that was never queued or failed)."""
        with self.session() as s:
            rows = s.execute(select(Task.project_id, Task.id).where(Task.candidates.is_(None))).all()
        found: dict[int, list[int]] = {}
        for project_id, task_id in rows:
            found.setdefault(project_id, []).append(task_id)
        return found
