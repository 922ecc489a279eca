"""The RQ worker class: RQ's forking Worker plus a stall guard and a CPU thread budget per worker.

A work-horse that inherits a broken OpenMP pool blocks at 0 % CPU until the job timeout (hours); the guard
reads the horse's CPU time while RQ monitors it, and a horse whose process tree used no CPU for
JOB_STALL_SECONDS is killed and its job failed with that reason.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from rq import Worker
from rq.job import Job
from rq.queue import Queue

log = logging.getLogger(__name__)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
IDLE_CPU_SECONDS = 0.05  # less CPU than this over the stall window counts as no progress


def thread_budget(configured: int, local_workers: int) -> int:
    """Torch threads for one worker: WORKER_THREADS, or the CPUs this process may use shared by the local workers."""
    if configured > 0:
        return configured
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, local_workers))


def apply_thread_budget(threads: int) -> None:
    """Set before torch is imported: OpenMP and MKL size their pools from these once, at start."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no Rust thread pool across RQ's forks


def process_tree_cpu(pid: int) -> float | None:
    """CPU seconds used so far by a process and its live descendants (Linux /proc); None where unreadable."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc/self/stat").exists() else ():
        if entry.name.isdigit():
            parsed = _stat(entry / "stat")
            if parsed is not None:
                stats[int(entry.name)] = parsed
    if pid not in stats:
        return None
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [p for p, (ppid, _) in stats.items() if ppid == parent and p not in tree]
        tree.update(children)
        frontier.extend(children)
    return sum(stats[p][1] for p in tree)


def _stat(path: Path) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children) from /proc/<pid>/stat."""
    try:
        fields = path.read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), sum(int(f) for f in fields[11:15]) / CLOCK_TICKS


class RLHFWorker(Worker):
    """A forking RQ worker that fails a job whose work-horse stopped using the CPU for `stall_seconds`."""

    def __init__(self, *args, stall_seconds: float = 600.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stall_seconds = stall_seconds
        if stall_seconds > 0:  # check often enough to notice a stall within about a quarter of the window
            self.job_monitoring_interval = max(1, min(self.job_monitoring_interval, int(stall_seconds // 4)))
        self._busy_at = (0.0, 0.0)  # (monotonic time, CPU seconds) when the horse was last seen working

    def execute_job(self, job: Job, queue: Queue) -> None:
        self._busy_at = (time.monotonic(), 0.0)
        super().execute_job(job, queue)

    def maintain_heartbeats(self, job: Job) -> None:
        """RQ calls this every monitoring interval while the horse runs: the place to look at its CPU use."""
        super().maintain_heartbeats(job)
        if self.stall_seconds <= 0 or not self._horse_pid:
            return
        used = process_tree_cpu(self._horse_pid)
        since, seen = self._busy_at
        if used is None or used - seen >= IDLE_CPU_SECONDS:
            self._busy_at = (time.monotonic(), used if used is not None else seen)
            return
        idle = time.monotonic() - since
        if idle >= self.stall_seconds:
            self._fail_stalled(job, idle)

    def _fail_stalled(self, job: Job, idle: float) -> None:
        reason = (
            f"stalled: the work-horse used no CPU for {idle:.0f} s (JOB_STALL_SECONDS={self.stall_seconds:g}); "
            f"killed it. If the job waits on something slow, raise JOB_STALL_SECONDS (0 turns the check off)"
        )
        log.error("job %s %s", job.id, reason)
        job.meta["error"] = reason
        job.save_meta()
        self.kill_horse(signal.SIGKILL)
