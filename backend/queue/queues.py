"""The two RQ queues and what both halves of JobQueue share: the job names (dotted paths: the backend never
imports workers), the states that count as waiting or broken, Redis keys and job lookups."""

from __future__ import annotations

from typing import Any

from redis import Redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from backend.core.settings import Settings

GENERATE_JOB = "workers.jobs.generate.refresh_candidates"
REWARD_JOB = "workers.jobs.train.train_reward"
POLICY_JOB = "workers.jobs.train.train_policy"
SFT_JOB = "workers.jobs.train.train_sft"
REFIT_JOB = "workers.jobs.select.refit"
PENDING = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED}
BROKEN = {JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


class Queues:
    """The two queues: `generate` (fast, annotator-facing) and `train` (long GPU jobs)."""

    def __init__(self, settings: Settings, redis: Redis | None = None) -> None:
        self.settings = settings
        self.redis = redis or Redis.from_url(settings.redis_url)
        self.generate = Queue(f"{settings.queue_prefix}-generate", connection=self.redis)
        self.train = Queue(f"{settings.queue_prefix}-train", connection=self.redis)

    def named(self, names: str) -> list[Queue]:
        """The queues a comma-separated list names (`python -m workers --queues generate,train`), in order."""
        known = {"generate": self.generate, "train": self.train}
        wanted = [n.strip() for n in names.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(known))
        if unknown or not wanted:
            raise ValueError(f"unknown queues {unknown or wanted}; choose from {sorted(known)}")
        return [known[n] for n in wanted]

    @property
    def models_channel(self) -> str:
        """Redis pub/sub channel on which workers announce promoted models."""
        return f"{self.settings.queue_prefix}:models"

    def _key(self, *parts: Any) -> str:
        return ":".join([self.settings.queue_prefix, *map(str, parts)])

    def _pending(self, key: str) -> Job | None:
        job = self._fetch(self.redis.get(key))
        return job if job is not None and job.get_status(refresh=True) in PENDING else None

    def _fetch(self, job_id: bytes | str | None) -> Job | None:
        if not job_id:
            return None
        try:
            return Job.fetch(job_id.decode() if isinstance(job_id, bytes) else job_id, connection=self.redis)
        except NoSuchJobError:
            return None

    def _chain(self, last: Job) -> list[Job]:
        """The jobs of the chain `last` belongs to (those still in Redis)."""
        return [j for j in (self._fetch(i) for i in last.meta.get("chain", [])) if j is not None]
