"""Which model versions are being served: refreshed on a Redis notification, with polling as fallback."""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError

from backend.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    policy: int | None
    reward: int | None
    model_version: str


class ModelWatcher:
    """Caches the registry's current versions; a subscriber thread invalidates on worker notifications."""

    def __init__(self, registry: Registry, redis: Redis, channel: str, poll_seconds: float) -> None:
        self.registry, self.redis, self.channel, self.poll_seconds = registry, redis, channel, poll_seconds
        self._served: Served | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def served(self) -> Served:
        """The versions in use; re-read at most every poll period unless a notification came."""
        with self._lock:
            if self._served is None or time.monotonic() - self._read_at > self.poll_seconds:
                self._served = Served(self.registry.current("policy"), self.registry.current("reward"),
                                      self.registry.model_version())
                self._read_at = time.monotonic()
            return self._served

    def invalidate(self) -> None:
        with self._lock:
            self._served = None

    def start(self) -> None:
        """Listen for promotions in a daemon thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._listen, name="model-watcher", daemon=True)
            self._thread.start()

    def _listen(self) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.channel)
                for message in pubsub.listen():
                    log.info("model notification: %s", message.get("data"))
                    self.invalidate()
            except RedisError as exc:
                log.warning("model watcher lost Redis (%s); polling every %ss", exc, self.poll_seconds)
                time.sleep(self.poll_seconds)
