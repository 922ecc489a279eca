"""The loop learns a known preference, through a real Label Studio.

A simulated annotator labels Pairwise tasks through Label Studio's API by a stated rule on single answers
(default: "the answer ends properly within 60 words"), preferring the passing answer (both pass or both
fail: the shorter), with a share of flipped labels. Everything else is the product as shipped: `connect`,
`import`, webhooks, pairs, the reward job, the policy recipe, the gates, regeneration, several rounds. At
the end each policy version is judged on held-out prompts that never went to Label Studio, by the rule
itself (not by any learned model), and each reward model's agreement with the rule is measured.

    .venv/bin/python bench/loop.py --quick          # ~9 min on 2 cores; PASS if the pass-rate rise's CI > 0
    .venv/bin/python bench/loop.py                  # DPO, 64 labels: goal +20 points within 45 min
    .venv/bin/python bench/loop.py --recipe ppo --rounds 1 --labels-per-round 48 --prompts 100   # PPO, capped
    .venv/bin/python bench/loop.py --quick --selection informative --candidates 4   # queue order, two of K shown
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import BENCH_REDIS_URL, ROOT, flush_bench_redis, free_port, header, resolve_model, stop, verdict
from everyday import RULES, everyday_prompts

from backend.core.stats import Rate, difference, rate

RECIPE_ARGS = {  # what the demo trains with on a CPU: one pass over the pairs, a learning rate that moves a
    # 135M model within a few dozen labels (the backend's defaults are for real projects)
    "reward": {"learning_rate": 2e-5, "num_train_epochs": 1, "max_length": 512},
    "dpo": {"learning_rate": 5e-5, "num_train_epochs": 1, "beta": 0.1, "max_length": 512},
    "ppo": {"total_episodes": 48, "num_ppo_epochs": 2, "per_device_train_batch_size": 8, "learning_rate": 1e-5,
            "response_length": 96},
    "grpo": {"max_steps": 8, "num_generations": 4, "per_device_train_batch_size": 4, "learning_rate": 1e-6},
    "rloo": {"max_steps": 8, "num_generations": 4, "per_device_train_batch_size": 4, "learning_rate": 1e-6},
}


@dataclass
class Stack:
    """Label Studio, the backend and two workers, as `make run` starts them, on this run's own store and registry."""

    work: Path
    env: dict[str, str]
    url: str
    ls_url: str
    ls_token: str
    processes: list[subprocess.Popen] = field(default_factory=list)
    label_studio: Any = None

    def cli(self, *args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "backend", *args], env=self.env, cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
        if out.returncode != 0:
            raise SystemExit(f"`python -m backend {' '.join(args[:1])}` failed: {out.stderr.strip()[-1500:]}")
        return out.stdout

    def status(self) -> dict[str, Any]:
        return json.loads(self.cli("status", "--json"))

    def stop(self) -> None:
        for proc in self.processes:
            stop(proc)
        if self.label_studio is not None:
            self.label_studio.stop()


