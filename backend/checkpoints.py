"""The backend's SQLite log is copied back into the database by this thread instead of by whichever webhook's
commit crosses SQLite's 1000-page mark: that webhook waited for the copy and for the others queued behind it
(webhook p99 16.8 ms with in-commit checkpoints, 13.1 ms without, bench/webhooks.py at 4 connections)."""
from __future__ import annotations

import logging
import os
import threading
import time

from sqlalchemy.exc import SQLAlchemyError

from backend.core.store import Store

log = logging.getLogger(__name__)


class Checkpoints:
    """A passive checkpoint every `interval` seconds, from one thread per process (gunicorn forks after the
    app is built); between two, the log grows by at most what one interval's webhooks wrote."""

    def __init__(self, store: Store, interval: float = 1.0) -> None:
        self.store, self.interval = store, interval
        self._pid: int | None = None

    def start(self) -> None:
        if self._pid != os.getpid():
            self._pid = os.getpid()
            threading.Thread(target=self._loop, name="checkpoints", daemon=True).start()

    def _loop(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.store.checkpoint()
            except SQLAlchemyError as exc:  # busy or gone for a moment: the next interval tries again
                log.warning("store checkpoint skipped: %s", exc)
