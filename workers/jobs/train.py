"""RQ jobs: reward model, then policy (PPO / DPO / GRPO / RLOO), and SFT; each promotes atomically or not at all."""
from __future__ import annotations

import hashlib
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from backend.preferences import parse_layout
from backend.registry import Kind
from workers.context import JobContext, context
from workers.evaluate import policy_metrics
from workers.loading import load_policy, load_reward, use_bf16
from workers.progress import JobProgress
from workers.launch import run_recipe
from workers.recipes import RECIPES
from workers.recipes.base import RecipeInputs

log = logging.getLogger(__name__)
HELD_OUT = 0.1  # fraction of prompts kept out of training for evaluation


def held_out(prompt: str, seed: int) -> bool:
    """Deterministic split by prompt, so no prompt's pairs leak between train and evaluation."""
    digest = hashlib.sha256(f"{seed}:{prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < HELD_OUT


def split(items: list[Any], prompt_of: Callable[[Any], str], seed: int) -> tuple[list[Any], list[Any]]:
    """(train, held-out); both non-empty when there are at least two distinct prompts."""
    train = [i for i in items if not held_out(prompt_of(i), seed)]
    held = [i for i in items if held_out(prompt_of(i), seed)]
    prompts = sorted({prompt_of(i) for i in items}, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    if len(prompts) >= 2 and (not train or not held):  # tiny projects: move one prompt across
        move = prompts[0]
        held, train = [i for i in items if prompt_of(i) == move], [i for i in items if prompt_of(i) != move]
    return train, held


def train_reward(project_id: int) -> dict[str, Any]:
    """Bradley-Terry reward model on all the project's pairs, initialised from the current policy."""
    ctx = context()
    pairs = ctx.store.pairs(project_id)
    train, held = split(pairs, lambda p: p["prompt"], ctx.settings.seed)
    inputs = _inputs(ctx, "reward", pairs=train, eval_pairs=held)
    parents = {"policy": ctx.registry.current("policy")}
    data = {"pairs": len(train), "held_out_pairs": len(held), "project": project_id}
    result = _run(ctx, "reward", "reward", inputs, parents, data, verify=load_reward)
    ctx.queue.enqueue_generation(project_id, reason=f"score with reward v{result['version']}")
    return result


def train_policy(project_id: int, algorithm: str) -> dict[str, Any]:
    """A new policy with `algorithm` against the current reward model, evaluated on held-out prompts."""
    ctx = context()
    if algorithm not in RECIPES or algorithm in ("reward", "sft"):
        raise ValueError(f"unknown policy algorithm {algorithm!r}")
    all_pairs = ctx.store.pairs(project_id)
    prompts = sorted(_task_prompts(ctx, project_id) | {p["prompt"] for p in all_pairs})
    train_prompts, eval_prompts = split(prompts, lambda p: p, ctx.settings.seed)
    if not eval_prompts:  # a single prompt: nothing to hold out, so assess on it (recorded in meta)
        eval_prompts = train_prompts
    trainable = set(train_prompts)
    pairs = [p for p in all_pairs if p["prompt"] in trainable]
    reward = ctx.registry.current("reward")
    if reward is None:
        raise ValueError("no reward model yet: the reward job must succeed first")
    previous = ctx.registry.current("policy")
    parents = {"policy": previous, "reward": reward, "reference": 0}
    data = {"prompts": len(train_prompts), "held_out_prompts": len(eval_prompts), "pairs": len(pairs),
            "project": project_id, "assessed_on_train": eval_prompts is train_prompts}
    inputs = _inputs(ctx, algorithm, prompts=train_prompts, pairs=pairs,
                     reward_dir=ctx.registry.path("reward", reward))

    def assess(staging: Path) -> dict[str, float]:
        ctx.progress(stage="evaluate")
        return policy_metrics(staging, ctx.policy_dir(previous), ctx.policy_dir(0), ctx.registry.path("reward", reward),
                              eval_prompts, max_new_tokens=ctx.settings.max_new_tokens,
                              missing_eos_penalty=ctx.settings.missing_eos_penalty, seed=ctx.settings.seed)

    result = _run(ctx, "policy", algorithm, inputs, parents, data, verify=load_policy, assess=assess)
    ctx.queue.enqueue_generation(project_id, reason=f"policy v{result['version']}")
    return result


def _task_prompts(ctx: JobContext, project_id: int) -> set[str]:
    """Prompts of the project's tasks, read where its label config shows them."""
    project = ctx.store.project(project_id)
    key = parse_layout(project.label_config).prompt_key if project and project.label_config else "prompt"
    return {t.data[key] for t in ctx.store.project_tasks(project_id) if isinstance(t.data.get(key), str) and t.data[key]}


def train_sft(rows: list[dict[str, str]], project_id: int | None = None) -> dict[str, Any]:
    """Supervised fine-tuning on (prompt, response) rows: a new policy version."""
    ctx = context()
    inputs = _inputs(ctx, "sft", sft_rows=rows)
    parents = {"policy": ctx.registry.current("policy")}
    result = _run(ctx, "policy", "sft", inputs, parents, {"rows": len(rows), "project": project_id}, verify=load_policy)
    if project_id is not None:
        ctx.queue.enqueue_generation(project_id, reason=f"policy v{result['version']}")
    return result


def _inputs(ctx: JobContext, recipe: str, **fields: Any) -> RecipeInputs:
    s = ctx.settings
    return RecipeInputs(policy_dir=ctx.policy_dir(), reference_dir=ctx.policy_dir(0), out_dir=Path(),
                        bf16=use_bf16(), use_lora=s.use_lora, seed=s.seed, callbacks=[JobProgress(stage=recipe)],
                        max_new_tokens=s.max_new_tokens, missing_eos_penalty=s.missing_eos_penalty,
                        overrides=dict(s.train_args.get(recipe, {})), **fields)


def _current_job_id() -> str | None:
    from rq import get_current_job

    job = get_current_job()
    return job.id if job else None


def _run(ctx: JobContext, kind: Kind, recipe: str, inputs: RecipeInputs, parents: dict[str, Any],
         data: dict[str, Any], verify: Callable[[Path], Any],
         assess: Callable[[Path], dict[str, float]] | None = None) -> dict[str, Any]:
    """Train into staging, verify it loads, assess it, then promote and announce; on any failure the
    staging directory is deleted and the previous version keeps serving."""
    started = time.time()
    staging = ctx.registry.staging(kind)
    inputs.out_dir = staging
    try:
        metrics = run_recipe(recipe, inputs, ctx.settings.train_processes, _current_job_id())
        verify(staging)
        if assess is not None:
            metrics = {**metrics, **assess(staging)}
        meta = {"recipe": recipe, "parents": parents, "data": data, "hyperparameters": inputs.hyperparameters,
                "use_lora": inputs.use_lora, "bf16": inputs.bf16, "metrics": metrics, "started_at": started,
                "seconds": round(time.time() - started, 2)}
        version = ctx.registry.promote(kind, staging, meta)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ctx.notify(kind, version)
    log.info("%s v%d (%s) promoted: %s", kind, version, recipe, metrics)
    return {"kind": kind, "version": version, **meta}