def start(args: argparse.Namespace, work: Path) -> Stack:
    """Start (or use) Label Studio, then the backend and a generation and a training worker."""
    label_studio = None
    if args.label_studio:
        ls_url, token = args.label_studio, args.token
    else:
        from labelstudio_server import start_label_studio

        label_studio = start_label_studio(work / "label-studio")
        ls_url, token = label_studio.url, label_studio.token
    port = free_port()
    train_args = {k: v for k, v in RECIPE_ARGS.items() if k in ("reward", args.recipe)}
    if args.learning_rate:
        train_args[args.recipe] = {**train_args[args.recipe], "learning_rate": args.learning_rate}
    # LOCAL_WORKERS=2 as in `make run`: a torch thread per job, so that jobs which overlap (scoring after a new
    # reward model, while the policy trains) never oversubscribe the cores; with 2 threads each, DPO steps took
    # 60 s instead of 20 s while the scoring ran. --quick uses 1: its only overlap, that scoring, lasts a minute,
    # and every other step then runs on both cores
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "REDIS_URL": BENCH_REDIS_URL,
           "QUEUE_PREFIX": "rlhf-loop", "DATA_DIR": str(work / "data"), "MODEL_DIR": str(work / "models"),
           "POLICY_MODEL": resolve_model(args.model), "PORT": str(port), "ALGORITHM": args.recipe,
           "RETRAIN_EVERY": str(args.labels_per_round), "MAX_NEW_TOKENS": str(args.max_new_tokens),
           "TRAIN_ARGS": json.dumps(train_args), "LABEL_STUDIO_URL": ls_url, "LABEL_STUDIO_API_KEY": token,
           "LOCAL_WORKERS": str(args.local_workers), "RECONCILE_SECONDS": "5", "KL_BUDGET": str(args.kl_budget), "SEED": str(args.seed),
           "SELECTION": args.selection, "NUM_CANDIDATES": str(args.candidates)}
    stack = Stack(work, env, f"http://127.0.0.1:{port}", ls_url, token, label_studio=label_studio)
    logs = work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for name, argv in (("generate", ["-m", "workers", "--queues", "generate"]),
                       ("train", ["-m", "workers", "--queues", "train"]),
                       ("backend", ["-m", "backend", "serve", "--host", "127.0.0.1"])):
        stack.processes.append(subprocess.Popen([sys.executable, *argv], env=env, cwd=ROOT, start_new_session=True,
                                                stdout=open(logs / f"{name}.log", "w"), stderr=subprocess.STDOUT))
    import requests

    deadline = time.monotonic() + 180
    while True:
        try:
            if requests.get(f"{stack.url}/health", timeout=1).ok:
                return stack
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or any(p.poll() is not None for p in stack.processes):
            stack.stop()
            raise SystemExit(f"the backend did not come up; see {logs}")
        time.sleep(0.5)


def prefer(a: str, b: str, rule: Any, rng: random.Random, noise: float) -> str:
    """The simulated annotator: the answer that passes; if both or neither, the shorter; flipped with `noise`."""
    left = rule(a) if rule(a) != rule(b) else len(a.split()) <= len(b.split())
    if rng.random() < noise:
        left = not left
    return "left" if left else "right"


def on_policy_tasks(client: Any, project: int, version: int, labelled: set[int]) -> list[dict[str, Any]]:
    """Unlabelled tasks showing candidates of the served policy `version`."""
    from backend.core import labelstudio

    return [t for t in labelstudio.list_tasks(client, project)
            if t["id"] not in labelled and str(t["data"].get("generation", "")).startswith(f"p{version}-")
            and t["data"].get("answer1") and t["data"].get("answer2")]


def next_in_queue(stack: Stack, project: int) -> dict[str, Any]:
    """The task Label Studio's labeling stream serves next (`/api/projects/N/next`, what "Label All Tasks" opens)."""
    import requests

    r = requests.get(f"{stack.ls_url}/api/projects/{project}/next", timeout=30,
                     headers={"Authorization": f"Token {stack.ls_token}"})
    r.raise_for_status()
    return r.json()


def lowest_scored(client: Any, project: int, labelled: set[int]) -> set[int]:
    """Unlabelled tasks holding the lowest prediction score of the project's model version in Label Studio."""
    version = client.projects.get(project).model_version
    scores = {p.task: p.score for p in client.predictions.list(project=project)
              if p.model_version == version and p.task not in labelled and p.score is not None}
    low = min(scores.values(), default=None)
    return {t for t, v in scores.items() if v == low}


def wait(predicate: Any, timeout: float, what: str, stack: Stack) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        failed = [j for j in stack.status()["jobs"] if j["status"] == "failed"]
        if failed:
            raise SystemExit(f"a job failed while waiting for {what}: {failed[0].get('error')}")
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}; logs in {stack.work / 'logs'}")
        time.sleep(3)
    return value


