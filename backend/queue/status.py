"""Reading what runs: recent jobs with status, progress and errors for /status, cancelling one, and settling chains
whose dependency broke (and the staging directories failed training jobs left)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus
from rq.registry import (
    CanceledJobRegistry,
    DeferredJobRegistry,
    FailedJobRegistry,
    FinishedJobRegistry,
    StartedJobRegistry,
)

from backend.queue.queues import BROKEN, Queues


class JobReports(Queues):
    """What the queues hold, as /status and the CLI show it."""

    def recent_jobs(self, limit: int = 20) -> list[dict[str, Any]]:
        """Jobs of both queues, newest first, with status, progress and errors."""
        ids: set[str] = set()
        for queue in (self.generate, self.train):
            ids.update(queue.get_job_ids())
            for registry in (
                StartedJobRegistry,
                DeferredJobRegistry,
                FinishedJobRegistry,
                FailedJobRegistry,
                CanceledJobRegistry,
            ):
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
    view = {
        "id": job.id,
        "kind": job.meta.get("kind"),
        "status": str(status.value if status else "unknown"),
        "project": job.meta.get("project"),
        "lineage": job.meta.get("lineage"),
        "reason": job.meta.get("reason"),
        "progress": job.meta.get("progress"),
        "enqueued_at": job.enqueued_at and job.enqueued_at.isoformat(),
        "ended_at": job.ended_at and job.ended_at.isoformat(),
    }
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
