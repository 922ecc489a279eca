"""Training: (a) our reward-job path against a plain trl RewardTrainer script, (b) the label -> served-model overhead.

(a) runs workers.recipes.RECIPES["reward"].train and an inline plain trl script on the same pairs, model,
max_length, batch size and steps (fp32, no gradient checkpointing in either), alternating, and compares
samples/s end to end (model load, tokenization, training, save) and inside trainer.train().
(b) runs the real backend (Flask app in-process) and a real RQ worker (`python -m workers --queues train`,
started beforehand as `make run` does), posts webhooks until one crosses RETRAIN_EVERY, and times until
project 1 serves the new model_version. The trainers' own time is subtracted; the rest is overhead, broken down
from the versions' meta.json and the worker's log timestamps.

Run from the repository root (bench/README.md has more):

    .venv/bin/python -m bench.training                    # (a) tiny model, 3 runs each + (b) tiny models, PPO: ~1 min
    .venv/bin/python -m bench.training --part b --no-preload
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import common

GOAL_RATIO = 0.9
GOAL_OVERHEAD_S = 2.0
LEARNING_RATE = 1e-4  # (a): the same for both; it does not change the speed


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["a", "b", "both"], default="both")
    parser.add_argument("--model", default="tiny", help="policy dir, hub id, `tiny` (2-layer GPT-2) or `embedded`")
    parser.add_argument("--pairs", type=int, default=256, help="(a) preference pairs (HH-RLHF slice, else synthetic)")
    parser.add_argument("--max-length", type=int, default=256, help="(a) max_length of both trainers")
    parser.add_argument("--batch-size", type=int, default=8, help="(a) per_device_train_batch_size")
    parser.add_argument("--steps", type=int, default=64, help="(a) max_steps")
    parser.add_argument("--repeats", type=int, default=3, help="(a) runs of each, alternating; medians reported")
    parser.add_argument("--algorithm", default="ppo", choices=["ppo", "dpo", "grpo", "rloo"], help="(b) policy recipe")
    parser.add_argument("--tasks", type=int, default=10, help="(b) tasks in the project (prompts for the policy job)")
    parser.add_argument("--retrain-every", type=int, default=4, help="(b) RETRAIN_EVERY: webhooks until the trigger")
    parser.add_argument("--worker-log", type=Path, help="(b) keep a copy of the worker's log here")
    parser.add_argument(
        "--no-preload",
        action="store_true",
        help="(b) start the worker with --no-preload: each work-horse imports torch/transformers/trl "
        "itself (the behaviour before the worker preloaded them), to see what preloading saves",
    )
    return parser


# --- (a) recipe vs plain trl -------------------------------------------------------------------------------------


@dataclass
class Run:
    """One training run: wall seconds end to end and trl's own train_samples_per_second."""

    wall: float
    train_sps: float


def training_pairs(model_path: str, n: int, max_length: int) -> tuple[list[dict[str, str]], str]:
    """n pairs that fit max_length for this tokenizer (so neither trainer drops any), and where they came from."""
    from workers.ml.loading import load_tokenizer

    tokenizer = load_tokenizer(model_path)
    if common.HH_DATA.is_file():
        pairs, _ = common.hh_pairs()
        kept = [p for p in pairs[: n * 8] if common.fits(tokenizer, p, max_length)][:n]  # 8x: enough to find n
        if len(kept) == n:
            return kept, f"HH-RLHF harmless-base test, first {n} pairs that fit {max_length} tokens"
    return common.synthetic_pairs(n), "synthetic"


def run_recipe(model_path: str, pairs: list[dict[str, str]], args: argparse.Namespace, out: Path) -> Run:
    """Our job path: RecipeInputs -> RECIPES['reward'].train (tokenizer, dataset, trainer, train, save)."""
    from workers.recipes import RECIPES
    from workers.recipes.base import RecipeInputs

    inputs = RecipeInputs(
        policy_dir=Path(model_path),
        reference_dir=Path(model_path),
        out_dir=out,
        pairs=pairs,
        overrides={
            "max_steps": args.steps,
            "per_device_train_batch_size": args.batch_size,
            "max_length": args.max_length,
            "learning_rate": LEARNING_RATE,
        },
    )
    with common.Timer() as wall:
        metrics = RECIPES["reward"].train(inputs)
    return Run(wall.seconds, metrics["train_samples_per_second"])