def run_rounds(args: argparse.Namespace, stack: Stack, prompts: list[str], started: float) -> tuple[int, dict[int, int]]:
    """Connect, import, then label and retrain round after round; returns (project, labels behind each policy)."""
    from backend.core import labelstudio
    from backend.core.registry import Registries

    out = stack.cli("connect", "--url", stack.ls_url, "--api-key", stack.ls_token, "--backend-url", stack.url,
                    "--title", f"RLHF demo: {args.rule}, {args.recipe}")
    project = int(out.split("project ")[-1].split()[0])
    prompts_file = stack.work / "prompts.txt"
    prompts_file.write_text("\n".join(prompts) + "\n")
    stack.cli("import", "--project", str(project), str(prompts_file))
    registry = Registries(Path(stack.env["MODEL_DIR"])).lineage(f"project-{project}")
    client = labelstudio.client(stack.ls_url, stack.ls_token)
    rule, rng = RULES[args.rule], random.Random(args.seed)
    labelled: set[int] = set()
    labels_of: dict[int, int] = {0: 0}
    for round_ in range(1, args.rounds + 1):
        served = registry.current("policy") or 0
        tasks = wait(lambda: len(t := on_policy_tasks(client, project, served, labelled)) >= args.labels_per_round
                     and t, args.round_timeout, f"candidates of policy v{served}", stack)
        passing, first_in_queue = 0, 0
        queue = (next_in_queue(stack, project) for _ in range(args.labels_per_round)) \
            if args.selection == "informative" else iter(rng.sample(tasks, args.labels_per_round))
        for task in queue:
            if args.selection == "informative":  # as an annotator gets it: Label Studio's next task
                first_in_queue += task["id"] in lowest_scored(client, project, labelled)
            a, b = task["data"]["answer1"], task["data"]["answer2"]
            passing += rule(a) + rule(b)
            client.annotations.create(id=task["id"], result=[{"from_name": "comparison", "to_name": "answer1",
                                                              "type": "pairwise",
                                                              "value": {"selected": prefer(a, b, rule, rng, args.noise)}}])
            labelled.add(task["id"])
        if args.selection == "informative":
            print(f"  queue order: {first_in_queue}/{args.labels_per_round} tasks Label Studio served were the "
                  f"lowest-scored (the most informative) when served", flush=True)
        before = len(registry.versions("policy"))
        print(f"round {round_}: labelled {args.labels_per_round} tasks of policy v{served} "
              f"({passing}/{2 * args.labels_per_round} answers pass), {len(labelled)} labels in all; training "
              f"({(time.monotonic() - started) / 60:.1f} min)", flush=True)
        try:
            wait(lambda: len(registry.versions("policy")) > before, args.round_timeout, f"round {round_}'s policy", stack)
        except SystemExit as stopped:  # judge what was made so far rather than nothing
            print(f"  stopped: {stopped}", flush=True)
            break
        newest = registry.versions("policy")[-1]
        labels_of[newest] = len(labelled)
        gate = registry.meta("policy", newest).get("gate", {})
        print(f"  policy v{newest}: {gate.get('status')} ({gate.get('reason', '')[:160]}); serving "
              f"{registry.model_version()} ({(time.monotonic() - started) / 60:.1f} min)", flush=True)
    return project, labels_of


