"""Refits of the reward head are asked for off the request path: a webhook only notes its project, and a
thread of the same process asks Redis for the coalesced refit job, at most once per project per interval.
A Redis round trip per webhook cost 12 % of a gunicorn worker's time in bench/webhooks.py."""
from __future__ import annotations

import logging
import os
import threading
import time

from redis.exceptions import RedisError

from backend.core.queue import JobQueue

log = logging.getLogger(__name__)


class RefitRequests:
    """Projects whose labels changed since the last ask, and the thread that asks (one per process)."""

    def __init__(self, queue: JobQueue, interval: float = 0.5) -> None:
        self.queue, self.interval = queue, interval
        self._pending: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid: int | None = None

    def start(self) -> None:
        """The asking thread, once per process (gunicorn forks after the app is built)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._lock, self._wake = threading.Lock(), threading.Event()
            threading.Thread(target=self._loop, name="refit-requests", daemon=True).start()

    def note(self, project_id: int) -> None:
        """New labels in this project: a refit will be asked for within `interval` seconds."""
        with self._lock:
            self._pending.add(project_id)
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.interval)  # a burst of labels becomes one ask
            self._wake.clear()
            with self._lock:
                projects, self._pending = self._pending, set()
            for project_id in sorted(projects):
                try:
                    self.queue.request_refit(project_id)
                except RedisError as exc:  # the next label asks again; the head is only an ordering
                    log.warning("could not ask for a refit of project %s: %s", project_id, exc)
