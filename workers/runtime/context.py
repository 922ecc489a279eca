"""What every job needs, built once per process: the shared services, the base policy, job progress."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from backend.core.settings import get_settings
from backend.services import Services, build
from backend.store import Project
from backend.store.registry import Registry

log = logging.getLogger(__name__)


class JobContext(Services):
    """The services, plus what only jobs do: create policy v0 on first use and report progress."""

    def registry(self, lineage: str) -> Registry:
        """A lineage's registry, once the shared base policy v0 exists."""
        self.base_policy()
        return self.registries.lineage(lineage)

    def base_policy(self) -> Path:
        """Policy v0, converted on first use in a child process (see workers.runtime.bootstrap)."""
        from workers.runtime.bootstrap import ensure_base_policy

        ensure_base_policy(self.registries.base, self.settings.policy_model)
        return self.registries.base.path("policy", 0)

    def label_studio(self, project: Project) -> Any:
        """A client for the project's Label Studio, from one source (see labelstudio.access), or None."""
        from backend import labelstudio

        s = self.settings
        found = labelstudio.access(
            project.ls_url, project.ls_token, s.label_studio_url, s.label_studio_api_key, s.allowed_label_studio_hosts
        )
        if found is None:
            log.warning("project %s: no Label Studio URL/token; what workers prepare stays in the store", project.id)
            return None
        return labelstudio.client(*found)

    def remember_staging(self, path: Path) -> None:
        """Note in the job where it trains, so that whoever finds it failed can remove the directory."""
        from rq import get_current_job

        job = get_current_job()
        if job is not None:
            job.meta["staging"] = str(path)
            job.save_meta()

    def progress(self, **fields: Any) -> None:
        """Merge fields into the current RQ job's progress (shown in /status)."""
        from workers.runtime.progress import record

        record(**fields)


@lru_cache(maxsize=1)
def context() -> JobContext:
    return build(get_settings(), cls=JobContext)
