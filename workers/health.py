"""Container healthcheck: a worker's process can run while it serves nothing; this asks Redis whether it does."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import NoReturn

from redis import Redis
from rq import Worker
from rq.defaults import DEFAULT_WORKER_TTL

from backend.core.defaults import HEALTHCHECK_REDIS_TIMEOUT
from backend.core.logs import configure_logging
from backend.core.settings import get_settings
from backend.queue import JobQueue

log = logging.getLogger(__name__)
# An idle RQ worker blocks on the queues for worker_ttl - 15 s between heartbeats, and RQ drops a worker whose
# last heartbeat is older than worker_ttl + 60 s: the same limit here.
MAX_HEARTBEAT_AGE = DEFAULT_WORKER_TTL + 60
BIRTH_SLACK = 2.0  # seconds: /proc/stat's boot time is whole seconds


class _Parser(argparse.ArgumentParser):
    """Docker reads exit 1 as unhealthy and reserves 2 (argparse's usage error)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(1, f"unhealthy: {message}\n")


def _started(pid: int) -> float | None:
    """When pid started here, in epoch seconds; None when it does not run here (or has exited, unreaped)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime ")
        )
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def _runs_here(worker: Worker) -> bool:
    """The registered pid runs here and is the process that registered: a restarted container reuses the
    hostname and pid 1, so a killed worker's registration (kept until it expires) names a live pid too."""
    if not worker.pid:
        return False
    started = _started(worker.pid)
    if started is None:
        return False
    return worker.birth_date is None or started <= worker.birth_date.timestamp() + BIRTH_SLACK


def _age(worker: Worker) -> float:
    if worker.last_heartbeat is None:
        return float("inf")
    return (datetime.now(timezone.utc) - worker.last_heartbeat).total_seconds()


def problem(queue: JobQueue, names: str, hostname: str, max_age: float = MAX_HEARTBEAT_AGE) -> str | None:
    """Why no worker of this host serves the named queues ("generate,train"), or None when one does: it is
    registered in Redis for each of them, its pid runs here, and its heartbeat is fresh."""
    try:
        wanted = queue.named(names)
    except ValueError as exc:
        return str(exc)
    workers = Worker.all(connection=queue.redis)
    here = [w for w in workers if w.hostname == hostname]
    if not here:
        return f"no RQ worker of this host ({hostname}) is registered ({len(workers)} of other hosts are)"
    running = [w for w in here if _runs_here(w)]
    if not running:
        w = here[0]
        return f"worker {w.name} registered pid {w.pid}, which is no longer that worker here"
    fresh = [w for w in running if _age(w) <= max_age]
    if not fresh:
        w = min(running, key=_age)
        return f"worker {w.name} (pid {w.pid}): last heartbeat {_age(w):.0f} s ago, over {max_age:.0f} s"
    registered = {q.name: set(Worker.all_keys(queue=q)) for q in wanted}
    for w in fresh:
        serves = set(w.queue_names())
        if all(q.name in serves and w.key in registered[q.name] for q in wanted):
            log.info(
                "worker %s (pid %s) serves %s; heartbeat %.0f s ago", w.name, w.pid, ", ".join(w.queue_names()), _age(w)
            )
            return None
    w = fresh[0]
    return (
        f"worker {w.name} (pid {w.pid}) serves {', '.join(w.queue_names()) or 'no queue'}, not "
        f"{', '.join(q.name for q in wanted)}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m workers.health", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--queues",
        default="generate,train",
        help="the queues the worker was started with, as `python -m workers --queues` takes them",
    )
    parser.add_argument(
        "--max-age",
        type=float,
        default=MAX_HEARTBEAT_AGE,
        help=f"oldest heartbeat that counts, in seconds (default {MAX_HEARTBEAT_AGE})",
    )
    args = parser.parse_args(argv)
    configure_logging()
    try:
        settings = get_settings()
        redis = Redis.from_url(
            settings.redis_url,
            socket_timeout=HEALTHCHECK_REDIS_TIMEOUT,
            socket_connect_timeout=HEALTHCHECK_REDIS_TIMEOUT,
        )
        reason = problem(JobQueue(settings, redis), args.queues, socket.gethostname(), args.max_age)
    except Exception as exc:  # any failure to find out is a reason to report, not a traceback
        reason = f"{type(exc).__name__}: {exc}"
    if reason is None:
        return 0
    print(f"unhealthy: {reason}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
