"""Choosing what annotators label: a Bayesian reward head on frozen features, refitted on the lineage's labels
in milliseconds, and the SELECTION strategy (workers.ml.choice) say which two of K answers a Pairwise task
shows and in which order Label Studio's queue serves the tasks. SELECTION=random is the control: a random two
of K, a random queue. Every task shows its answers in a random order. The full reward model still comes from
the trl job."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from backend import labelstudio
from backend.core.settings import QUEUE_BY_CHANCE
from backend.labels.preferences import Layout, parse_layout
from backend.labels.selection import draw, informative_score
from backend.store import Project, Task
from workers.ml.choice import plan
from workers.ml.features import eos_features, feature_key
from workers.ml.head import BayesianHead, HeadConfig
from workers.ml.loading import inference_dtype, load_policy
from workers.runtime.context import JobContext, context

log = logging.getLogger(__name__)


class Weigher:
    """The lineage's head, fitted on its labels, and the features it reads (cached in the store; the
    reference policy v0 computes the missing ones, loaded only then)."""

    def __init__(self, ctx: JobContext, lineage: str, strategy: str, config: HeadConfig | None = None) -> None:
        self.ctx, self.lineage, self.strategy, self.config = ctx, lineage, strategy, config or HeadConfig()
        self._model: Any = None
        ctx.base_policy()  # features come from v0: converted first if no job needed it yet
        self._source = str(ctx.registries.base.meta("policy", 0).get("source", ""))
        self._dtype = inference_dtype(ctx.settings.generation_dtype)
        pairs = ctx.store.pairs(lineage, judged=ctx.settings.human_judge_train)
        chosen, rejected = (
            self.features(
                [p["prompt"] for p in pairs], [p[side] for p in pairs], [p[f"{side}_finished"] for p in pairs]
            )
            for side in ("chosen", "rejected")
        )
        self._scale: torch.Tensor | None = None
        self._chosen, self._rejected = chosen, rejected
        self.head: BayesianHead | None = None

    def features(self, prompts: list[str], answers: list[str], finished: list[bool | None]) -> torch.Tensor:
        """[n, hidden] float64 features of each (prompt, answer, finished), computing and caching the missing ones."""
        keys = [
            feature_key(self._source, self._dtype, p, a, f) for p, a, f in zip(prompts, answers, finished, strict=True)
        ]
        cached = self.ctx.store.features(set(keys))
        missing = {k: (p, a, f) for k, p, a, f in zip(keys, prompts, answers, finished, strict=True) if k not in cached}
        if missing:
            model, tokenizer = self._reference()
            todo = list(missing.items())
            vectors = eos_features(
                model,
                tokenizer,
                [p for _, (p, _, _) in todo],
                [a for _, (_, a, _) in todo],
                [f for _, (_, _, f) in todo],
                progress=lambda done, total: self.ctx.progress(stage="features", step=done, total=total),
            )
            fresh = {k: v.numpy().astype("<f4").tobytes() for (k, _), v in zip(todo, vectors, strict=True)}
            self.ctx.store.save_features(fresh)
            cached.update(fresh)
        if not keys:
            return torch.zeros(0, 0, dtype=torch.float64)
        return torch.from_numpy(np.stack([np.frombuffer(cached[k], dtype="<f4") for k in keys]).astype(np.float64))

    def _reference(self) -> Any:
        if self._model is None:
            self._model = load_policy(self.ctx.base_policy(), self._dtype)
        return self._model

    def fit(self, pool: torch.Tensor) -> BayesianHead:
        """Fit the head on the lineage's labels, in units of the spread of `pool` (features [n, d] of the
        candidates about to be weighed): the prior then fits any model's scale, and while the pool stays the
        same, more labels can only shrink what a comparison is worth."""
        self._scale = pool.std(0).nan_to_num(0.0) + 1e-6 if len(pool) > 1 else torch.ones(pool.shape[-1])
        typical = (pool[1:] - pool[:-1]) / self._scale  # neighbours: mostly answers to the same prompt
        self.head = BayesianHead(pool.shape[-1], self.config, typical=typical)
        labelled = (
            (self._chosen - self._rejected) / self._scale if self._chosen.numel() else torch.zeros(0, pool.shape[-1])
        )
        self.head.fit(labelled.to(torch.float64))
        return self.head

    def show(self, tasks: list[torch.Tensor], shown: int, generator: torch.Generator) -> list[list[int]]:
        """Which of each task's candidates (features [K, d] per task) it shows, in the order shown."""
        return plan(self.head, [t / self._scale for t in tasks], self.strategy, shown, generator).shown

    def weigh(self, tasks: list[torch.Tensor]) -> list[float]:
        """What labelling each task teaches the fitted head, given the candidates it shows ([shown, d] each;
        a ranking answers all its comparisons): the queue serves the highest first."""
        most = max((len(t) for t in tasks), default=2)
        return plan(self.head, [t / self._scale for t in tasks], self.strategy, most).worth


