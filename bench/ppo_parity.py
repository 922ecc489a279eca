"""The project's PPO against trl 1.12's PPOTrainer, the last trl that had one: same model, reward model, prompts,
seeds and settings, several seeds each, side by side.

trl's PPOTrainer runs in a side environment this bench builds once (.cache/bench-trl112: trl==1.12.0 with the
product's own torch, transformers, accelerate and datasets versions; never a product dependency), through
bench/ppo_trl_reference.py. The project's PPO runs as the jobs run it (`RECIPES["ppo"].train`). Each run is its
own process, so peak memory is that run's. Both sample rollouts from the whole vocabulary at temperature 0.7
(trl's way, and our PPO's default) and both keep the policy in fp32 (bf16-mixed with --bf16).

The reward model is the reward recipe trained once (cached) on HH-RLHF pairs relabelled by the demo's rule "the
answer ends properly within 60 words" (pairs where exactly one side passes): a clear, learnable preference.
Rollouts are the demo's everyday prompts; each trained policy is then judged on held-out everyday prompts the
same way (workers.ml.evaluate.policy_metrics, plain draws): reward gain over the reference v0 under that reward
model, and KL to v0 per answer token (k3).

    .venv/bin/python -m bench.ppo_parity            # SmolLM2-135M, 3 seeds x 2 implementations (~40 min on 2 cores)
    .venv/bin/python -m bench.ppo_parity --model tiny --steps 4   # a smoke run on the 2-layer test model

PASS when our median reward gain is >= 90 % of trl's, at a median KL no more than 20 % above trl's, and our
median seconds per step are within 1/0.9 of trl's (speed >= 0.9x).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.common import HH_DATA, MODEL_CACHE, ROOT, header, hh_pairs, load, resolve_model, verdict
from bench.everyday import RULES, everyday_prompts

SIDE_ENV = ROOT / ".cache" / "bench-trl112"
REFERENCE = Path(__file__).with_name("ppo_trl_reference.py")
RULE = RULES["short"]
REWARD_ARGS = {"learning_rate": 2e-5, "num_train_epochs": 1, "max_length": 384, "per_device_train_batch_size": 8}


def peak_rss() -> int:
    """This process's peak resident memory in bytes (VmHWM: reset at exec, unlike ru_maxrss)."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="embedded", help="embedded (SmolLM2-135M), tiny, or a local model directory")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=8, help="PPO updates per run (total_episodes = steps x batch)")
    p.add_argument("--batch", type=int, default=8, help="rollouts per update (per_device_train_batch_size)")
    p.add_argument("--response-length", type=int, default=64)
    p.add_argument("--epochs", type=int, default=4, help="num_ppo_epochs")
    p.add_argument("--learning-rate", type=float, default=1e-5)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--missing-eos-penalty", type=float, default=1.0)
    p.add_argument("--reward-pairs", type=int, default=192, help="HH pairs the rule's reward model trains on")
    p.add_argument("--eval-prompts", type=int, default=48)
    p.add_argument("--bf16", action="store_true", help="bf16-mixed for both (a GPU's TRAIN_PRECISION)")
    p.add_argument(
        "--ours-args",
        type=json.loads,
        default={},
        help="JSON overriding our config only, e.g. '{\"learning_rate\": 5e-6}' to compare at a matched KL",
    )
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "ppo-parity")
    p.add_argument("--ours", type=Path, help=argparse.SUPPRESS)  # internal: run our PPO from this spec
    return p


# --- what both implementations train from --------------------------------------------------------------------


def side_env() -> Path:
    """The side environment's python, built once: trl 1.12 beside the product's torch/transformers versions."""
    python = SIDE_ENV / "bin" / "python"
    marker = SIDE_ENV / "ready"
    if marker.is_file():
        return python
    shutil.rmtree(SIDE_ENV, ignore_errors=True)
    print(f"building the trl 1.12 side environment in {SIDE_ENV} (a few minutes, once)", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(SIDE_ENV)], check=True)
    pins = [f"{name}=={version(name)}" for name in ("torch", "transformers", "accelerate", "datasets")]
    subprocess.run([str(python), "-m", "pip", "install", "-q", "trl==1.12.0", *pins], check=True)
    marker.write_text(" ".join(["trl==1.12.0", *pins]))
    return python


