"""RQ queues: enqueue jobs by dotted name (the backend never imports workers) and coalesce duplicates."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from redis import Redis
from rq import Queue
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Dependency, Job, JobStatus
from rq.registry import (
    CanceledJobRegistry, DeferredJobRegistry, FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry,
)

from backend.core.settings import Settings

log = logging.getLogger(__name__)

GENERATE_JOB = "workers.jobs.generate.refresh_candidates"
REWARD_JOB = "workers.jobs.train.train_reward"
POLICY_JOB = "workers.jobs.train.train_policy"
SFT_JOB = "workers.jobs.train.train_sft"
REFIT_JOB = "workers.jobs.select.refit"
PENDING = {JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED}
DAY = 86400
GENERATE_TTL = {"result_ttl": 7 * DAY, "failure_ttl": 30 * DAY}  # how long /status shows finished and failed jobs
TRAIN_TTL = {"result_ttl": 30 * DAY, "failure_ttl": 30 * DAY}
TRAIN_LOCK = {"timeout": 10, "blocking_timeout": 0.5, "sleep": 0.005}  # seconds; redis-py polls every 0.1 s by default
BROKEN = {JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED}


class JobQueue:
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

    def enqueue_generation(self, project_id: int, task_ids: list[int] | None = None, reason: str = "") -> Job | None:
        """Queue candidate generation; a pending whole-project job already covers any task of it."""
        whole = self._pending(self._key("gen", project_id, "all"))
        if whole is not None:
            return None
        key = self._key("gen", project_id, "all" if task_ids is None else "tasks")
        pending = self._pending(key)
        if pending is not None and task_ids is not None and set(task_ids) <= set(pending.meta.get("task_ids") or []):
            return None  # a waiting job already covers these tasks
        meta = {"kind": "generate", "project": project_id, "reason": reason, "task_ids": task_ids}
        job = self.generate.enqueue(GENERATE_JOB, project_id, task_ids, job_timeout=self.settings.generate_timeout,
                                    meta=meta, **GENERATE_TTL)
        self.redis.set(key, job.id, ex=GENERATE_TTL["result_ttl"])
        log.info("queued generation %s for project %s (%s)", job.id, project_id, reason)
        return job

    def request_refit(self, project_id: int) -> Job | None:
        """Queue a refit of the project's reward head after new labels, unless one is waiting already (it will
        read them: the job clears this mark before it reads the store)."""
        if not self.redis.set(self._key("refit", project_id), 1, nx=True, ex=DAY):
            return None
        return self.generate.enqueue(REFIT_JOB, project_id, job_timeout=self.settings.generate_timeout,
                                     meta={"kind": "refit", "project": project_id, "reason": "new labels"},
                                     result_ttl=3600, failure_ttl=30 * DAY)

    def refit_started(self, project_id: int) -> None:
        """A refit job is reading the store now: labels from here on queue the next one."""
        self.redis.delete(self._key("refit", project_id))

    def enqueue_training(self, lineage: str, algorithm: str, projects: list[int], reason: str = "",
                         project_id: int | None = None) -> tuple[list[Job], bool]:
        """Queue reward -> policy for a lineage; returns (jobs, coalesced).

        At most one chain waits per lineage; a new one starts after the running one (RQ dependency), so two
        lineages' chains never interleave inside one lineage.
        """
        with self.redis.lock(self._key("lock", "train", lineage), **TRAIN_LOCK):
            key = self._key("train", lineage, "last")
            last = self._fetch(self.redis.get(key))
            after = None
            if last is not None and last.get_status(refresh=True) in PENDING | {JobStatus.STARTED}:
                chain = self._chain(last)
                if any(j.get_status() in BROKEN for j in chain):
                    last.cancel()  # an earlier step failed: it would wait forever
                elif chain and chain[0].get_status() in PENDING:
                    return chain, True  # nothing of it started yet: it will see the new pairs
                else:
                    after = last  # running: the new chain waits for it
            jobs = self._enqueue_chain(lineage, algorithm, reason, after, project_id)
            self.redis.set(key, jobs[-1].id)
        for job in jobs:
            self._follow_up(job, projects, f"after {job.meta['kind']} of lineage {lineage}")
        return jobs, False

    def _enqueue_chain(self, lineage: str, algorithm: str, reason: str, after: Job | None,
                       project_id: int | None) -> list[Job]:
        """The policy job reads the reward version its own reward job promoted (its dependency's result)."""
        common = {"job_timeout": self.settings.train_timeout, **TRAIN_TTL}
        depends = Dependency(jobs=[after], allow_failure=True) if after is not None else None
        meta = {"lineage": lineage, "project": project_id, "reason": reason}
        jobs = [self.train.enqueue(REWARD_JOB, lineage, depends_on=depends, meta={**meta, "kind": "reward"},
                                   **common)]
        jobs.append(self.train.enqueue(POLICY_JOB, lineage, algorithm, depends_on=jobs[-1],
                                       meta={**meta, "kind": algorithm}, **common))
        for job in jobs:
            job.meta["chain"] = [j.id for j in jobs]
            job.save_meta()
        log.info("queued training %s for lineage %s (%s)", [j.id for j in jobs], lineage, reason)
        return jobs

    def chain_alive(self, lineage: str) -> bool:
        """Whether the lineage's last chain is still waiting or running (then nothing needs queueing)."""
        last = self._fetch(self.redis.get(self._key("train", lineage, "last")))
        if last is None:
            return False
        statuses = [j.get_status(refresh=True) for j in self._chain(last)]
        return not any(st in BROKEN for st in statuses) and any(st in PENDING | {JobStatus.STARTED} for st in statuses)

    def _chain(self, last: Job) -> list[Job]:
        """The jobs of the chain `last` belongs to (those still in Redis)."""
        return [j for j in (self._fetch(i) for i in last.meta.get("chain", [])) if j is not None]

    def attempts(self, key: str) -> tuple[int, float]:
        """(retries queued by the reconciler for `key` since it last succeeded, when the last was). Keys: a
        lineage (training chains) or `gen-<project>` (candidates)."""
        raw = self.redis.hgetall(self._key("retry", key))
        return int(raw.get(b"attempts", 0)), float(raw.get(b"at", 0.0))

    def note_attempt(self, key: str, when: float) -> None:
        self.redis.hincrby(self._key("retry", key), "attempts", 1)
        self.redis.hset(self._key("retry", key), "at", when)

    def reset_attempts(self, key: str) -> None:
        """It succeeded (a chain completed; no task waits for candidates): the next failure backs off afresh."""
        self.redis.delete(self._key("retry", key))

    def settle_broken(self) -> list[str]:
        """Deferred jobs whose dependency failed would wait forever: cancel them, saying why; and remove the
        staging directories failed training jobs left (a killed work-horse cannot clean up after itself)."""
        settled = []
        for queue in (self.generate, self.train):
            for job in Job.fetch_many(DeferredJobRegistry(queue=queue).get_job_ids(), connection=self.redis):
                if job is None or job.allow_dependency_failures:
                    continue
                broken = [d for d in job.fetch_dependencies() if d.get_status() in BROKEN]
                if broken:
                    job.meta["error"] = f"cancelled: job {broken[0].id} it waited for {broken[0].get_status()}"
                    job.save_meta()
                    job.cancel(enqueue_dependents=True)  # its follow-ups (which allow failure) still catch up
                    settled.append(job.id)
            for job in Job.fetch_many(FailedJobRegistry(queue=queue).get_job_ids(), connection=self.redis):
                staging = job.meta.get("staging") if job is not None else None
                if staging and Path(staging).is_dir():
                    shutil.rmtree(staging, ignore_errors=True)
                    settled.append(job.id)
        return settled

    def enqueue_sft(self, rows: list[dict[str, str]], lineage: str, projects: list[int]) -> Job:
        job = self.train.enqueue(SFT_JOB, rows, lineage, job_timeout=self.settings.train_timeout,
                                 meta={"kind": "sft", "lineage": lineage}, **TRAIN_TTL)
        self._follow_up(job, projects, f"after sft of lineage {lineage}")
        return job

    def _follow_up(self, after: Job, projects: list[int], reason: str) -> list[Job]:
        """Once a training job ends, each project of its lineage gets candidates from the new policy and scores
        from the new reward model (also when it failed: then the job finds nothing new and only catches up)."""
        depends = Dependency(jobs=[after], allow_failure=True)
        return [self.generate.enqueue(GENERATE_JOB, project, None, depends_on=depends, meta={
            "kind": "generate", "project": project, "reason": reason}, job_timeout=self.settings.generate_timeout,
            **GENERATE_TTL) for project in projects]

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

    def recent_jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Jobs of both queues, newest first, with status, progress and errors."""
        ids: set[str] = set()
        for queue in (self.generate, self.train):
            ids.update(queue.get_job_ids())
            for registry in (StartedJobRegistry, DeferredJobRegistry, FinishedJobRegistry, FailedJobRegistry,
                             CanceledJobRegistry):
                ids.update(registry(queue=queue).get_job_ids())
        jobs = [j for j in Job.fetch_many(list(ids), connection=self.redis) if j is not None]
        jobs.sort(key=lambda j: j.enqueued_at or j.created_at, reverse=True)
        return [describe(job) for job in _newest_refits(jobs)[:limit]]

    def cancel(self, job_id: str) -> str:
        """Stop a running job or cancel a waiting one; returns what was done."""
        job = self._fetch(job_id)
        if job is None:
            raise LookupError(f"no job {job_id!r}")
        status = job.get_status()
        if status == JobStatus.STARTED:
            send_stop_job_command(self.redis, job.id)
            return "stop sent"
        try:
            job.cancel()
        except InvalidJobOperation as exc:
            raise LookupError(f"job {job_id} is {status}: {exc}") from exc
        return "cancelled"


def _newest_refits(jobs: list[Job]) -> list[Job]:
    """Jobs newest first, keeping of each project's refits (one per label) only the newest and any that failed:
    they would crowd the training jobs out of the list."""
    seen: set[Any] = set()
    kept = []
    for job in jobs:
        if job.meta.get("kind") == "refit" and job.get_status(refresh=False) != JobStatus.FAILED:
            if job.meta.get("project") in seen:
                continue
            seen.add(job.meta.get("project"))
        kept.append(job)
    return kept


def describe(job: Job) -> dict[str, Any]:
    """The public view of a job for /status."""
    status = job.get_status(refresh=False)
    view = {"id": job.id, "kind": job.meta.get("kind"), "status": str(status.value if status else "unknown"),
            "project": job.meta.get("project"), "lineage": job.meta.get("lineage"), "reason": job.meta.get("reason"),
            "progress": job.meta.get("progress"), "enqueued_at": job.enqueued_at and job.enqueued_at.isoformat(),
            "ended_at": job.ended_at and job.ended_at.isoformat()}
    if status in (JobStatus.FAILED, JobStatus.STOPPED):
        result = job.latest_result()
        exc = (result.exc_string if result else None) or job.exc_info or ""
        # the worker's own reason (a stalled horse it killed) says more than RQ's "terminated unexpectedly"
        reason = exc.strip().splitlines()[-1] if exc.strip() else str(status.value)
        if "AbandonedJobError" in reason:
            reason = "abandoned: its worker stopped (killed or lost) before the job finished"
        view["error"] = job.meta.get("error") or reason
    elif status == JobStatus.CANCELED and job.meta.get("error"):
        view["error"] = job.meta["error"]
    return view