def evaluate(args: argparse.Namespace, stack: Stack, project: int, held_out: list[str]) -> list[dict[str, Any]]:
    """Each policy version on the held-out prompts, judged by the rule; each reward model against the rule."""
    import torch

    from backend.core.registry import Registries
    from backend.core.settings import Settings
    from workers.evaluate import reward_correct
    from workers.generation import SamplingConfig, candidates
    from workers.loading import inference_dtype, load_policy

    registry = Registries(Path(stack.env["MODEL_DIR"])).lineage(f"project-{project}")
    rule = RULES[args.rule]
    cfg = SamplingConfig.from_settings(Settings(max_new_tokens=args.max_new_tokens), args.eval_samples)
    prompts = [p for p in held_out for _ in range(args.eval_samples)]
    rows, answers = [], {}
    for version in registry.versions("policy"):  # sampled as candidates are: what annotators would be shown
        torch.manual_seed(args.seed)
        model, tokenizer = load_policy(registry.path("policy", version), inference_dtype())
        answers[version] = [a for group in candidates(model, tokenizer, held_out, cfg) for a in group]
        del model
        meta = registry.meta("policy", version)
        rows.append({"kind": "policy", "version": version, "recipe": meta.get("recipe", "base"),
                     "gate": (meta.get("gate") or {}).get("status", "-"), "current": version == registry.current("policy"),
                     "pass": rate(sum(map(rule, answers[version])), len(prompts)),
                     "kl": (meta.get("metrics") or {}).get("kl", 0.0), "promoted_at": meta.get("promoted_at")})
    first, last = answers[min(answers)], answers[max(answers)]
    pairs = [{"prompt": p, "chosen": a if rule(a) else b, "rejected": b if rule(a) else a}
             for p, a, b in zip(prompts, first, last) if rule(a) != rule(b)]
    for version in registry.versions("reward"):
        meta = registry.meta("reward", version)
        correct = reward_correct(registry.path("reward", version), pairs)
        rows.append({"kind": "reward", "version": version, "recipe": "reward",
                     "gate": (meta.get("gate") or {}).get("status", "-"), "current": version == registry.current("reward"),
                     "agreement": rate(sum(correct), len(correct)), "promoted_at": meta.get("promoted_at")})
    return rows


def report(args: argparse.Namespace, rows: list[dict[str, Any]], labels_of: dict[int, int], started_wall: float,
           out: Path) -> bool:
    """The table, the PNG and the verdict."""
    policies = [r for r in rows if r["kind"] == "policy"]
    print(f"\nrule: {args.rule} ({RULES[args.rule].__doc__}) | recipe {args.recipe} | noise {args.noise:.0%} | "
          f"held-out {args.held_out} prompts x {args.eval_samples} samples")
    print(f"{'version':<10} {'recipe':<7} {'gate':<11} {'labels':>6} {'min':>6}  {'rule pass rate [95% CI] n':<30} {'KL':>7}")
    for r in policies:
        minutes = (r["promoted_at"] - started_wall) / 60 if r["promoted_at"] and r["version"] else 0.0
        print(f"policy v{r['version']:<2}{'*' if r['current'] else ' '}{r['recipe']:<7} {r['gate']:<11} "
              f"{labels_of.get(r['version'], 0):>6} {minutes:>6.1f}  {str(r['pass']):<30} {r['kl']:>7.3f}")
    for r in (r for r in rows if r["kind"] == "reward"):
        print(f"reward v{r['version']:<2}{'*' if r['current'] else ' '}{'':<7} {r['gate']:<11} {'':>6} {'':>6}  "
              f"agreement with the rule {r['agreement']}")
    print("(* = served at the end; agreement: on held-out answer pairs of v0 and the last policy where exactly one passes)")
    served = next(r for r in policies if r["current"])
    change = difference(policies[0]["pass"], served["pass"])
    total = (time.time() - started_wall) / 60
    _plot(args, rows, out)
    print(f"plot written to {out}")
    if change is None:
        return verdict("no pass rate", "a change", False)
    d, low, high = change
    measured = (f"pass rate v0 {policies[0]['pass'].value:.3f} -> served v{served['version']} {served['pass'].value:.3f}: "
                f"{d * 100:+.1f} points [95% CI {low * 100:+.1f}, {high * 100:+.1f}], KL {served['kl']:.3f}, {total:.1f} min")
    if args.quick:
        return verdict(measured, "lower end of the CI above 0", low > 0)
    return verdict(measured, f"+20 points, KL <= {args.kl_budget}, <= 45 min",
                   d >= 0.20 and served["kl"] <= args.kl_budget and total <= 45)