def rule_pairs(n: int) -> list[dict[str, Any]]:
    """HH pairs where exactly one answer passes the rule, the passing one chosen."""
    pairs, _ = hh_pairs(HH_DATA)
    kept = []
    for pair in pairs:
        chosen, rejected = RULE(pair["chosen"]), RULE(pair["rejected"])
        if chosen != rejected:
            kept.append(pair if chosen else pair | {"chosen": pair["rejected"], "rejected": pair["chosen"]})
    return kept[:n]


def reward_model(policy_dir: Path, n_pairs: int, bf16: bool) -> Path:
    """The rule's reward model, trained once with the product's reward recipe (cached beside the policy)."""
    from workers.recipes import RECIPES
    from workers.recipes.base import RecipeInputs

    out = MODEL_CACHE / f"parity-reward-{policy_dir.name}-{n_pairs}"
    if (out / "config.json").is_file():
        return out
    pairs = rule_pairs(n_pairs)
    held = len(pairs) // 8
    started = time.perf_counter()
    metrics = RECIPES["reward"].train(
        RecipeInputs(
            policy_dir=policy_dir,
            reference_dir=policy_dir,
            out_dir=out,
            pairs=pairs[held:],
            eval_pairs=pairs[:held],
            bf16=bf16,
            overrides=REWARD_ARGS,
        )
    )
    print(
        f"reward model: {len(pairs) - held} HH pairs relabelled by the rule, held-out accuracy "
        f"{metrics.get('eval_accuracy', float('nan')):.2f} on {held}, {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    return out


def ppo_config(args: argparse.Namespace) -> dict[str, Any]:
    """The PPOConfig fields both implementations share (trl's names)."""
    return {
        "learning_rate": args.learning_rate,
        "total_episodes": args.steps * args.batch,
        "per_device_train_batch_size": args.batch,
        "gradient_accumulation_steps": 1,
        "num_mini_batches": 1,
        "num_ppo_epochs": args.epochs,
        "response_length": args.response_length,
        "temperature": 0.7,
        "kl_coef": args.kl_coef,
        "missing_eos_penalty": args.missing_eos_penalty,
        "stop_token": "eos",
        "local_rollout_forward_batch_size": args.batch,
        "num_sample_generations": 0,
    }


# --- one run of each -----------------------------------------------------------------------------------------


def run_ours(spec_path: Path) -> None:
    """Inside the child process: the product's PPO recipe on the spec, then result.json beside the model."""
    import torch

    from workers.recipes import RECIPES
    from workers.recipes.base import RecipeInputs

    spec = json.loads(spec_path.read_text())
    out = Path(spec["out_dir"])
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    metrics = RECIPES["ppo"].train(
        RecipeInputs(
            policy_dir=Path(spec["policy_dir"]),
            reference_dir=Path(spec["policy_dir"]),
            out_dir=out,
            reward_dir=Path(spec["reward_dir"]),
            prompts=spec["prompts"],
            bf16=spec["bf16"],
            seed=spec["seed"],
            missing_eos_penalty=spec["config"]["missing_eos_penalty"],
            overrides=spec["config"] | {"max_prompt_length": 10_000},
        )
    )
    peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else peak_rss()
    steps = int(metrics["step"])
    result = {"seconds_per_step": metrics["train_runtime"] / steps, "steps": steps, "peak_bytes": peak}
    (out / "result.json").write_text(json.dumps(result))


def run(implementation: str, spec: dict[str, Any], work: Path) -> dict[str, Any]:
    """One training run in its own process; returns its result.json. A run whose spec and result are on disk
    is not repeated (an interrupted bench resumes; `--seeds 5` after `--seeds 3` runs two more)."""
    out = Path(spec["out_dir"])
    spec_path = out.with_suffix(".json")
    if (out / "result.json").is_file() and spec_path.is_file() and json.loads(spec_path.read_text()) == spec:
        print(f"{out.name}: reusing the run on disk", flush=True)
        return json.loads((out / "result.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    spec_path.write_text(json.dumps(spec))
    if implementation == "ours":
        command = [sys.executable, "-m", "bench.ppo_parity", "--ours", str(spec_path)]
    else:
        command = [str(side_env()), str(REFERENCE), str(spec_path)]
    logfile = work / f"{out.name}.log"
    with logfile.open("w") as log:
        done = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode:
        raise RuntimeError(f"{implementation} run failed ({done.returncode}); see {logfile}")
    return json.loads((out / "result.json").read_text())


def judge(policy: Path, v0: Path, reward: Path, prompts: list[str], args: argparse.Namespace) -> dict[str, float]:
    """Reward gain over v0 under the rule's reward model, and KL to v0 per token, on held-out plain draws."""
    from workers.ml.evaluate import policy_metrics

    m = policy_metrics(policy, v0, v0, reward, reward, prompts, args.response_length, args.missing_eos_penalty)
    return {"gain": m["own_reward_after"] - m["own_reward_before"], "kl": m["kl"]}


# --- the table and the verdict -------------------------------------------------------------------------------


def summary(values: list[float], fmt: str) -> str:
    """median [min, max]"""
    return f"{statistics.median(values):{fmt}} [{min(values):{fmt}}, {max(values):{fmt}}]"


def main(argv: list[str] | None = None) -> bool:
    args = make_parser().parse_args(argv)
    if args.ours:
        run_ours(args.ours)
        return True
    header("PPO parity: the project's PPO against trl 1.12's PPOTrainer")
    from workers.ml.chat import prompt_texts
    from workers.ml.loading import load_tokenizer

    args.work.mkdir(parents=True, exist_ok=True)
    side_env()
    v0 = Path(resolve_model(args.model))
    reward = reward_model(v0, args.reward_pairs, args.bf16)
    prompts = everyday_prompts()
    train_prompts, eval_prompts = prompts[: args.steps * args.batch], prompts[-args.eval_prompts :]
    tokenizer = load_tokenizer(v0)
    prompt_ids = tokenizer(prompt_texts(tokenizer, train_prompts), add_special_tokens=False)["input_ids"]
    config = ppo_config(args)
    print(f"model {v0} | reward {reward.name} | settings {json.dumps(config)} | bf16 {args.bf16}", flush=True)
    if args.ours_args:
        print(f"ours only: {json.dumps(args.ours_args)}", flush=True)
    rows: dict[str, list[dict[str, float]]] = {"trl 1.12": [], "ours": []}
    for seed in range(args.seeds):
        for implementation in ("trl", "ours"):  # alternating, so drift in machine load hits both alike
            name = "trl 1.12" if implementation == "trl" else "ours"
            spec = {
                "policy_dir": str(v0),
                "reward_dir": str(reward),
                "prompts": train_prompts,
                "prompt_ids": prompt_ids,
                "config": config | (args.ours_args if implementation == "ours" else {}),
                "seed": seed,
                "bf16": args.bf16,
                "out_dir": str(args.work / f"{implementation}-seed{seed}"),
            }
            result = run(implementation, spec, args.work)
            judged = Path(spec["out_dir"]) / "judged.json"  # gone with the run when it is redone
            if not judged.is_file():
                judged.write_text(json.dumps(judge(Path(spec["out_dir"]), v0, reward, eval_prompts, args)))
            result |= json.loads(judged.read_text())
            rows[name].append(result)
            print(
                f"seed {seed} {name:>8}: gain {result['gain']:+.3f}, KL {result['kl']:.4f}, "
                f"{result['seconds_per_step']:.1f} s/step, peak {result['peak_bytes'] / 2**20:.0f} MiB | {load()}",
                flush=True,
            )
    print(f"\n{args.seeds} seeds each, median [min, max]:")
    print("| implementation | reward gain over v0 | KL to v0 per token | s / step | peak MiB |")
    print("|---|---|---|---|---|")
    for name, results in rows.items():
        print(
            f"| {name} | {summary([r['gain'] for r in results], '+.3f')} "
            f"| {summary([r['kl'] for r in results], '.4f')} "
            f"| {summary([r['seconds_per_step'] for r in results], '.1f')} "
            f"| {summary([r['peak_bytes'] / 2**20 for r in results], '.0f')} |"
        )
    med = {name: {k: statistics.median(r[k] for r in results) for k in results[0]} for name, results in rows.items()}
    ours, trl = med["ours"], med["trl 1.12"]
    if trl["gain"] <= 0:
        return verdict(f"trl's median gain {trl['gain']:+.3f}: the reference did not learn", "a run that learns", False)
    gain, kl, speed = (
        ours["gain"] / trl["gain"],
        ours["kl"] / trl["kl"],
        trl["seconds_per_step"] / ours["seconds_per_step"],
    )
    return verdict(
        f"ours/trl: reward gain {gain:.0%}, KL {kl:.0%}, speed {speed:.2f}x",
        "gain >= 90 %, KL <= 120 %, speed >= 0.9x",
        gain >= 0.9 and kl <= 1.2 and speed >= 0.9,
    )


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
