"""The ML backend in label-studio-ml's familiar shape: `predict(tasks, context)` and `fit(event, data)`.

It never generates or trains: predictions come from what workers prepared, and events are persisted and
turned into queued jobs.
"""
from __future__ import annotations

import json
import logging
import math
import time
from datetime import timedelta
from typing import Any

from redis.exceptions import LockError, RedisError
from sqlalchemy.exc import SQLAlchemyError

from backend.core.algorithms import POLICY_ALGORITHMS
from backend.http.labelstudio import utc as labelstudio_time
from backend.labels.preferences import (
    FINISHED_KEY, GENERATION_KEY, InvalidAnnotation, InvalidConfig, Layout, pairs_from_result, parse_layout,
)
from backend.queue import JobQueue
from backend.store.registry import RegistryError, valid_lineage
from backend.core.settings import SELECTIONS, Settings
from backend.labels.selection import confidence, informative_score, random_score
from backend.store import Generation, Store, Task
from backend.http.payloads import MAX_INT
from backend.background.watcher import ModelWatcher

log = logging.getLogger(__name__)
REDIS_REST_SECONDS = 5.0  # after a Redis failure, how long requests skip it (the reconciler catches up)


class InvalidRequest(ValueError):
    """A request Label Studio (or a caller) sent that cannot be served; answered with a 4xx."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def project_id_of(value: Any) -> int:
    """Label Studio names projects as `<id>.<created_ts>` in /setup and /predict, as an int or object elsewhere."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool):
        value = None
    try:
        project_id = int(str(value).split(".")[0])
    except (TypeError, ValueError):
        project_id = 0
    if not 1 <= project_id <= MAX_INT:
        raise InvalidRequest(f"project must be an id or '<id>.<timestamp>', got {str(value)[:80]!r}")
    return project_id


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidRequest(f"'{key}' must be {getattr(kind, '__name__', kind)}")
    return value


