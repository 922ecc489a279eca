"""RQ jobs: reward model, then policy (PPO / DPO / GRPO / RLOO), and SFT; each promotes atomically or not at all."""

from __future__ import annotations

import hashlib
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from backend.core.algorithms import RECIPE_KINDS, REWARD_OPTIMISERS
from backend.core.gates import Verdict, enforced, policy_verdict, reward_verdict
from backend.core.stats import rate
from backend.labels.preferences import parse_layout
from backend.store.registry import Kind, Registry, rejected
from workers.ml.evaluate import policy_metrics, reward_correct
from workers.ml.loading import load_policy, load_reward, train_in_bf16
from workers.recipes import hyperparameters
from workers.recipes.base import RecipeInputs
from workers.runtime.context import JobContext, context
from workers.runtime.launch import run_recipe
from workers.runtime.progress import JobProgress

log = logging.getLogger(__name__)
HELD_OUT = 0.1  # fraction of prompts kept out of training for evaluation


def held_out(prompt: str, seed: int) -> bool:
    """Deterministic split by prompt, so no prompt's pairs leak between train and evaluation."""
    digest = hashlib.sha256(f"{seed}:{prompt}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < HELD_OUT


def split(items: list[Any], prompt_of: Callable[[Any], str], seed: int) -> tuple[list[Any], list[Any]]:
    """(train, held-out) by each item's prompt, whose membership never changes as the project grows: a prompt
    that judged one round is never trained on in the next. A small project may have no held-out prompt yet."""
    train = [i for i in items if not held_out(prompt_of(i), seed)]
    held = [i for i in items if held_out(prompt_of(i), seed)]
    return train, held


Assessment = tuple[dict[str, float], Verdict]


def train_reward(lineage: str) -> dict[str, Any]:
    """Bradley-Terry reward model on all the lineage's pairs, initialised from its current policy; promoted
    unless it is less accurate than the current reward model on the same held-out pairs, beyond noise."""
    ctx = context()
    registry = ctx.registry(lineage)
    pairs = ctx.store.pairs(lineage, judged=ctx.settings.human_judge_train)
    train, held = split(pairs, lambda p: p["prompt"], ctx.settings.seed)
    policy, current = registry.current("policy"), registry.current("reward")
    data = {
        "pairs": len(train),
        "held_out_pairs": len(held),
        "lineage": lineage,
        "projects": ctx.store.lineage_projects(lineage),
        "upto_pair_id": max((p["id"] for p in pairs), default=0),
    }

    def assess(staging: Path) -> Assessment:
        ctx.progress(stage="evaluate")
        penalty = ctx.settings.missing_eos_penalty
        new = reward_correct(staging, held, penalty)
        old = reward_correct(registry.path("reward", current), held, penalty) if current is not None else None
        accuracy = rate(sum(new), len(new))
        metrics = {
            "accuracy": accuracy.value,
            "accuracy_low": accuracy.low,
            "accuracy_high": accuracy.high,
            "n_pairs": len(new),
        }
        if old is not None:
            metrics["current_accuracy"] = rate(sum(old), len(old)).value
        return metrics, reward_verdict(new, old, current, ctx.settings)

    return _run(
        ctx,
        registry,
        lineage,
        "reward",
        "reward",
        {"pairs": train, "eval_pairs": held},
        {"policy": policy},
        data,
        verify=load_reward,
        assess=assess,
    )


def train_policy(lineage: str, algorithm: str) -> dict[str, Any]:
    """A new policy with `algorithm` against the reward model its own chain trained, evaluated on held-out
    prompts of the lineage's projects."""
    ctx = context()
    if RECIPE_KINDS.get(algorithm) != "policy":
        raise ValueError(f"unknown policy algorithm {algorithm!r}")
    registry = ctx.registry(lineage)
    all_pairs = ctx.store.pairs(lineage, judged=ctx.settings.human_judge_train)
    prompts = sorted(_task_prompts(ctx, lineage) | {p["prompt"] for p in all_pairs})
    train_prompts, eval_prompts = split(prompts, lambda p: p, ctx.settings.seed)
    assessed_on_train = not eval_prompts  # no held-out prompt yet: the numbers come from the training prompts
    if assessed_on_train:
        eval_prompts = train_prompts
    trainable = set(train_prompts)
    pairs = [p for p in all_pairs if p["prompt"] in trainable]
    reward, upto = _chain_reward(registry, all_pairs)
    previous = registry.current("policy")
    optimises_reward = algorithm in REWARD_OPTIMISERS
    judge = _judge(registry, algorithm, reward)
    parents = {"policy": previous, "reward": reward, "reference": 0}
    data = {
        "prompts": len(train_prompts),
        "held_out_prompts": 0 if assessed_on_train else len(eval_prompts),
        "pairs": len(pairs),
        "lineage": lineage,
        "assessed_on_train": assessed_on_train,
    }

    def assess(staging: Path) -> Assessment:
        ctx.progress(stage="evaluate")
        scorer = judge if judge is not None else reward  # numbers still shown; the verdict says it is no judge
        metrics = policy_metrics(
            staging,
            registry.path("policy", previous),
            registry.path("policy", 0),
            registry.path("reward", scorer),
            registry.path("reward", reward) if optimises_reward else None,
            eval_prompts,
            max_new_tokens=ctx.settings.max_new_tokens,
            missing_eos_penalty=ctx.settings.missing_eos_penalty,
            seed=ctx.settings.seed,
        )
        metrics["judge_reward_version"] = scorer
        own = (metrics["own_reward_before"], metrics["own_reward_after"]) if optimises_reward else None
        verdict = policy_verdict(
            int(metrics["wins"]),
            int(metrics["losses"]),
            int(metrics["ties"]),
            metrics["kl"],
            None if judge is None else f"reward v{judge}",
            previous,
            ctx.settings,
            held_out=not assessed_on_train,
            own=own,
            judge_favours_baseline=_trained_against(registry, previous, judge),
        )
        return metrics, verdict

    inputs = {"prompts": train_prompts, "pairs": pairs, "reward_dir": registry.path("reward", reward)}
    result = _run(ctx, registry, lineage, "policy", algorithm, inputs, parents, data, verify=load_policy, assess=assess)
    ctx.store.mark_trained(lineage, upto)  # the chain succeeded: its trigger is cleared, not before
    ctx.queue.reset_attempts(lineage)
    return result


def _judge(registry: Registry, algorithm: str, reward: int) -> int | None:
    """The reward model that judges the new policy against the previous one: one it was not optimised against.
    DPO never reads a reward model, so the chain's own judges it; PPO, GRPO and RLOO maximise theirs, which
    would flatter them, so the newest other servable reward model (the previous one) judges; None if none."""
    if algorithm not in REWARD_OPTIMISERS:
        return reward
    others = [v for v in registry.versions("reward") if v != reward and not rejected(registry.meta("reward", v))]
    return max(others, default=None)


def _trained_against(registry: Registry, policy: int | None, reward: int | None) -> bool:
    """Whether this policy version was optimised against this reward version (a judge that flatters it)."""
    if policy is None or reward is None:
        return False
    meta = registry.meta("policy", policy)
    return meta.get("recipe") in REWARD_OPTIMISERS and meta.get("parents", {}).get("reward") == reward


def _chain_reward(registry: Registry, pairs: list[dict[str, Any]]) -> tuple[int, int]:
    """(the reward version this chain's reward job produced, the newest pair it trained on): the policy job's
    dependency says, so that a policy never trains against a reward model another chain produced meanwhile.
    If the gate rejected that reward model, the policy trains against the lineage's current one. Outside a
    chain: the current reward model and every pair."""
    from rq import get_current_job

    job = get_current_job()
    dependency = job.dependency if job is not None else None
    result = dependency.return_value() if dependency is not None else None
    current = registry.current("reward")
    if isinstance(result, dict) and isinstance(result.get("version"), int):
        upto = int((result.get("data") or {}).get("upto_pair_id") or 0)
        if (result.get("gate") or {}).get("status") == "rejected" and current is not None:
            log.info(
                "reward v%s was rejected; the policy trains against the current reward v%s", result["version"], current
            )
            return current, upto
        return result["version"], upto
    if current is None:
        raise ValueError("no reward model yet: the reward job must succeed first")
    return current, max((p["id"] for p in pairs), default=0)


def _task_prompts(ctx: JobContext, lineage: str) -> set[str]:
    """Prompts of the lineage's tasks, each read where its project's label config shows them."""
    prompts: set[str] = set()
    for project_id in ctx.store.lineage_projects(lineage):
        project = ctx.store.project(project_id)
        key = parse_layout(project.label_config).prompt_key if project and project.label_config else "prompt"
        prompts |= {
            t.data[key] for t in ctx.store.project_tasks(project_id) if isinstance(t.data.get(key), str) and t.data[key]
        }
    return prompts


def train_sft(rows: list[dict[str, str]], lineage: str) -> dict[str, Any]:
    """Supervised fine-tuning on (prompt, response) rows: a new policy version of the lineage."""
    ctx = context()
    registry = ctx.registry(lineage)
    parents = {"policy": registry.current("policy")}
    return _run(
        ctx,
        registry,
        lineage,
        "policy",
        "sft",
        {"sft_rows": rows},
        parents,
        {"rows": len(rows), "lineage": lineage},
        verify=load_policy,
    )


def _inputs(ctx: JobContext, registry: Registry, recipe: str, out_dir: Path, **fields: Any) -> RecipeInputs:
    s = ctx.settings
    return RecipeInputs(
        policy_dir=registry.path("policy", registry.current("policy")),
        reference_dir=registry.path("policy", 0),
        out_dir=out_dir,
        bf16=train_in_bf16(s.train_precision),
        use_lora=s.use_lora,
        seed=s.seed,
        callbacks=[JobProgress(stage=recipe)],
        max_new_tokens=s.max_new_tokens,
        missing_eos_penalty=s.missing_eos_penalty,
        overrides=dict(s.train_args.get(recipe, {})),
        **fields,
    )


def _current_job_id() -> str | None:
    from rq import get_current_job

    job = get_current_job()
    return job.id if job else None


def _run(
    ctx: JobContext,
    registry: Registry,
    lineage: str,
    kind: Kind,
    recipe: str,
    fields: dict[str, Any],
    parents: dict[str, Any],
    data: dict[str, Any],
    verify: Callable[[Path], Any],
    assess: Callable[[Path], Assessment] | None = None,
) -> dict[str, Any]:
    """Train into staging, verify it loads, assess it, then promote and announce, or keep it unserved as a
    rejected version when its gate says it is worse; on any failure the staging directory is deleted and
    the previous version keeps serving."""
    started = time.time()
    ctx.progress(stage="loading", recipe=recipe)
    staging = registry.staging(kind)
    ctx.remember_staging(staging)  # a killed work-horse cannot clean up: the reconciler will, from this
    inputs = _inputs(ctx, registry, recipe, staging, **fields)
    try:
        metrics = run_recipe(recipe, inputs, ctx.settings.train_processes, _current_job_id())
        verify(staging)
        verdict = Verdict("unassessed", f"{recipe} is not gated")
        if assess is not None:
            assessed, verdict = assess(staging)
            metrics = {**metrics, **assessed}
        verdict = enforced(verdict, ctx.settings)
        meta = {
            "recipe": recipe,
            "parents": parents,
            "data": data,
            "hyperparameters": hyperparameters(recipe, inputs),
            "use_lora": inputs.use_lora,
            "bf16": inputs.bf16,
            "metrics": metrics,
            "gate": verdict.as_dict(),
            "started_at": started,
            "seconds": round(time.time() - started, 2),
        }
        version = registry.promote(kind, staging, meta, serve=verdict.status != "rejected")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if verdict.status == "rejected":
        log.warning("%s v%d (%s) rejected, not served: %s", kind, version, recipe, verdict.reason)
    else:
        ctx.announce(lineage, kind, version)
        log.info("%s v%d (%s) promoted (%s): %s", kind, version, recipe, verdict.status, metrics)
    return {"kind": kind, "version": version, **meta}
