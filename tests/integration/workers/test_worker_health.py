"""The workers' container healthcheck (`python -m workers.health`) against a real worker process and Redis."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from rq import Worker
from rq.utils import utcformat

from backend.core.settings import Settings
from backend.queue import JobQueue
from tests.support.settings import ROOT, settings_env
from tests.support.wait import wait_for
from workers.health import problem

HEALTHCHECK_TIMEOUT = 10.0  # docker-compose.yml's timeout for the workers' healthcheck


def health(settings: Settings, queues: str) -> tuple[int, str]:
    """Run the check as the container runs it; (exit status, stderr)."""
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "workers.health", "--queues", queues],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    took = time.monotonic() - started
    assert took < HEALTHCHECK_TIMEOUT, f"the check took {took:.1f} s"
    return proc.returncode, proc.stderr


def test_healthy_only_while_a_live_worker_of_this_host_serves_the_queue(settings, redis, tmp_path: Path) -> None:
    code, err = health(settings, "generate")
    assert code == 1 and "unhealthy: no RQ worker of this host" in err, err

    log = (tmp_path / "worker.log").open("w")
    worker = subprocess.Popen(
        [sys.executable, "-m", "workers", "--queues", "generate", "--no-preload"],
        env=settings_env(settings),
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        queue = JobQueue(settings)

        def serving() -> bool:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            return problem(queue, "generate", socket.gethostname()) is None

        wait_for(
            serving,
            300,
            0.5,  # it converts policy v0 first
            lambda: "the worker to serve the queue:\n" + (tmp_path / "worker.log").read_text()[-3000:],
        )

        code, err = health(settings, "generate")
        assert code == 0, err
        for other in ("train", "generate,train"):
            code, err = health(settings, other)
            assert code == 1 and "serves rlhf-test-generate, not " in err, err
        code, err = health(settings, "nonsense")
        assert code == 1 and "unknown queues" in err, err

        worker.send_signal(signal.SIGKILL)  # no warm shutdown: RQ keeps its registration until it expires
        worker.wait(timeout=30)
        assert [w.pid for w in Worker.all(queue=queue.generate)] == [worker.pid]
        code, err = health(settings, "generate")
        assert code == 1 and f"registered pid {worker.pid}, which is no longer that worker" in err, err
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        log.close()


def test_a_stale_registration_does_not_count(settings, redis) -> None:
    """A restarted container reuses the hostname and pid 1; a registration whose heartbeat stopped is dead."""
    queue = JobQueue(settings)
    worker = Worker([queue.generate], connection=queue.redis)  # registered as this process
    worker.register_birth()
    here = socket.gethostname()
    assert problem(queue, "generate", here) is None

    long_ago = utcformat(datetime.now(timezone.utc) - timedelta(days=1))
    redis.hset(worker.key, "last_heartbeat", long_ago)
    reason = problem(queue, "generate", here)
    assert "last heartbeat" in reason and "over 480 s" in reason, reason

    worker.heartbeat()
    redis.hset(worker.key, "birth", long_ago)  # born before this process started: another process had the pid
    assert f"registered pid {os.getpid()}, which is no longer that worker" in problem(queue, "generate", here)

    redis.hset(worker.key, "birth", utcformat(datetime.now(timezone.utc)))
    assert problem(queue, "generate", here) is None
    assert "no RQ worker of this host (elsewhere)" in problem(queue, "generate", "elsewhere")
