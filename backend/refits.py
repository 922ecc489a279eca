"""Refits of the reward head are asked for off the request path: a webhook only notes its project, and a
thread of the same process asks Redis for the coalesced refit job, at most once per project per interval.
A Redis round trip per webhook cost 12 % of a gunicorn worker's time in bench/webhooks.py."""
from __future__ import annotations

import logging
import os
import threading
import time
import weakref

from redis.exceptions import RedisError

from backend.core.queue import JobQueue

log = logging.getLogger(__name__)
_RUNNING: weakref.WeakSet[RefitRequests] = weakref.WeakSet()


def stop_all() -> None:
    """Stop every asking thread of this process (an app torn down, e.g. between tests)."""
    for requests in list(_RUNNING):
        requests.stop()


class RefitRequests:
    """Projects whose labels changed since the last ask, and the thread that asks (one per process)."""

    def __init__(self, queue: JobQueue, interval: float = 0.5) -> None:
        self.queue, self.interval = queue, interval
        self._pending: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._pid: int | None = None
        self._stopped = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """The asking thread, once per process (gunicorn forks after the app is built)."""
        if self._pid != os.getpid():
            self._pid, self._stopped = os.getpid(), False
            self._lock, self._wake = threading.Lock(), threading.Event()
            self._thread = threading.Thread(target=self._loop, name="refit-requests", daemon=True)
            self._thread.start()
            _RUNNING.add(self)

    def stop(self) -> None:
        """Drop what is pending and end the thread."""
        self._stopped = True
        self._wake.set()
        self._thread.join(5)

    def note(self, project_id: int) -> None:
        """New labels in this project: a refit will be asked for within `interval` seconds."""
        with self._lock:
            self._pending.add(project_id)
        self._wake.set()

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            if not self._stopped:
                time.sleep(self.interval)  # a burst of labels becomes one ask
            self._wake.clear()
            if self._stopped:
                return
            with self._lock:
                projects, self._pending = self._pending, set()
            for project_id in sorted(projects):
                try:
                    self.queue.request_refit(project_id)
                except RedisError as exc:  # the next label asks again; the head is only an ordering
                    log.warning("could not ask for a refit of project %s: %s", project_id, exc)
