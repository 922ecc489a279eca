"""The admin's view of the backend: served versions, per-project counts, recent jobs, model metrics."""
from __future__ import annotations

from typing import Any

from backend.queue import JobQueue
from backend.registry import Registry
from backend.store import Store


def status_report(model_version: str, store: Store, queue: JobQueue, registry: Registry) -> dict[str, Any]:
    """Everything /status and `python -m backend status` show."""
    return {
        "model_version": model_version,
        "projects": {str(pid): counts for pid, counts in store.counts().items()},
        "jobs": queue.recent_jobs(),
        "models": registry.catalog(),
    }


def format_status(report: dict[str, Any]) -> str:
    """The same report for a person."""
    lines = [f"model_version: {report['model_version']}", "", "projects:"]
    for pid, c in report["projects"].items() or {}:
        lines.append(f"  {pid}: {c['annotations']} annotations, {c['pairs']} pairs ({c['new_pairs']} not trained yet)")
    lines += ["", "models:"]
    for kind, versions in report["models"].items():
        for v in versions:
            metrics = ", ".join(f"{k}={v2:.3f}" if isinstance(v2, float) else f"{k}={v2}"
                                for k, v2 in (v.get("metrics") or {}).items())
            lines.append(f"  {kind} v{v['version']}{' (current)' if v['current'] else ''} {v.get('recipe', '')} {metrics}")
    lines += ["", "jobs:"]
    for job in report["jobs"]:
        progress = job.get("progress") or {}
        extra = f" step {progress.get('step')}/{progress.get('total')} loss {progress.get('loss')}" if progress else ""
        error = f" error: {job['error']}" if job.get("error") else ""
        lines.append(f"  {job['id']} {job['kind']} project={job['project']} {job['status']}{extra}{error}")
    return "\n".join(lines)
