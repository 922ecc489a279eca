"""The one place where settings become the objects both processes use: store, queue, model registries."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TypeVar

from redis import Redis

from backend.core.settings import Settings
from backend.queue import JobQueue
from backend.store import Store
from backend.store.registry import Kind, Registries, open_registries

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: Settings
    store: Store
    queue: JobQueue
    registries: Registries

    def announce(self, lineage: str | None, kind: Kind, version: int) -> None:
        """Tell serving backends that a lineage serves a new version (they also poll); None: the shared base."""
        message = json.dumps({"lineage": lineage, "kind": kind, "version": version})
        self.queue.redis.publish(self.queue.models_channel, message)
        log.info("announced %s %s v%d", lineage or "base", kind, version)


S = TypeVar("S", bound=Services)


def build(
    settings: Settings, redis: Redis | None = None, cls: type[S] = Services, checkpoint_in_commits: bool = True
) -> S:
    """Services for this process from the settings (the backend passes a Redis with short timeouts and
    checkpoints its store off the request path; the workers ask for their subclass)."""
    store = Store(settings.sqlalchemy_url, checkpoint_in_commits)
    return cls(settings, store, JobQueue(settings, redis), open_registries(settings, store))