def run_plain_trl(model_path: str, pairs: list[dict[str, str]], args: argparse.Namespace, out: Path) -> Run:
    """What a user would write with trl alone: conversational dataset, RewardConfig, RewardTrainer, train, save."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    with common.Timer() as wall:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        dataset = Dataset.from_list(
            [
                {
                    "prompt": [{"role": "user", "content": p["prompt"]}],
                    "chosen": [{"role": "assistant", "content": p["chosen"]}],
                    "rejected": [{"role": "assistant", "content": p["rejected"]}],
                }
                for p in pairs
            ]
        )
        config = RewardConfig(
            output_dir=str(out / "trl"),
            max_steps=args.steps,
            max_length=args.max_length,
            per_device_train_batch_size=args.batch_size,
            learning_rate=LEARNING_RATE,
            bf16=False,
            activation_checkpointing=False,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
        )
        trainer = RewardTrainer(model=model_path, args=config, train_dataset=dataset, processing_class=tokenizer)
        result = trainer.train()
        trainer.save_model(str(out))
    return Run(wall.seconds, result.metrics["train_samples_per_second"])


def part_a(args: argparse.Namespace, model_path: str) -> bool:
    """Alternate the two, take medians, print both figures, their ratio and the verdict."""
    import logging

    logging.getLogger("workers").setLevel(logging.ERROR)  # "no eval pairs" is expected: neither side evaluates
    pairs, source = training_pairs(model_path, args.pairs, args.max_length)
    samples = args.steps * args.batch_size
    print(
        f"(a) reward training | model {model_path} | {len(pairs)} pairs ({source}) | max_length {args.max_length} "
        f"| batch {args.batch_size} | {args.steps} steps = {samples} pairs trained | {args.repeats} runs each"
    )
    runs: dict[str, list[Run]] = {"trl": [], "ours": []}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        for i in range(args.repeats + 1):  # run 0 warms both up (imports, kernels) and is discarded
            for name, fn in (("trl", run_plain_trl), ("ours", run_recipe)):
                out = Path(tmp) / f"{name}{i}"
                with common.quiet():
                    run = fn(model_path, pairs, args, out)
                shutil.rmtree(out, ignore_errors=True)
                if i:
                    runs[name].append(run)
    walls = {k: statistics.median(r.wall for r in v) for k, v in runs.items()}
    inner = {k: statistics.median(r.train_sps for r in v) for k, v in runs.items()}
    print(
        f"end to end wall s, each run: trl {[round(r.wall, 2) for r in runs['trl']]}, "
        f"ours {[round(r.wall, 2) for r in runs['ours']]}"
    )
    print(
        f"inside trainer.train() (trl's train_samples_per_second): trl {inner['trl']:.1f}, ours {inner['ours']:.1f} "
        f"samples/s, ratio {inner['ours'] / inner['trl']:.2f}x"
    )
    return common.compare(
        "reward samples/s end to end",
        "samples/s",
        samples / walls["trl"],
        samples / walls["ours"],
        GOAL_RATIO,
        baseline_label="plain trl RewardTrainer script",
        ours_label="ours (RECIPES['reward'].train)",
    )


# --- (b) label -> served model overhead --------------------------------------------------------------------------

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+: (.*)$")


@dataclass
class Event:
    """One worker log line: when (epoch seconds) and what."""

    at: float
    message: str


def read_log(path: Path) -> list[Event]:
    """The worker's log lines (configure_logging's format, millisecond stamps) as events."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        match = LOG_LINE.match(line)
        if match:
            stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            events.append(Event(stamp, match.group(2)))
    return events


def first(events: list[Event], after: float, pattern: str) -> float:
    """Time of the first log line at or after `after` whose message matches pattern (nan when absent)."""
    regex = re.compile(pattern)
    return next((e.at for e in events if e.at >= after - 0.0005 and regex.search(e.message)), float("nan"))


def start_worker(settings: Any, log: Path, preload: bool) -> tuple[subprocess.Popen, float]:
    """`python -m workers --queues train` as `make run` starts it (or with --no-preload); returns it once RQ lists
    it, and its start-up seconds."""
    from redis import Redis
    from rq import Worker

    env = common.settings_env(settings, LOG_LEVEL="INFO")
    command = ["-m", "workers", "--queues", "train", *([] if preload else ["--no-preload"])]
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, *command],
        cwd=common.ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    redis = Redis.from_url(settings.redis_url)
    while not Worker.all(connection=redis):
        if proc.poll() is not None or time.perf_counter() - began > 120:
            raise RuntimeError(f"worker did not start: {log.read_text()[-3000:]}")
        time.sleep(0.05)
    return proc, time.perf_counter() - began


