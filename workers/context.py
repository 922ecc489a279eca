"""What every job needs, built once per process from the settings: store, registry, queue, notifications."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from backend.queue import JobQueue
from backend.registry import Kind, Registry
from backend.settings import Settings, get_settings
from backend.store import Store

log = logging.getLogger(__name__)


@dataclass
class JobContext:
    settings: Settings
    store: Store
    registry: Registry
    queue: JobQueue

    def policy_dir(self, version: int | None = None) -> Path:
        """A policy version's directory (current by default), creating v0 on first use."""
        from workers.bootstrap import ensure_base_policy

        ensure_base_policy(self.registry, self.settings.policy_model)
        return self.registry.path("policy", self.registry.current("policy") if version is None else version)

    def notify(self, kind: Kind, version: int) -> None:
        """Tell serving backends that a new model is current (they also poll)."""
        message = json.dumps({"kind": kind, "version": version})
        self.queue.redis.publish(self.queue.models_channel, message)
        log.info("announced %s v%d", kind, version)

    def progress(self, **fields: Any) -> None:
        """Record progress in the current RQ job's meta (shown in /status)."""
        from rq import get_current_job

        job = get_current_job()
        if job is not None:
            job.meta.setdefault("progress", {}).update(fields)
            job.save_meta()


@lru_cache(maxsize=1)
def context() -> JobContext:
    settings = get_settings()
    return JobContext(settings, Store(settings.sqlalchemy_url), Registry(settings.model_dir, settings.keep_versions),
                      JobQueue(settings))