def _plot(args: argparse.Namespace, rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, kind, key, title in ((axes[0], "policy", "pass", f"served policy: rule pass rate on held-out prompts"),
                                 (axes[1], "reward", "agreement", "reward model: agreement with the rule")):
        for r in (r for r in rows if r["kind"] == kind and r[key].value is not None):
            value: Rate = r[key]
            style = ("x", "tab:red") if r["gate"] == "rejected" else ("o", "tab:blue")
            ax.errorbar([r["version"]], [value.value], yerr=[[value.value - value.low], [value.high - value.value]],
                        fmt=style[0], color=style[1], capsize=4, markersize=8)
            ax.annotate(f"n={value.n}", (r["version"], value.high), textcoords="offset points", xytext=(0, 4),
                        ha="center", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("version")
        ax.set_ylim(0, 1.08)
        versions = [r["version"] for r in rows if r["kind"] == kind]
        if versions:
            ax.set_xticks(versions, [f"v{v}" for v in versions])
            ax.set_xlim(min(versions) - 0.5, max(versions) + 0.5)
    fig.suptitle(f"bench/loop.py: rule '{args.rule}', {args.recipe}, 95 % CI (x = rejected by its gate)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="one round, fewer prompts: about 9 minutes on 2 cores")
    p.add_argument("--recipe", default="dpo", choices=["dpo", "ppo", "grpo", "rloo"])
    p.add_argument("--rule", default="short", choices=sorted(RULES))
    p.add_argument("--noise", type=float, default=0.1, help="share of flipped labels")
    p.add_argument("--rounds", type=int, default=1, help="label-train-regenerate rounds (each ~20 min on 2 CPU cores)")
    p.add_argument("--labels-per-round", type=int, default=64)
    p.add_argument("--prompts", type=int, default=120, help="prompts imported into Label Studio")
    p.add_argument("--held-out", type=int, default=60, help="prompts kept out of Label Studio, for the verdict")
    p.add_argument("--eval-samples", type=int, default=2, help="answers per held-out prompt and version")
    p.add_argument("--max-new-tokens", type=int, default=192, help="long enough that most answers end: then "
                   "'the shorter' is a real preference, not two cut-off answers")
    p.add_argument("--learning-rate", type=float, help="the policy recipe's learning rate (default: RECIPE_ARGS)")
    p.add_argument("--kl-budget", type=float, default=0.5)
    p.add_argument("--local-workers", type=int, default=2, help="LOCAL_WORKERS: each job gets cores / this many threads")
    p.add_argument("--selection", default="random", choices=["random", "informative"],
                   help="SELECTION: informative = the annotator takes Label Studio's next task (queue ordered by the "
                   "reward head) and Pairwise shows the most informative two of --candidates")
    p.add_argument("--candidates", type=int, default=2, help="NUM_CANDIDATES: answers sampled per prompt")
    p.add_argument("--model", default="embedded", help="embedded (SmolLM2-135M-Instruct), tiny, or a local dir")
    p.add_argument("--label-studio", help="use this Label Studio URL instead of starting one (needs --token)")
    p.add_argument("--token")
    p.add_argument("--round-timeout", type=float, default=3600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=ROOT / ".cache" / "loop")
    p.add_argument("--out", type=Path, default=ROOT / ".cache" / "loop.png")
    args = p.parse_args()
    if args.quick:  # lr 1e-4: +0.0 points; 36 labels: +6.2 [-1.8, +15.5] in 10.1 min; 40: +45.0 in 10.7 (bench/README)
        # few spare prompts: generation ends as labelling starts, so jobs barely overlap and each gets both cores
        args.rounds, args.labels_per_round, args.prompts, args.held_out = 1, 40, 44, 40
        args.local_workers = 1
    header(f"loop: {args.recipe}, rule {args.rule}{' (quick)' if args.quick else ''}")
    prompts = everyday_prompts(args.seed)
    held_out, imported = prompts[:args.held_out], prompts[args.held_out:args.held_out + args.prompts]
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    flush_bench_redis()
    started, started_wall = time.monotonic(), time.time()
    stack = start(args, args.work)
    try:
        project, labels_of = run_rounds(args, stack, imported, started)
    finally:
        stack.stop()
    print(f"loop done in {(time.monotonic() - started) / 60:.1f} min; judging every version on held-out prompts", flush=True)
    rows = evaluate(args, stack, project, held_out)
    return 0 if report(args, rows, labels_of, started_wall, args.out) else 1


if __name__ == "__main__":
    sys.exit(main())
