"""RQ job: give every task of a project K candidate answers from its lineage's current policy, write them
back to Label Studio, and score them with the lineage's current reward model (for predictions)."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from backend import labelstudio
from backend.core.settings import QUEUE_BY_CHANCE
from backend.labels.preferences import Layout, parse_layout
from backend.labels.selection import draw
from backend.store import Project, Task
from backend.store.registry import Registry
from workers.jobs.select import Weigher, plan_generator, publish, random_shown, reweigh
from workers.ml.generation import Answer, SamplingConfig, candidates
from workers.ml.loading import inference_dtype, load_policy, load_reward
from workers.ml.scoring import score
from workers.runtime.context import JobContext, context

log = logging.getLogger(__name__)


def refresh_candidates(project_id: int, task_ids: list[int] | None = None) -> dict[str, Any]:
    """Generate for tasks without candidates (or with a stale policy's, unlabeled), then score them."""
    ctx = context()
    project = ctx.store.project(project_id)
    if project is None or not project.label_config:
        raise ValueError(f"project {project_id} is not set up (no label config)")
    layout = parse_layout(project.label_config)
    registry = ctx.registry(ctx.store.lineage_of(project_id))
    tasks = list(ctx.store.tasks(task_ids).values()) if task_ids else ctx.store.project_tasks(project_id)
    policy_version = registry.current("policy")
    client = ctx.label_studio(project)
    todo = _needing_candidates(ctx, client, project_id, layout, tasks, policy_version)
    generated = _generate(ctx, client, registry, project, layout, todo, policy_version) if todo else 0
    scored = _score(ctx, registry, layout, project_id, [t.id for t in tasks])
    return {"project": project_id, "generated": generated, "scored": scored, "policy_version": policy_version}


def _needing_candidates(
    ctx: JobContext, client: Any, project_id: int, layout: Layout, tasks: list[Task], policy_version: int | None
) -> list[Task]:
    """Tasks without candidates, and unlabeled tasks showing an older policy's (REGENERATE_STALE) unless an
    annotator has a draft of them: replacing what someone is comparing would invalidate their work."""
    missing = [t for t in tasks if layout.candidates_from_data(t.data) is None]
    if not ctx.settings.regenerate_stale:
        return missing
    labeled = ctx.store.labeled_task_ids(project_id)
    stale = [
        t
        for t in tasks
        if t not in missing
        and t.id not in labeled
        and t.policy_version is not None
        and t.policy_version != policy_version
    ]
    if stale and client is not None:
        busy = labelstudio.tasks_with_drafts(client, project_id)
        if busy & {t.id for t in stale}:
            log.info("project %s: not regenerating tasks with drafts %s", project_id, sorted(busy))
        stale = [t for t in stale if t.id not in busy]
    return missing + stale


def _generate(
    ctx: JobContext,
    client: Any,
    registry: Registry,
    project: Project,
    layout: Layout,
    tasks: list[Task],
    policy_version: int | None,
) -> int:
    s = ctx.settings
    cfg = SamplingConfig.from_settings(s, s.num_candidates)
    shown = layout.num_candidates(s.num_candidates)
    selection = ctx.store.selection_of(project.id, s.selection)
    # the head weighs what a task shows: the pair of K (Pairwise), the whole ranking (Ranker)
    weigher = Weigher(ctx, ctx.store.lineage_of(project.id), selection) if selection != "random" else None
    old = _judged_answers(ctx, registry, layout, tasks, policy_version)
    model, tokenizer = load_policy(registry.path("policy", policy_version), inference_dtype(s.generation_dtype))
    done = 0
    chunk = max(cfg.batch_size // cfg.k, 1)
    for start in range(0, len(tasks), chunk):  # write back chunk by chunk: annotators see tasks fill in
        part = tasks[start : start + chunk]
        prompts = [layout.prompt_of(t.data) for t in part]
        answers = candidates(model, tokenizer, prompts, cfg)
        if weigher is not None:
            flat = [x for a in answers for x in a]
            features = weigher.features(
                [p for p, a in zip(prompts, answers, strict=True) for _ in a],
                [x.text for x in flat],
                [x.finished for x in flat],
            )
            if weigher.head is None:  # fitted once per job, in units of the first chunk's spread
                weigher.fit(features)
            mine = [features[i * cfg.k : (i + 1) * cfg.k] for i in range(len(part))]
            showing = weigher.show(mine, shown, plan_generator(part[0].id, policy_version))
        else:
            showing = [random_shown(cfg.k, shown, t.id, policy_version) for t in part]
        for task, pool, indices in zip(part, answers, showing, strict=True):
            generation = f"p{policy_version}-{secrets.token_hex(4)}"
            picked = [pool[j] for j in indices]
            policies = None
            if task.id in old:  # blind: new against previous, in an order the task id decides
                previous, answer = old[task.id]
                picked, policies = [picked[0], answer], [policy_version, previous]
                if draw(task.id, policy_version, "order") < 0.5:
                    picked, policies = picked[::-1], policies[::-1]
            texts, finished = [a.text for a in picked], [a.finished for a in picked]
            data = {**task.data, **layout.candidates_to_data(texts, generation, finished)}
            shown_at = None
            if client is not None:
                try:
                    shown_at = labelstudio.update_task_data(client, task.id, data)
                except labelstudio.TaskGone:  # deleted while we generated: forget it, carry on with the rest
                    log.warning("project %s: task %s was deleted in Label Studio; dropped", project.id, task.id)
                    ctx.store.delete_tasks([task.id])
                    continue
            ctx.store.set_candidates(
                task.id,
                texts,
                policy_version,
                data,
                generation,
                shown_at,
                policies,
                pool=[a.text for a in pool] if len(pool) > len(texts) else None,
                finished=finished,
            )
        done += len(part)
        ctx.progress(stage="generate", step=done, total=len(tasks))
    try:  # the queue's order: every task of the project weighed on one scale (as a refit does), or random
        if weigher is not None and selection not in QUEUE_BY_CHANCE:
            weighable = [t for t in ctx.store.project_tasks(project.id) if layout.candidates_from_data(t.data)]
            reweigh(ctx, client, weigher, project, layout, weighable)
        elif client is not None:
            publish(ctx, client, project, selection, {})
    except labelstudio.LabelStudioError as exc:  # the candidates are written; the order catches up at a refit
        log.warning("project %s: %s", project.id, exc)
    log.info(
        "project %s: generated candidates for %d tasks with policy v%s (%s selection)",
        project.id,
        done,
        policy_version,
        selection,
    )
    return done


def _judged_answers(
    ctx: JobContext, registry: Registry, layout: Layout, tasks: list[Task], policy_version: int | None
) -> dict[int, tuple[int, Answer]]:
    """Human judging (HUMAN_JUDGE_FRACTION of Pairwise tasks): the previous policy's answer for each task
    drawn, which then stands beside the new policy's, so annotators' choices give a human win-rate."""
    fraction = ctx.settings.human_judge_fraction
    previous = registry.meta("policy", policy_version).get("parents", {}).get("policy") if policy_version else None
    if fraction <= 0 or previous is None or layout.kind != "pairwise":
        return {}
    drawn = [t for t in tasks if draw(t.id, policy_version, "judge") < fraction]
    if not drawn:
        return {}
    cfg = SamplingConfig.from_settings(ctx.settings, 1)
    model, tokenizer = load_policy(registry.path("policy", previous), inference_dtype(ctx.settings.generation_dtype))
    answers = candidates(model, tokenizer, [layout.prompt_of(t.data) for t in drawn], cfg)
    log.info("project tasks %s: human-judged, policy v%s against v%s", [t.id for t in drawn], policy_version, previous)
    return {t.id: (previous, a[0]) for t, a in zip(drawn, answers, strict=True)}


def _score(ctx: JobContext, registry: Registry, layout: Layout, project_id: int, task_ids: list[int]) -> int:
    """Reward of each candidate, stored for /predict; tasks already scored by this reward version are skipped."""
    reward_version = registry.current("reward")
    if reward_version is None:
        return 0
    rows = [t for t in ctx.store.tasks(task_ids).values() if t.reward_version != reward_version]
    rows = [(t, layout.candidates_from_data(t.data)) for t in rows]
    rows = [(t, c) for t, c in rows if c is not None]
    if not rows:
        return 0
    dtype = inference_dtype(ctx.settings.generation_dtype)
    model, tokenizer = load_reward(registry.path("reward", reward_version), dtype)
    prompts, answers, finished = layout.readings([t.data for t, _ in rows])
    scores = iter(score(model, tokenizer, prompts, answers, finished, ctx.settings.missing_eos_penalty))
    for task, cands in rows:
        if task.candidates != cands:  # candidates came with the task: record them as they are
            ctx.store.set_candidates(task.id, cands, None, task.data, finished=None)
        ctx.store.set_scores(task.id, [next(scores) for _ in cands], reward_version)
    log.info("project %s: scored %d tasks with reward v%d", project_id, len(rows), reward_version)
    return len(rows)
