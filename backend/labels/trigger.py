"""When a lineage retrains, decided in one place (`Trigger.due`), and the queueing that follows: a reward ->
policy chain per lineage (coalesced), candidates for tasks without them. With Redis failing, the work stays
due in the store and the reconciler queues it; requests stop trying Redis for REDIS_REST_SECONDS."""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.exceptions import LockError, RedisError

from backend.core.defaults import REDIS_REST_SECONDS
from backend.core.settings import Settings
from backend.queue import JobQueue
from backend.store import Store

log = logging.getLogger(__name__)


class Trigger:
    """RETRAIN_EVERY new pairs (or a Start Training request) queue the project's lineage's chain."""

    def __init__(self, settings: Settings, store: Store, queue: JobQueue) -> None:
        self.settings, self.store, self.queue = settings, store, queue
        self._redis_down_until = 0.0  # see _redis_resting

    def due(self, new: int, newest: int, force: bool = False) -> bool:
        """The rule: a lineage retrains once RETRAIN_EVERY of its pairs are new (any new pair, when forced)."""
        return bool(newest) and (force or new >= self.settings.retrain_every)

    def train(self, project_id: int, force: bool = False, reason: str = "") -> dict[str, Any]:
        """Queue reward -> policy if the rule holds for the store as it is now, coalesced per lineage: a burst of
        webhooks that each found it due queues one chain, since a queued chain takes the new pairs with it.
        START_TRAINING calls it inline; a crossed threshold, off the request path (the webhook's `Saved`)."""
        new, newest = self.store.untrained_pairs(project_id)
        if not self.due(new, newest, force):
            return {"new_pairs": new}
        lineage = self.store.lineage_of(project_id)
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
        chain = self.queue.enqueue_training(
            lineage, algorithm, self.store.lineage_projects(lineage), reason, project_id
        )
        self.store.mark_queued(lineage, newest)
        return chain

    def queue_generation(self, project_id: int, task_ids: list[int], reason: str) -> str | None:
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
