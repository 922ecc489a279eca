"""RQ on Redis: `JobQueue` enqueues jobs by dotted name and coalesces duplicates (chains.py), and reads what they
are doing (status.py); the queues and job names are in queues.py. May import backend.core only."""

from __future__ import annotations

from backend.queue.chains import Chains
from backend.queue.queues import (
    GENERATE_JOB,
    POLICY_JOB,
    REFIT_JOB,
    REWARD_JOB,
    SFT_JOB,
)
from backend.queue.status import JobReports, describe

__all__ = ["GENERATE_JOB", "POLICY_JOB", "REFIT_JOB", "REWARD_JOB", "SFT_JOB", "JobQueue", "describe"]


class JobQueue(Chains, JobReports):
    """The two queues: `generate` (fast, annotator-facing) and `train` (long GPU jobs)."""
