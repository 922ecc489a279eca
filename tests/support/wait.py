"""The one poll loop the tests (and benches) wait with."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class TimedOut(AssertionError):
    """wait_for's condition did not hold in time (an AssertionError, so pytest reports it as a failed check)."""


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.2,
    message: str | Callable[[], str] = "the condition",
) -> T:
    """Call predicate every `interval` seconds until it returns something truthy, and return that.

    After `timeout` seconds raise TimedOut, saying what was awaited: `message`, or what it returns when it is
    a callable (called only then, e.g. for a log's tail). The predicate may raise to end the wait early (a
    process it waits on died).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            what = message() if callable(message) else message
            raise TimedOut(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
