"""What every job needs, built once per process: the shared services, the base policy, job progress."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from backend.core.registry import Registry
from backend.core.services import Services, build
from backend.core.settings import get_settings


class JobContext(Services):
    """The services, plus what only jobs do: create policy v0 on first use and report progress."""

    def registry(self, lineage: str) -> Registry:
        """A lineage's registry, once the shared base policy v0 exists."""
        self.base_policy()
        return self.registries.lineage(lineage)

    def base_policy(self) -> Path:
        """Policy v0, converted on first use in a child process (see workers.bootstrap)."""
        from workers.bootstrap import ensure_base_policy

        ensure_base_policy(self.registries.base, self.settings.policy_model)
        return self.registries.base.path("policy", 0)

    def remember_staging(self, path: Path) -> None:
        """Note in the job where it trains, so that whoever finds it failed can remove the directory."""
        from rq import get_current_job

        job = get_current_job()
        if job is not None:
            job.meta["staging"] = str(path)
            job.save_meta()

    def progress(self, **fields: Any) -> None:
        """Merge fields into the current RQ job's progress (shown in /status)."""
        from workers.progress import record

        record(**fields)


@lru_cache(maxsize=1)
def context() -> JobContext:
    return build(get_settings(), cls=JobContext)