class RLHFBackend:
    """Serves prepared candidates and reward-model picks; records rankings; queues generation and training."""

    def __init__(self, settings: Settings, store: Store, queue: JobQueue, watcher: ModelWatcher) -> None:
        self.settings, self.store, self.queue, self.watcher = settings, store, queue, watcher
        self._configured: set[int] = set()  # projects known to have a stored label config
        self._redis_down_until = 0.0  # see _redis_resting

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
        schema = _require(body, "schema", str)
        self._layout(schema)
        params = _extra_params(body.get("extra_params"))
        hostname, configured = body.get("hostname"), self.settings.label_studio_url
        if hostname and configured and hostname.rstrip("/") != configured.rstrip("/"):
            log.info("project %s: /setup names Label Studio at %s; LABEL_STUDIO_URL %s is used instead",
                     project_id, hostname, self.settings.label_studio_url)
        self.store.save_project(project_id, label_config=schema, ls_url=body.get("hostname") or None,
                                ls_token=body.get("access_token") or None, algorithm=params.get("algorithm"),
                                lineage=params.get("lineage"), selection=params.get("selection"))
        return {"model_version": self.model_version(project_id)}

    # /predict
    def predict(self, tasks: list[dict[str, Any]], context: dict[str, Any] | None = None, *,
                project_id: int, label_config: str | None = None) -> list[dict[str, Any] | list]:
        """One result per task, in order, from the candidates and reward scores workers prepared: a prediction
        once the lineage's reward model scored the task's candidates, else an empty list, which Label Studio
        takes as "no prediction yet" (no empty tab) and asks again for later."""
        layout = self._layout(self._config(project_id, label_config))
        parsed = [self._task(t, layout) for t in tasks]
        self.store.save_tasks(project_id, [(tid, data) for tid, data in parsed])
        known = self.store.tasks(tid for tid, _ in parsed)
        served = self.watcher.served(self.lineage(project_id))
        selection = self.store.selection_of(project_id, self.settings.selection)
        results, stale = [], []
        for task_id, data in parsed:
            candidates = layout.candidates_from_data(data)
            row = known.get(task_id)
            fresh = row is not None and row.scores is not None and row.candidates == candidates \
                and row.reward_version == served.reward
            if candidates is None or (served.reward is not None and not fresh):
                stale.append(task_id)
            scores = row.scores if fresh and served.reward is not None else None
            score = _task_score(selection, task_id, row if row is not None and row.candidates == candidates else None,
                                scores) if candidates is not None else None
            results.append([] if score is None else _prediction(layout, data, scores, score,
                                                                self.settings.preselect_choice)
                           | {"model_version": served.model_version})
        if stale:
            self._queue_generation(project_id, stale, "predict")
        return results

    # /webhook
    def fit(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """Persist what a webhook carries, then queue the work it implies; returns what was done."""
        handler = {
            "ANNOTATION_CREATED": self._annotation, "ANNOTATION_UPDATED": self._annotation,
            "ANNOTATIONS_CREATED": self._annotations, "ANNOTATIONS_DELETED": self._deleted,
            "TASKS_CREATED": self._tasks_created, "TASKS_DELETED": self._tasks_deleted,
            "START_TRAINING": self._start_training, "PROJECT_UPDATED": self._project_updated,
            "PROJECT_DELETED": self._project_deleted,
        }.get(event)
        if handler is None:
            return {"status": "ignored", "action": event}
        return {"action": event, **handler(data)}

    def _annotation(self, data: dict[str, Any]) -> dict[str, Any]:
        annotation = _require(data, "annotation", dict)
        project_id = project_id_of(data.get("project") or annotation.get("project"))
        config = self._config(project_id, data.get("project"))
        pairs, untrained = self.save_annotation(project_id, config, annotation, data.get("task"))
        return {"project": project_id, "pairs": pairs, **self._due(untrained)}

    def _annotations(self, data: dict[str, Any]) -> dict[str, Any]:
        annotations = data.get("annotations", data.get("annotation"))
        if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
            raise InvalidRequest("'annotations' must be a list of annotation objects")
        listed = data.get("tasks", data.get("task"))  # Label Studio 1.23 sends "task": [...] here
        tasks = {t.get("id"): t for t in listed if isinstance(t, dict)} if isinstance(listed, list) else {}
        project_id = project_id_of(data.get("project") or (annotations[0].get("project") if annotations else None))
        config = self._config(project_id, data.get("project"))
        saved = [self.save_annotation(project_id, config, a, tasks.get(_task_ref(a))) for a in annotations]
        pairs = sum(count for count, _ in saved)
        untrained = saved[-1][1] if saved else self.store.untrained_pairs(project_id)
        return {"project": project_id, "annotations": len(annotations), "pairs": pairs, **self._due(untrained)}

    def save_annotation(self, project_id: int, config: str, annotation: dict[str, Any],
                         task: Any) -> tuple[int, tuple[int, int]]:
        """Validate and store one annotation; returns (its pairs, the project's untrained pairs)."""
        annotation_id = _require(annotation, "id", int)
        task_id = _task_ref(annotation) if not isinstance(task, dict) else task.get("id")
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
            log.info("annotation %s of task %s is %s: stored, no pairs (counted as skipped in /status)",
                     annotation_id, task_id, "cancelled" if annotation.get("was_cancelled") else "empty")
        layout = self._layout(config)
        shown = None if skipped else self._shown(layout, task_id, task_data, annotation, result)
        if shown is None and not skipped:
            log.warning("annotation %s of task %s refers to candidates that were replaced and are not kept; "
                        "stored as stale, no pairs", annotation_id, task_id)
        try:
            pairs = pairs_from_result(layout, shown[0], result) if shown else []
        except InvalidAnnotation as exc:
            raise InvalidRequest(f"annotation {annotation_id}: {exc}", status=422) from None
        untrained = self.store.save_annotation(project_id, annotation_id, task_id, result, pairs, skipped,
                                               generation=shown[1] if shown else None,
                                               stale=shown is None and not skipped,
                                               annotator=_annotator(annotation.get("completed_by")),
                                               selection=self.settings.selection)
        return len(pairs), untrained

    def _shown(self, layout: Layout, task_id: int, data: dict[str, Any], annotation: dict[str, Any],
               result: Any) -> tuple[dict[str, Any], str | None] | None:
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
        log.info("annotation %s of task %s: learned from generation %s the annotator saw, not the current %s",
                 annotation.get("id"), task_id, wanted, current)
        kept = {k: v for k, v in data.items() if k != FINISHED_KEY}  # the current candidates' flags are not its
        return {**kept, **layout.candidates_to_data(old.candidates, old.id, old.finished)}, old.id

    def _deleted(self, data: dict[str, Any]) -> dict[str, Any]:
        annotations = _require(data, "annotations", list)
        ids = [a.get("id") if isinstance(a, dict) else a for a in annotations]
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise InvalidRequest("'annotations' must be a list of {id: int}")
        return {"deleted": self.store.delete_annotations(ids)}

    def _tasks_created(self, data: dict[str, Any]) -> dict[str, Any]:
        project_id = project_id_of(data.get("project"))
        tasks = _require(data, "tasks", list)
        layout = self._layout(self._config(project_id, data.get("project")))
        parsed = [self._task(t, layout) for t in tasks]
        self.store.save_tasks(project_id, parsed)
        missing = [tid for tid, d in parsed if layout.candidates_from_data(d) is None]
        job = self._queue_generation(project_id, missing, "TASKS_CREATED") if missing else None
        return {"tasks": len(parsed), "to_generate": len(missing), "job": job}

    def _tasks_deleted(self, data: dict[str, Any]) -> dict[str, Any]:
        """Label Studio sends `tasks: [{id}]`; the tasks' annotations went with them."""
        ids = [t.get("id") if isinstance(t, dict) else t for t in _require(data, "tasks", list)]
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise InvalidRequest("'tasks' must be a list of {id: int}")
        return self.store.delete_tasks(ids)

    def _project_deleted(self, data: dict[str, Any]) -> dict[str, Any]:
        """An organization webhook (Label Studio sends PROJECT_DELETED to no project webhook)."""
        project_id = project_id_of(data.get("project"))
        self._configured.discard(project_id)
        return {"deleted_project": project_id, **self.store.delete_project(project_id)}

    def _start_training(self, data: dict[str, Any]) -> dict[str, Any]:
        project_id = project_id_of(data.get("project"))
        self.store.request_training(project_id)  # durable: due until a chain succeeds, even if Redis is down now
        return self.train(project_id, force=True, reason="START_TRAINING")

    def _project_updated(self, data: dict[str, Any]) -> dict[str, Any]:
        project = _require(data, "project", dict)
        config = project.get("label_config")
        if isinstance(config, str):
            self._layout(config)
            self.store.save_project(project_id_of(project), label_config=config)
        return {"status": "ok"}

    # shared steps
    def _due(self, untrained: tuple[int, int]) -> dict[str, Any]:
        """What a stored annotation leaves due: with RETRAIN_EVERY new pairs, training is "requested" and the
        HTTP layer has `train` run off the request path."""
        new, newest = untrained
        return {"new_pairs": new, "training": "requested"} if newest and new >= self.settings.retrain_every \
            else {"new_pairs": new}

    def train(self, project_id: int, force: bool = False, reason: str = "") -> dict[str, Any]:
        """Queue reward -> policy once RETRAIN_EVERY pairs are new, as the store says now (or on request);
        coalesced per lineage. START_TRAINING calls it inline; a crossed threshold, off the request path."""
        new, newest = self.store.untrained_pairs(project_id)
        if not newest or (not force and new < self.settings.retrain_every):
            return {"new_pairs": new}
        lineage = self.lineage(project_id)
        if self._redis_resting():  # stored and due: the reconciler queues it once Redis answers
            return {"new_pairs": new, "lineage": lineage, "training": "deferred"}
        try:
            jobs, coalesced = self.queue_training(project_id, lineage, newest, reason or f"{new} new pairs")
        except (RedisError, LockError) as exc:
            self._redis_failed(exc)
            return {"new_pairs": new, "lineage": lineage, "training": "deferred"}
        return {"new_pairs": new, "lineage": lineage, "training": [j.id for j in jobs], "coalesced": coalesced}

    def queue_training(self, project_id: int, lineage: str, newest: int, reason: str) -> tuple[list[Any], bool]:
        """Queue (or join) the lineage's reward -> policy chain with the project's recipe, and record that its
        pairs up to `newest` are handed to it; the webhook path and the reconciler both come through here."""
        project = self.store.project(project_id)
        algorithm = (project.algorithm if project else None) or self.settings.algorithm
        chain = self.queue.enqueue_training(lineage, algorithm, self.store.lineage_projects(lineage), reason,
                                            project_id)
        self.store.mark_queued(lineage, newest)
        return chain

    def _queue_generation(self, project_id: int, task_ids: list[int], reason: str) -> str | None:
        """Queue candidates; with Redis down the tasks stay without candidates and the reconciler queues them."""
        if self._redis_resting():
            return "deferred"
        try:
            job = self.queue.enqueue_generation(project_id, task_ids, reason=reason)
        except RedisError as exc:
            self._redis_failed(exc)
            return "deferred"
        return job.id if job else None

    def _redis_resting(self) -> bool:
        """After a Redis failure, requests stop trying for a while: a hung Redis would otherwise cost every
        webhook its full timeout (the work is deferred to the reconciler either way)."""
        return time.monotonic() < self._redis_down_until

    def _redis_failed(self, exc: Exception) -> None:
        log.warning("Redis unavailable (%s): queueing deferred to the reconciler for %gs", exc, REDIS_REST_SECONDS)
        self._redis_down_until = time.monotonic() + REDIS_REST_SECONDS

    def _config(self, project_id: int, project: Any) -> str:
        """The label config a request carries (webhook project object, /predict body), else the one stored at
        /setup; a carried config is stored when none is, so that workers can read it."""
        config = project.get("label_config") if isinstance(project, dict) else project
        if not isinstance(config, str) or not config:
            return self._stored_config(project_id)
        if project_id not in self._configured:  # one lookup per project and process, not per webhook
            stored = self.store.project(project_id)
            if stored is None or not stored.label_config:
                self._layout(config)
                self.store.save_project(project_id, label_config=config)
            self._configured.add(project_id)
        return config

    def _stored_config(self, project_id: int) -> str:
        project = self.store.project(project_id)
        if project is None or not project.label_config:
            raise InvalidRequest(f"project {project_id} is not set up: connect it (Label Studio calls /setup)", 404)
        return project.label_config

    @staticmethod
    def _layout(label_config: Any) -> Layout:
        if not isinstance(label_config, str):
            raise InvalidRequest("label config must be a string of XML")
        try:
            return parse_layout(label_config)
        except InvalidConfig as exc:
            raise InvalidRequest(str(exc), 422) from None

    @staticmethod
    def _task(task: Any, layout: Layout) -> tuple[int, dict[str, Any]]:
        if not isinstance(task, dict):
            raise InvalidRequest("each task must be an object")
        task_id, data = _require(task, "id", int), _require(task, "data", dict)
        prompt = data.get(layout.prompt_key)
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidRequest(f"task {task_id} has no '{layout.prompt_key}' text", 422)
        return task_id, data


def _generation_at(generations: list[Generation], annotation: dict[str, Any]) -> str | None:
    """The generation Label Studio showed when the annotator opened the task: its first draft, or the
    annotation's time minus the time spent on it (lead_time), both by Label Studio's clock."""
    started = [labelstudio_time(annotation.get("draft_created_at"))]
    created, lead = labelstudio_time(annotation.get("created_at")), annotation.get("lead_time")
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
    return value if isinstance(value, int) and not isinstance(value, bool) and -2**63 <= value < 2**63 else None


def _task_ref(annotation: dict[str, Any]) -> Any:
    task = annotation.get("task")
    return task.get("id") if isinstance(task, dict) else task


def _extra_params(extra_params: Any) -> dict[str, str]:
    """`extra_params` arrives as JSON text (or null); it may pick the project's policy recipe (`algorithm`),
    a lineage to pool the project with (`lineage`; default: its own) and its SELECTION (`selection`)."""
    if not extra_params:
        return {}
    try:
        params = json.loads(extra_params) if isinstance(extra_params, str) else extra_params
    except json.JSONDecodeError:
        raise InvalidRequest("extra_params must be JSON text") from None
    params = params if isinstance(params, dict) else {}
    algorithm, lineage, selection = params.get("algorithm"), params.get("lineage"), params.get("selection")
    if algorithm is not None and algorithm not in POLICY_ALGORITHMS:
        raise InvalidRequest(f"extra_params.algorithm must be one of {POLICY_ALGORITHMS}")
    if selection is not None and selection not in SELECTIONS:
        raise InvalidRequest(f"extra_params.selection must be one of {SELECTIONS}")
    if lineage is not None:
        try:
            valid_lineage(lineage)
        except RegistryError as exc:
            raise InvalidRequest(f"extra_params.{exc}") from None
    return {k: v for k, v in (("algorithm", algorithm), ("lineage", lineage), ("selection", selection))
            if v is not None}


def _task_score(selection: str, task_id: int, row: Task | None, scores: list[float] | None) -> float | None:
    """The prediction score Label Studio orders the queue by (lowest first): SELECTION=random, a uniform draw
    per task; informative, what labelling it teaches the reward head (once a refit has weighed it), else the
    reward model's confidence; None: nothing to say yet."""
    if selection == "random":
        return random_score(task_id)
    if row is not None and row.worth is not None:
        return informative_score(row.worth)
    return confidence(scores) if scores is not None else None


def _prediction(layout: Layout, data: dict[str, Any], scores: list[float] | None, score: float,
                preselect: bool) -> dict[str, Any]:
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