def random_shown(k: int, shown: int, task_id: int, version: int | None) -> list[int]:
    """SELECTION=random: `shown` of k candidates drawn at random, in a random order, fixed per task and version."""
    order = sorted(range(k), key=lambda i: draw(task_id, version, f"shown-{i}"))
    return order[:shown]


def plan_generator(task_id: int, version: int | None) -> torch.Generator:
    """The draws a strategy makes for a chunk of tasks (Thompson samples, shown orders): fixed by its first
    task and the policy version, so a rerun of the job shows the same."""
    return torch.Generator().manual_seed(int(draw(task_id, version, "plan") * 2**31))


def refit(project_id: int) -> dict[str, Any]:
    """After new labels: refit the head, reweigh every task of the project, and publish the scores to Label
    Studio so that the next task an annotator gets is the one worth most."""
    ctx = context()
    ctx.queue.refit_started(project_id)
    project = ctx.store.project(project_id)
    if project is None or not project.label_config:
        return {"project": project_id, "skipped": "not set up"}
    selection = ctx.store.selection_of(project_id, ctx.settings.selection)
    if selection in QUEUE_BY_CHANCE:  # the queue's order does not follow the head
        return {"project": project_id, "skipped": f"SELECTION={selection}"}
    layout = parse_layout(project.label_config)
    tasks = [t for t in ctx.store.project_tasks(project_id) if layout.candidates_from_data(t.data)]
    if not tasks:
        return {"project": project_id, "skipped": "no task has candidates yet"}
    seen = ctx.store.untrained_pairs(project_id)[1]  # the newest label, judged or not, before the head reads them
    weigher = Weigher(ctx, ctx.store.lineage_of(project_id), selection)
    published = reweigh(ctx, ctx.label_studio(project), weigher, project, layout, tasks)
    if ctx.store.untrained_pairs(project_id)[1] > seen:  # labels came in while it ran
        ctx.queue.request_refit(project_id)
    labels = weigher.head.labels  # reweigh() fitted it
    log.info(
        "project %s: head refitted on %d labels; %d tasks reweighed, %d scores published",
        project_id,
        labels,
        len(tasks),
        published,
    )
    return {"project": project_id, "labels": labels, "tasks": len(tasks), "published": published}


def reweigh(ctx: JobContext, client: Any, weigher: Weigher, project: Project, layout: Layout, tasks: list[Task]) -> int:
    """Fit the head with these tasks' shown candidates as the pool, store each task's worth under the strategy
    (what its shown comparisons teach the head: a ranking answers all of its K; d-optimal, given the tasks
    queued before it), and publish the scores when there is a client (without one /predict serves them).
    One scale for every task of the project: scores compare."""
    shown = [layout.candidates_from_data(t.data) or [] for t in tasks]
    features = weigher.features(*layout.readings([t.data for t in tasks]))
    weigher.fit(features)
    ends = np.cumsum([len(c) for c in shown]).tolist()
    values = weigher.weigh([features[end - len(c) : end] for c, end in zip(shown, ends, strict=True)])
    worth = {task.id: value for task, value in zip(tasks, values, strict=True)}
    ctx.store.set_worth(worth)
    if client is None:
        return 0
    return publish(ctx, client, project, weigher.strategy, {t: informative_score(w) for t, w in worth.items()})


def publish(ctx: JobContext, client: Any, project: Project, selection: str, scores: dict[int, float]) -> int:
    """Publish the scores to the project's Label Studio as predictions of the lineage's served model version
    (unless the strategy leaves the order to chance), then set the queue's sampling to follow SELECTION. Returns
    how many scores moved."""
    by_chance = selection in QUEUE_BY_CHANCE
    version = None if by_chance else ctx.registry(ctx.store.lineage_of(project.id)).model_version()
    published = labelstudio.publish_scores(client, project.id, version, scores) if version and scores else 0
    changed = labelstudio.order_queue(client, project.id, selection, version if scores else None)
    if changed:
        log.info("project %s: Label Studio queue set to %s", project.id, ", ".join(changed))
    return published
