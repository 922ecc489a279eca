"""The admin's view of the backend: per-project counts, each lineage's served versions and models, recent jobs."""

from __future__ import annotations

from typing import Any

from backend.admin.report import gate_of, headline, label_lines
from backend.core.settings import Settings
from backend.labels.quality import agreement, human_win_rates
from backend.queue import JobQueue
from backend.store import Store
from backend.store.registry import Registries


def status_report(
    store: Store, queue: JobQueue, registries: Registries, settings: Settings, project: int | None = None
) -> dict[str, Any]:
    """Everything /status and `python -m backend status` show; with a project, only it and its lineage."""
    counts = store.counts()
    if project is not None:
        counts = {
            project: counts.get(project)
            or {
                "lineage": store.lineage_of(project),
                "annotations": 0,
                "pairs": 0,
                "new_pairs": 0,
                "stale_annotations": 0,
                "skipped_annotations": 0,
                "pairs_by_selection": {},
            }
        }
    due = store.due_lineages(settings.retrain_every)
    names = sorted({c["lineage"] for c in counts.values()} | (set(registries.lineages()) if project is None else set()))
    lineages = {}
    for name in names:
        registry = registries.lineage(name)
        lineages[name] = {
            "model_version": registry.model_version(),
            "models": registry.catalog(),
            "projects": store.lineage_projects(name),
            "due": due.get(name),
            "training_attempts": queue.attempts(name)[0],
            "kl_budget": settings.kl_budget,
            "agreement": agreement(store.overlapping_labels(name)),
            "human_judged": human_win_rates(store.judged_labels(name)),
        }
    synced = {p: store.project(p) for p in counts}
    endings = store.answer_endings()
    for pid, c in counts.items():
        c["model_version"] = lineages[c["lineage"]]["model_version"]
        c["synced_at"] = synced[pid].synced_at.isoformat() if synced[pid] and synced[pid].synced_at else None
        c["selection"] = store.selection_of(pid, settings.selection)
        c["answers"] = endings.get(pid, {"by_policy": {}, "unknown": 0})
    jobs = queue.recent_jobs()
    if project is not None:
        lineage = counts[project]["lineage"]
        jobs = [j for j in jobs if j.get("project") == project or j.get("lineage") == lineage]
    return {"projects": {str(pid): c for pid, c in counts.items()}, "lineages": lineages, "jobs": jobs}


def format_status(report: dict[str, Any]) -> str:
    """The same report for a person."""
    lines = ["projects:"]
    for pid, c in report["projects"].items():
        lines.append(
            f"  {pid}: lineage {c['lineage']} serves {c['model_version']}; {c['annotations']} annotations, "
            f"{c['pairs']} pairs ({c['new_pairs']} not trained yet), {c['stale_annotations']} stale; "
            f"SELECTION={c['selection']} ({_by_selection(c)})"
        )
        lines.append(f"    answers shown: {_endings(c.get('answers') or {})}")
    for name, lineage in report["lineages"].items():
        lines += ["", f"lineage {name} (projects {lineage['projects']}): serves {lineage['model_version']}"]
        for kind, versions in lineage["models"].items():
            for v in versions:
                gate = gate_of(v)
                lines.append(
                    f"  {kind} v{v['version']}{' (current)' if v['current'] else ''} {v.get('recipe', '')} "
                    f"{gate.upper() if gate == 'rejected' else gate} parents={v.get('parents', {})} "
                    f"{headline(kind, v)}"
                )
                if (v.get("gate") or {}).get("reason"):
                    lines.append(f"    gate: {v['gate']['reason']}")
        lines += [f"  {label}: {value}" for label, value in label_lines(lineage)]
    lines += ["", "jobs:"]
    for job in report["jobs"]:
        progress = job.get("progress") or {}
        extra = f" step {progress.get('step')}/{progress.get('total')} loss {progress.get('loss')}" if progress else ""
        error = f" error: {job['error']}" if job.get("error") else ""
        where = f"lineage={job['lineage']}" if job.get("lineage") else f"project={job['project']}"
        lines.append(f"  {job['id']} {job['kind']} {where} {job['status']}{extra}{error}")
    return "\n".join(lines)


def _endings(answers: dict[str, Any]) -> str:
    """How the candidates shown ended, per policy version that wrote them."""
    parts = [
        f"policy {v} finished {t['finished_share']:.0%} ({t['finished']} of {t['finished'] + t['cut']})"
        for v, t in sorted((answers.get("by_policy") or {}).items())
    ]
    if answers.get("unknown"):
        parts.append(f"{answers['unknown']} not recorded whether they ended (read as finished until regenerated)")
    return "; ".join(parts) or "none yet"


def _by_selection(counts: dict[str, Any]) -> str:
    by = counts.get("pairs_by_selection") or {}
    return ", ".join(f"{n} pairs labelled under {k}" for k, n in sorted(by.items())) or "no pairs yet"
