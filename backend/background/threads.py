"""The backend's background threads: each runs once per process. Threads do not survive gunicorn's fork of a
preloaded app, so `start` is also a before-request hook: the first request a forked worker serves starts
its own. Every one of them can be stopped (an app torn down, e.g. between tests)."""

from __future__ import annotations

import os
import threading
import weakref

_RUNNING: weakref.WeakSet[ProcessThread] = weakref.WeakSet()


def stop_all() -> None:
    """Stop every background thread of this process."""
    for thread in list(_RUNNING):
        thread.stop()


class ProcessThread:
    """A daemon thread running `run` in each process that calls `start`; `run` ends when `stopping` is set."""

    wait_on_stop = True  # False where run may block a while and its late work is harmless

    def __init__(self, name: str) -> None:
        self.name = name
        self.stopping = threading.Event()
        self._pid: int | None = None
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """Whether this process should run the thread at all (a setting may turn it off)."""
        return True

    def start(self) -> None:
        """Start the thread unless this process already did."""
        if self._pid != os.getpid() and self.enabled:
            self._pid, self.stopping = os.getpid(), threading.Event()  # the parent's may be held mid-fork
            self.forked()
            self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
            self._thread.start()
            _RUNNING.add(self)

    def forked(self) -> None:
        """Make the process-local state a new thread needs (locks are not safe to inherit across a fork)."""

    def run(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to end and wait for it a while."""
        self.stopping.set()
        self.woken()
        if self.wait_on_stop and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def woken(self) -> None:
        """Wake a thread that waits on something other than `stopping`."""
