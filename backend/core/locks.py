"""One process at a time across processes on this host: an exclusive lock on a file beside what it guards.
Waiters are woken by the kernel the moment the holder releases (no polling)."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: str | Path) -> Iterator[None]:
    try:
        lock = open(path, "a")
    except FileNotFoundError:  # its folder is made once, not checked on every webhook's write
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        lock = open(path, "a")
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def try_file_lock(path: str | Path) -> Iterator[bool]:
    """The lock if nobody holds it (True), else nothing (False): for housekeeping that must never wait."""
    with open(path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
