"""Brings queued work in line with the durable state in the store, so that no trigger is ever lost: a
lineage that is due trains (after a crash between commit and enqueue, a Redis outage, or a failed chain,
with backoff), tasks without candidates get them, broken chains are settled, annotations whose webhook
never arrived are resynced from Label Studio, and uploads to an object-store registry that will never finish
are removed."""

from __future__ import annotations

import logging
import time
from datetime import datetime, timezone
from typing import Any

from redis.exceptions import LockError, RedisError
from sqlalchemy.exc import SQLAlchemyError

from backend import labelstudio
from backend.background.threads import ProcessThread
from backend.core.defaults import RESYNC_OVERLAP, RETRY_BACKOFF_CAP
from backend.labels.annotations import Annotations
from backend.labels.inputs import InvalidRequest, utc
from backend.store.registry import Registries

log = logging.getLogger(__name__)


class Reconciler(ProcessThread):
    """One pass every RECONCILE_SECONDS, by one backend process at a time (a Redis lock)."""

    def __init__(self, annotations: Annotations, registries: Registries) -> None:
        super().__init__("reconciler")
        self.annotations, self.trigger, self.registries = annotations, annotations.trigger, registries
        self.settings, self.store, self.queue = annotations.settings, annotations.store, annotations.trigger.queue
        self._last_resync = 0.0

    @property
    def enabled(self) -> bool:
        return self.settings.reconcile_seconds > 0

    def run(self) -> None:
        while not self.stopping.wait(self.settings.reconcile_seconds):
            try:
                lock = self.queue.redis.lock(
                    self.queue.models_channel + ":reconcile",
                    timeout=max(60, self.settings.reconcile_seconds * 4),
                    blocking=False,
                )
                if lock.acquire():
                    try:
                        self.run_once()
                    finally:
                        lock.release()
            except (RedisError, LockError, SQLAlchemyError) as exc:
                log.warning("reconcile pass skipped: %s", exc)

    def run_once(self, now: float | None = None) -> dict[str, Any]:
        """One pass; returns what it did (also for tests and the CLI)."""
        now = time.time() if now is None else now
        done: dict[str, Any] = {
            "trained": self._train_due(now),
            "generated": self._generate_missing(now),
            "settled": self.queue.settle_broken(),
            "discarded": self._discard_abandoned(),
        }
        if self.settings.resync_seconds > 0 and now - self._last_resync >= self.settings.resync_seconds:
            done["resynced"] = self.resync()
            self._last_resync = now
        return done

    def _discard_abandoned(self) -> list[str]:
        try:
            return self.registries.discard_abandoned()
        except Exception as exc:  # the object store is away: next pass
            log.warning("could not sweep the model registry's abandoned uploads: %s", exc)
            return []

    def _backing_off(self, key: str, now: float) -> tuple[bool, int]:
        """(whether the last attempt for `key` failed too recently to retry, attempts so far): the wait
        starts at RECONCILE_BACKOFF_SECONDS and doubles per attempt, up to an hour."""
        attempts, last = self.queue.attempts(key)
        wait = (
            min(self.settings.reconcile_backoff_seconds * 2 ** max(attempts - 1, 0), RETRY_BACKOFF_CAP)
            if attempts
            else 0
        )
        return now - last < wait, attempts

    def _train_due(self, now: float) -> list[str]:
        queued = []
        for lineage, why in self.store.due_lineages(self.settings.retrain_every).items():
            waiting, attempts = self._backing_off(lineage, now)
            if self.queue.chain_alive(lineage) or waiting:
                continue
            first = self.store.lineage_projects(lineage)[0]
            self.trigger.queue_training(
                first, lineage, self.store.untrained_pairs(first)[1], f"reconciler: {why} (attempt {attempts + 1})"
            )
            self.queue.note_attempt(lineage, now)
            log.info("lineage %s was due (%s): queued a chain, attempt %d", lineage, why, attempts + 1)
            queued.append(lineage)
        return queued

    def _generate_missing(self, now: float) -> list[int]:
        """Tasks still without candidates get a generation job, with the same backoff as training: a task the
        job cannot serve (say, without a prompt) must not load the policy every pass."""
        queued, missing = [], self.store.tasks_without_candidates()
        for project_id in set(self.store.project_ids()) - set(missing):
            self.queue.reset_attempts(f"gen-{project_id}")  # none missing: the backoff starts afresh
        for project_id, task_ids in missing.items():
            project = self.store.project(project_id)
            if project is None or not project.label_config or self._backing_off(f"gen-{project_id}", now)[0]:
                continue
            if self.queue.enqueue_generation(project_id, task_ids, reason="reconciler: tasks without candidates"):
                self.queue.note_attempt(f"gen-{project_id}", now)
                queued.append(project_id)
        return queued

    def resync(self) -> dict[int, int]:
        """Annotations created or updated in Label Studio since each project's last sync, stored idempotently
        (Label Studio sends a webhook once and never again, so one the backend missed is fetched here)."""
        synced = {}
        for project_id in self.store.project_ids():
            project = self.store.project(project_id)
            found = project and labelstudio.access(
                project.ls_url,
                project.ls_token,
                self.settings.label_studio_url,
                self.settings.label_studio_api_key,
                self.settings.allowed_label_studio_hosts,
            )
            if not found or not project.label_config:
                continue
            started = datetime.now(timezone.utc).replace(tzinfo=None)
            since = (project.synced_at - RESYNC_OVERLAP) if project.synced_at else None
            try:
                exported = labelstudio.export_annotations(labelstudio.client(*found), project_id)
            except Exception as exc:  # Label Studio down or refusing: try again next pass
                log.warning("project %s: resync from Label Studio failed: %s", project_id, exc)
                continue
            synced[project_id] = self._store_newer(project_id, project.label_config, exported, since)
            self.store.save_project(project_id, synced_at=started)
        return synced

    def _store_newer(self, project_id: int, config: str, exported: list[dict[str, Any]], since: datetime | None) -> int:
        count = 0
        ids = [a.get("id") for t in exported for a in t.get("annotations") or [] if isinstance(a.get("id"), int)]
        stored = self.store.annotation_results(ids)
        for task in exported:
            for annotation in task.get("annotations") or []:
                changed = utc(annotation.get("updated_at") or annotation.get("created_at"))
                if since is not None and changed is not None and changed < since:
                    continue
                if stored.get(annotation.get("id"), object()) == (annotation.get("result") or []):
                    continue  # already stored as it is
                try:
                    self.annotations.save(project_id, config, annotation, task)
                    count += 1
                except InvalidRequest as exc:
                    log.warning("resync of project %s: %s", project_id, exc)
        return count
