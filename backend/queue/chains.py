"""Building what runs: candidate generation (coalesced per project), the selection head's refit, a lineage's reward ->
policy chain (one waiting per lineage, after the running one), SFT, the follow-up generation of each, and the
reconciler's retry bookkeeping."""

from __future__ import annotations

import logging

from rq.job import Dependency, Job, JobStatus

from backend.core.defaults import DAY, GENERATE_TTL, REFIT_TTL, TRAIN_LOCK, TRAIN_TTL
from backend.queue.queues import (
    BROKEN,
    GENERATE_JOB,
    PENDING,
    POLICY_JOB,
    REFIT_JOB,
    REWARD_JOB,
    SFT_JOB,
    Queues,
)

log = logging.getLogger(__name__)


class Chains(Queues):
    """Enqueueing jobs and chains, each coalesced with what already waits."""

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
        job = self.generate.enqueue(
            GENERATE_JOB, project_id, task_ids, job_timeout=self.settings.generate_timeout, meta=meta, **GENERATE_TTL
        )
        self.redis.set(key, job.id, ex=GENERATE_TTL["result_ttl"])
        log.info("queued generation %s for project %s (%s)", job.id, project_id, reason)
        return job

    def request_refit(self, project_id: int) -> Job | None:
        """Queue a refit of the project's reward head after new labels, unless one is waiting already (it will
        read them: the job clears this mark before it reads the store)."""
        if not self.redis.set(self._key("refit", project_id), 1, nx=True, ex=DAY):
            return None
        return self.generate.enqueue(
            REFIT_JOB,
            project_id,
            job_timeout=self.settings.generate_timeout,
            meta={"kind": "refit", "project": project_id, "reason": "new labels"},
            **REFIT_TTL,
        )

    def refit_started(self, project_id: int) -> None:
        """A refit job is reading the store now: labels from here on queue the next one."""
        self.redis.delete(self._key("refit", project_id))

    def enqueue_training(
        self, lineage: str, algorithm: str, projects: list[int], reason: str = "", project_id: int | None = None
    ) -> tuple[list[Job], bool]:
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

    def _enqueue_chain(
        self, lineage: str, algorithm: str, reason: str, after: Job | None, project_id: int | None
    ) -> list[Job]:
        """The policy job reads the reward version its own reward job promoted (its dependency's result)."""
        common = {"job_timeout": self.settings.train_timeout, **TRAIN_TTL}
        depends = Dependency(jobs=[after], allow_failure=True) if after is not None else None
        meta = {"lineage": lineage, "project": project_id, "reason": reason}
        jobs = [self.train.enqueue(REWARD_JOB, lineage, depends_on=depends, meta={**meta, "kind": "reward"}, **common)]
        jobs.append(
            self.train.enqueue(
                POLICY_JOB, lineage, algorithm, depends_on=jobs[-1], meta={**meta, "kind": algorithm}, **common
            )
        )
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

    def enqueue_sft(self, rows: list[dict[str, str]], lineage: str, projects: list[int]) -> Job:
        job = self.train.enqueue(
            SFT_JOB,
            rows,
            lineage,
            job_timeout=self.settings.train_timeout,
            meta={"kind": "sft", "lineage": lineage},
            **TRAIN_TTL,
        )
        self._follow_up(job, projects, f"after sft of lineage {lineage}")
        return job

    def _follow_up(self, after: Job, projects: list[int], reason: str) -> list[Job]:
        """Once a training job ends, each project of its lineage gets candidates from the new policy and scores
        from the new reward model (also when it failed: then the job finds nothing new and only catches up)."""
        depends = Dependency(jobs=[after], allow_failure=True)
        return [
            self.generate.enqueue(
                GENERATE_JOB,
                project,
                None,
                depends_on=depends,
                meta={"kind": "generate", "project": project, "reason": reason},
                job_timeout=self.settings.generate_timeout,
                **GENERATE_TTL,
            )
            for project in projects
        ]

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
