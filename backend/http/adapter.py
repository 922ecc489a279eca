"""The ML backend in label-studio-ml's familiar shape: `setup`, `predict(tasks, context)` and `fit(event, data)`.

A thin adapter: it checks what Label Studio sent (backend.labels.inputs), hands annotations to
backend.labels.annotations and training to backend.labels.trigger, and renders predictions. It never
generates or trains: predictions come from what workers prepared, and events become queued jobs.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from backend.background.watcher import ModelWatcher
from backend.core.settings import Settings
from backend.http.predictions import prediction, task_score
from backend.labels.annotations import Annotations
from backend.labels.inputs import (
    InvalidRequest,
    extra_params,
    ids_of,
    layout_of,
    project_id_of,
    require,
    task_of,
    task_ref,
)
from backend.labels.trigger import Trigger
from backend.queue import JobQueue
from backend.store import Store

log = logging.getLogger(__name__)


class RLHFBackend:
    """Serves prepared candidates and reward-model picks; records rankings; queues generation and training."""

    def __init__(self, settings: Settings, store: Store, queue: JobQueue, watcher: ModelWatcher) -> None:
        self.settings, self.store, self.queue, self.watcher = settings, store, queue, watcher
        self.trigger = Trigger(settings, store, queue)
        self.annotations = Annotations(settings, store, self.trigger)
        self._configured: set[int] = set()  # projects known to have a stored label config

    def unreachable(self) -> list[str]:
        """The backing services that do not answer right now (readiness)."""
        failing = []
        try:
            self.queue.redis.ping()
        except RedisError:
            failing.append("redis")
        try:
            self.store.ping()
        except SQLAlchemyError:
            failing.append("store")
        return failing

    def lineage(self, project_id: int) -> str:
        return self.store.lineage_of(project_id)

    def model_version(self, project_id: int) -> str:
        """What the project's lineage serves, e.g. `policy-v2.reward-v1`; other lineages never change it."""
        return self.watcher.served(self.lineage(project_id)).model_version

    # /setup
    def setup(self, body: dict[str, Any]) -> dict[str, Any]:
        project_id = project_id_of(body.get("project"))
        schema = require(body, "schema", str)
        layout_of(schema)
        params = extra_params(body.get("extra_params"))
        hostname, configured = body.get("hostname"), self.settings.label_studio_url
        if hostname and configured and hostname.rstrip("/") != configured.rstrip("/"):
            log.info(
                "project %s: /setup names Label Studio at %s; LABEL_STUDIO_URL %s is used instead",
                project_id,
                hostname,
                self.settings.label_studio_url,
            )
        self.store.save_project(
            project_id,
            label_config=schema,
            ls_url=body.get("hostname") or None,
            ls_token=body.get("access_token") or None,
            algorithm=params.get("algorithm"),
            lineage=params.get("lineage"),
            selection=params.get("selection"),
        )
        return {"model_version": self.model_version(project_id)}

    # /predict
    def predict(
        self,
        tasks: list[dict[str, Any]],
        context: dict[str, Any] | None = None,
        *,
        project_id: int,
        label_config: str | None = None,
    ) -> list[dict[str, Any] | list]:
        """One result per task, in order, from the candidates and reward scores workers prepared: a prediction
        once the lineage's reward model scored the task's candidates, else an empty list, which Label Studio
        takes as "no prediction yet" (no empty tab) and asks again for later."""
        layout = layout_of(self.config(project_id, label_config))
        parsed = [task_of(t, layout) for t in tasks]
        self.store.save_tasks(project_id, parsed)
        known = self.store.tasks(tid for tid, _ in parsed)
        served = self.watcher.served(self.lineage(project_id))
        selection = self.store.selection_of(project_id, self.settings.selection)
        results, stale = [], []
        for task_id, data in parsed:
            candidates = layout.candidates_from_data(data)
            row = known.get(task_id)
            fresh = (
                row is not None
                and row.scores is not None
                and row.candidates == candidates
                and row.reward_version == served.reward
            )
            if candidates is None or (served.reward is not None and not fresh):
                stale.append(task_id)
            scores = row.scores if fresh and served.reward is not None else None
            score = (
                task_score(
                    selection, task_id, row if row is not None and row.candidates == candidates else None, scores
                )
                if candidates is not None
                else None
            )
            results.append(
                []
                if score is None
                else prediction(layout, data, scores, score, self.settings.preselect_choice)
                | {"model_version": served.model_version}
            )
        if stale:
            self.trigger.queue_generation(project_id, stale, "predict")
        return results

    # /webhook
    def fit(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """Persist what a webhook carries, then queue the work it implies; returns what was done."""
        handler = {
            "ANNOTATION_CREATED": self._annotation,
            "ANNOTATION_UPDATED": self._annotation,
            "ANNOTATIONS_CREATED": self._annotations,
            "ANNOTATIONS_DELETED": self._deleted,
            "TASKS_CREATED": self._tasks_created,
            "TASKS_DELETED": self._tasks_deleted,
            "START_TRAINING": self._start_training,
            "PROJECT_UPDATED": self._project_updated,
            "PROJECT_DELETED": self._project_deleted,
        }.get(event)
        if handler is None:
            return {"status": "ignored", "action": event}
        return {"action": event, **handler(data)}

    def _annotation(self, data: dict[str, Any]) -> dict[str, Any]:
        annotation = require(data, "annotation", dict)
        project_id = project_id_of(data.get("project") or annotation.get("project"))
        saved = self.annotations.save_all(
            project_id, self.config(project_id, data.get("project")), [(annotation, data.get("task"))]
        )
        return saved.summary()

    def _annotations(self, data: dict[str, Any]) -> dict[str, Any]:
        annotations = data.get("annotations", data.get("annotation"))
        if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
            raise InvalidRequest("'annotations' must be a list of annotation objects")
        listed = data.get("tasks", data.get("task"))  # Label Studio 1.23 sends "task": [...] here
        tasks = {t.get("id"): t for t in listed if isinstance(t, dict)} if isinstance(listed, list) else {}
        project_id = project_id_of(data.get("project") or (annotations[0].get("project") if annotations else None))
        saved = self.annotations.save_all(
            project_id, self.config(project_id, data.get("project")), [(a, tasks.get(task_ref(a))) for a in annotations]
        )
        return {"annotations": len(annotations), **saved.summary()}

    def _deleted(self, data: dict[str, Any]) -> dict[str, Any]:
        return {"deleted": self.store.delete_annotations(ids_of(require(data, "annotations", list), "annotations"))}

    def _tasks_created(self, data: dict[str, Any]) -> dict[str, Any]:
        project_id = project_id_of(data.get("project"))
        tasks = require(data, "tasks", list)
        layout = layout_of(self.config(project_id, data.get("project")))
        parsed = [task_of(t, layout) for t in tasks]
        self.store.save_tasks(project_id, parsed)
        missing = [tid for tid, d in parsed if layout.candidates_from_data(d) is None]
        job = self.trigger.queue_generation(project_id, missing, "TASKS_CREATED") if missing else None
        return {"tasks": len(parsed), "to_generate": len(missing), "job": job}

    def _tasks_deleted(self, data: dict[str, Any]) -> dict[str, Any]:
        """Label Studio sends `tasks: [{id}]`; the tasks' annotations went with them."""
        return self.store.delete_tasks(ids_of(require(data, "tasks", list), "tasks"))

    def _project_deleted(self, data: dict[str, Any]) -> dict[str, Any]:
        """An organization webhook (Label Studio sends PROJECT_DELETED to no project webhook)."""
        project_id = project_id_of(data.get("project"))
        self._configured.discard(project_id)
        return {"deleted_project": project_id, **self.store.delete_project(project_id)}

    def _start_training(self, data: dict[str, Any]) -> dict[str, Any]:
        project_id = project_id_of(data.get("project"))
        self.store.request_training(project_id)  # durable: due until a chain succeeds, even if Redis is down now
        return self.trigger.train(project_id, force=True, reason="START_TRAINING")

    def _project_updated(self, data: dict[str, Any]) -> dict[str, Any]:
        project = require(data, "project", dict)
        config = project.get("label_config")
        if isinstance(config, str):
            layout_of(config)
            self.store.save_project(project_id_of(project), label_config=config)
        return {"status": "ok"}

    def config(self, project_id: int, project: Any) -> str:
        """The label config a request carries (webhook project object, /predict body), else the one stored at
        /setup; a carried config is stored when none is, so that workers can read it."""
        config = project.get("label_config") if isinstance(project, dict) else project
        if not isinstance(config, str) or not config:
            return self._stored_config(project_id)
        if project_id not in self._configured:  # one lookup per project and process, not per webhook
            stored = self.store.project(project_id)
            if stored is None or not stored.label_config:
                layout_of(config)
                self.store.save_project(project_id, label_config=config)
            self._configured.add(project_id)
        return config

    def _stored_config(self, project_id: int) -> str:
        project = self.store.project(project_id)
        if project is None or not project.label_config:
            raise InvalidRequest(f"project {project_id} is not set up: connect it (Label Studio calls /setup)", 404)
        return project.label_config