def annotation_body(task_id: int, data: dict[str, str], label_config: str) -> dict[str, Any]:
    """An ANNOTATION_CREATED body as Label Studio sends it, for one task of the bench project."""
    body = common.payload("webhook-annotation-created.pairwise.json")
    body["project"]["label_config"] = label_config
    body["task"] = {"id": task_id, "data": data, "project": 1}
    body["annotation"].update(
        id=1000 + task_id,
        task=task_id,
        result=[
            {
                "from_name": "comparison",
                "to_name": "answer1",
                "type": "pairwise",
                "value": {"selected": "left" if task_id % 2 else "right"},
            }
        ],
    )
    return body


def wait_for_version(client: Any, wanted: str, timeout: float, seen: dict[str, float]) -> float:
    """Poll project 1's /versions every 5 ms until it serves `wanted`; records when each version first appeared."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        version = client.get("/projects/1/versions").json["current"]
        seen.setdefault(version, time.time())
        if version == wanted:
            return seen[version]
        time.sleep(0.005)
    raise RuntimeError(f"project 1 never served {wanted} within {timeout} s (saw {list(seen)})")


def seed_project(client: Any, config: str, n_tasks: int) -> dict[int, dict[str, str]]:
    """Connect project 1 (/setup) and create tasks that come with their two answers (no generation job needed)."""
    setup = common.payload("setup.pairwise.json") | {
        "schema": config,
        "hostname": "",
        "access_token": "",
        "project": "1.1",
    }
    client.post("/setup", json=setup)
    tasks = {
        i: {
            "prompt": f"Tell me fact number {i} about the sea.",
            "answer1": f"Fact {i}: it is salty.",
            "answer2": f"I am not sure about fact {i}.",
        }
        for i in range(1, n_tasks + 1)
    }
    project = common.payload("webhook-annotation-created.pairwise.json")["project"] | {"label_config": config}
    client.post(
        "/webhook",
        json={
            "action": "TASKS_CREATED",
            "project": project,
            "tasks": [{"id": i, "data": d, "project": 1} for i, d in tasks.items()],
        },
    )
    return tasks


def part_b(args: argparse.Namespace, model_path: str) -> bool:
    """Webhooks -> trigger -> reward job -> policy job -> promotion -> notification -> served, timed."""
    from backend.core.settings import Settings
    from backend.http.app import create_app
    from backend.store.registry import DiskRegistries
    from tests.support.tiny import TINY_TRAIN  # the training sizes the end-to-end tests use
    from workers.runtime.bootstrap import ensure_base_policy

    tmp = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    common.flush_bench_redis()
    settings = Settings(
        redis_url=common.BENCH_REDIS_URL,
        queue_prefix="bench",
        data_dir=tmp / "data",
        model_dir=tmp / "models",
        policy_model=model_path,
        retrain_every=args.retrain_every,
        train_args=TINY_TRAIN,
        algorithm=args.algorithm,
        label_studio_url="",
        label_studio_api_key="",
    )
    registries = DiskRegistries(Path(settings.model_dir))
    ensure_base_policy(registries.base, model_path)  # v0 exists, as on any start after the first
    registry = registries.lineage("project-1")
    config = common.LABEL_CONFIG.read_text()
    client = create_app(settings).test_client()
    tasks = seed_project(client, config, args.tasks)
    worker, startup = start_worker(settings, tmp / "worker.log", not args.no_preload)
    try:
        for task_id in range(1, args.retrain_every):
            client.post("/webhook", json=annotation_body(task_id, tasks[task_id], config))
        seen: dict[str, float] = {}
        t0 = time.time()
        answer = client.post(
            "/webhook", json=annotation_body(args.retrain_every, tasks[args.retrain_every], config)
        ).json
        if "training" not in answer:
            raise RuntimeError(f"the threshold webhook queued no training: {answer}")
        served = wait_for_version(client, "policy-v1.reward-v0", 600, seen)
        time.sleep(0.5)  # let the worker log its last lines
    finally:
        common.stop(worker)
    if args.worker_log:
        shutil.copy(tmp / "worker.log", args.worker_log)
    print(
        f"(b) label -> model | worker "
        f"{'with --no-preload' if args.no_preload else 'as shipped (job modules preloaded)'} | "
        f"start-up (imports, context, registering; paid once per worker, not counted): {startup:.2f} s | "
        f"`import workers.jobs.train` in a fresh process: {import_seconds():.2f} s"
    )
    report = breakdown(t0, served, seen, registry, read_log(tmp / "worker.log"))
    shutil.rmtree(tmp, ignore_errors=True)
    return report


def import_seconds() -> float:
    """What a forked work-horse pays before its job runs, when the worker did not import the job modules."""
    code = "import time; t = time.perf_counter(); import workers.jobs.train; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], cwd=common.ROOT, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def job_phases(
    kind: str, meta: dict[str, Any], log: list[Event], since: float
) -> tuple[list[tuple[str, float]], float]:
    """One training job's phases, from its meta.json stamps and the worker's log lines; returns them and its end."""
    metrics = meta["metrics"]
    dequeued = first(log, since, rf"train_{kind}\(")
    recipe = first(log, meta["started_at"], r"Config: \{")
    saved = first(log, recipe, r"^saved ")
    verified = first(log, saved, r"^loaded (policy|reward model) ")
    assessed = first(log, verified, r" on \d+ prompts: ") if kind == "policy" else verified
    announced = first(log, meta["promoted_at"], r"^announced ")
    done = first(log, announced, r"Job OK|Successfully completed")
    trainer = metrics["train_runtime"] + metrics.get("eval_runtime", 0.0)
    phases = [
        (f"{kind}: queue -> dequeued by the worker", dequeued - since),
        (
            f"{kind}: fork work-horse + job-module imports (unless preloaded) + job context + read data",
            meta["started_at"] - dequeued,
        ),
        (f"{kind}: recipe config", recipe - meta["started_at"]),
        (
            f"{kind}: model loads, tokenization, trainer build, save (recipe time minus trainer time)",
            saved - recipe - trainer,
        ),
        (
            f"{kind}: TRAINER TIME, subtracted (train_runtime{' + eval_runtime' if 'eval_runtime' in metrics else ''})",
            trainer,
        ),
        (f"{kind}: verify (reload the saved model)", verified - saved),
    ]
    if kind == "policy":
        phases.append(
            (
                "policy: HELD-OUT EVALUATION, subtracted (policy_metrics: 4 policy loads + reward load, sampling, KL)",
                assessed - verified,
            )
        )
    phases += [
        (f"{kind}: promote (meta.json, rename, CURRENT)", meta["promoted_at"] - assessed),
        (f"{kind}: notify (Redis publish)", announced - meta["promoted_at"]),
        (f"{kind}: job end (rmtree staging, enqueue generation, RQ bookkeeping)", done - announced),
    ]
    return phases, done


def breakdown(t0: float, served: float, seen: dict[str, float], registry: Any, log: list[Event]) -> bool:
    """Split label -> served into trainer and evaluation time (subtracted) and overhead, phase by phase."""
    reward, policy = registry.meta("reward", 0), registry.meta("policy", 1)
    reward_phases, reward_done = job_phases("reward", reward, log, t0)
    policy_phases, policy_done = job_phases("policy", policy, log, reward_done)
    phases = [
        *reward_phases,
        *policy_phases,
        ("policy announced -> /health serves it (watcher pub/sub + 5 ms polling)", served - policy_done),
    ]
    total = served - t0
    print(
        f"threshold webhook -> reward served: {seen.get('policy-v0.reward-v0', float('nan')) - t0:.2f} s, "
        f"-> policy-v1.reward-v0 served: {total:.2f} s"
    )
    for label, seconds in phases:
        print(f"  {seconds:8.3f} s  {label}")
    print(f"  {total - sum(s for _, s in phases):8.3f} s  unaccounted")
    subtracted = {label: seconds for label, seconds in phases if "subtracted" in label}
    overhead = total - sum(subtracted.values())
    print(
        f"meta.json seconds (job _run: train..promote): reward {reward['seconds']:.2f}, "
        f"policy {policy['seconds']:.2f}; "
        f"time outside the jobs' _run: {total - reward['seconds'] - policy['seconds']:.2f} s"
    )
    print(
        f"subtracted {sum(subtracted.values()):.2f} s: trl's train_runtime/eval_runtime from meta.json metrics, "
        "and the "
        f"policy evaluation (not recorded in meta.json; from the worker log, verify -> 'on N prompts' line)"
    )
    return common.verdict(
        f"label -> model overhead {total:.2f} s - {sum(subtracted.values()):.2f} s = {overhead:.2f} s",
        f"<= {GOAL_OVERHEAD_S:g} s",
        overhead <= GOAL_OVERHEAD_S,
    )


def main(argv: list[str] | None = None) -> bool:
    args = make_parser().parse_args(argv)
    common.header("training: reward recipe throughput and label -> model overhead")
    model_path = common.resolve_model(args.model)
    ok = True
    if args.part in ("a", "both"):
        ok &= part_a(args, model_path)
    if args.part in ("b", "both"):
        ok &= part_b(args, model_path)
    return ok


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
