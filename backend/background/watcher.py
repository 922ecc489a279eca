"""Which model versions each lineage serves: refreshed on a Redis notification, with polling as fallback."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError

from backend.background.threads import ProcessThread
from backend.store.registry import Registries

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    policy: int | None
    reward: int | None
    model_version: str


class ModelWatcher(ProcessThread):
    """Caches each lineage's current versions; a subscriber thread invalidates on worker notifications."""

    wait_on_stop = False  # it may be reading the channel for up to a second; all it does is forget a cache

    def __init__(self, registries: Registries, redis: Redis, channel: str, poll_seconds: float) -> None:
        super().__init__("model-watcher")
        self.registries, self.redis, self.channel, self.poll_seconds = registries, redis, channel, poll_seconds
        self._served: dict[str, tuple[float, Served]] = {}
        self._lock = threading.Lock()

    def served(self, lineage: str) -> Served:
        """The versions a lineage serves; re-read at most every poll period unless a notification came."""
        with self._lock:
            cached = self._served.get(lineage)
            if cached is None or time.monotonic() - cached[0] > self.poll_seconds:
                registry = self.registries.lineage(lineage)
                cached = (
                    time.monotonic(),
                    Served(registry.current("policy"), registry.current("reward"), registry.model_version()),
                )
                self._served[lineage] = cached
            return cached[1]

    def invalidate(self, lineage: str | None = None) -> None:
        """Forget one lineage's cached versions, or every lineage's."""
        with self._lock:
            if lineage is None:
                self._served.clear()
            else:
                self._served.pop(lineage, None)

    def forked(self) -> None:
        self._lock = threading.Lock()

    def run(self) -> None:
        """Listen for promotions; while Redis is away, the cache falls back to re-reading every poll period."""
        lost = False
        while not self.stopping.is_set():
            try:
                with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    pubsub.subscribe(self.channel)
                    if lost:
                        log.info("model watcher: Redis is back")
                        lost = False
                    while not self.stopping.is_set():
                        message = pubsub.get_message(timeout=1.0)
                        if message is not None:
                            log.info("model notification: %s", message.get("data"))
                            self.invalidate(_lineage_of(message.get("data")))
            except RedisError as exc:
                if not lost:  # once per outage, not every poll
                    log.warning("model watcher lost Redis (%s); polling every %ss", exc, self.poll_seconds)
                lost = True
                self.stopping.wait(self.poll_seconds)


def _lineage_of(data: object) -> str | None:
    """The lineage a notification names; None (every lineage) for one that names none, e.g. a new base."""
    try:
        message = json.loads(data)
    except (TypeError, ValueError):
        return None
    lineage = message.get("lineage") if isinstance(message, dict) else None
    return lineage if isinstance(lineage, str) else None
