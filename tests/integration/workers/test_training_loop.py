"""The whole loop on CPU: webhooks -> coalesced trigger -> reward job -> policy job (real RQ worker, real trl)
-> versions promoted -> the served model_version changes -> stale candidates regenerated and scored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest

from backend.background.reconciler import Reconciler
from backend.http.app import create_app
from backend.store import Store
from tests.support.objectstore import bucket_url
from tests.support.payloads import annotation_created, payload, queued_training, tasks_created
from tests.support.services import run_worker
from tests.support.settings import ROOT, make_settings, registries_of, settings_env
from tests.support.tiny import TINY_TRAIN
from tests.support.wait import wait_for
from workers.jobs.train import held_out
from workers.ml.loading import inference_dtype, load_reward
from workers.ml.scoring import score

PROMPTS = [f"Tell me fact number {i} about the sea." for i in range(10)]


@pytest.fixture
def loop(tmp_path, tiny_model, redis):
    # GATES=false: these tests follow the loop's mechanics, and a tiny random model's two steps need not raise its
    # own objective (the gate would reject the round; test_gates and the rejection test below cover gating)
    settings = make_settings(
        tmp_path,
        tiny_model,
        train_args=TINY_TRAIN,
        retrain_every=4,
        preselect_choice=True,
        gates=False,
        algorithm="ppo",  # the recipe the project owns
    )
    client = create_app(settings).test_client()
    return settings, client, Store(settings.sqlalchemy_url), registries_of(settings).lineage("project-1")


def annotate(client, store: Store, task_id: int, annotation_id: int, selected: str = "left") -> dict:
    data = store.tasks([task_id])[task_id].data
    response = client.post("/webhook", json=annotation_created(task_id, annotation_id, data, selected))
    assert response.status_code == 200, response.json
    return response.json


def project_with_candidates(settings, client, store: Store, extra_params: str | None = None) -> None:
    body = payload("setup.pairwise.json") | {
        "schema": (ROOT / "label_config.xml").read_text(),
        "hostname": "",
        "access_token": "",
        "extra_params": extra_params,
    }
    assert client.post("/setup", json=body).status_code == 200
    tasks = [(i + 1, {"prompt": p, "answer1": "", "answer2": ""}) for i, p in enumerate(PROMPTS)]
    created = tasks_created(1, tasks)
    created["project"]["label_config"] = body["schema"]
    client.post("/webhook", json=created)
    run_worker(settings)
    assert all(t.candidates for t in store.project_tasks(1))


def job_pending(client, kind: str) -> bool:
    """Whether /status lists a job of that kind that has not finished."""
    return any(j["kind"] == kind and j["status"] != "finished" for j in client.get("/status").json["jobs"])


def served_version(client, expected: str, timeout: float = 5.0) -> str:
    """The model_version /setup reports, waiting briefly for the Redis notification or the poll."""
    seen: list[str] = []

    def version() -> str | None:
        seen.append(
            client.post(
                "/setup", json=payload("setup.pairwise.json") | {"hostname": "", "access_token": "", "project": "1.1"}
            ).json["model_version"]
        )
        return seen[-1] if seen[-1] == expected else None

    return wait_for(version, timeout, 0.1, lambda: f"{expected} to be served (last served: {seen[-1]})")


def test_ppo_loop_end_to_end(loop) -> None:
    settings, client, store, registry = loop
    project_with_candidates(settings, client, store)
    answers = [
        annotate(client, store, task_id, 100 + task_id, "left" if task_id % 2 else "right") for task_id in range(1, 5)
    ]
    assert ["training" in a for a in answers] == [False, False, False, True]  # RETRAIN_EVERY=4
    chain = queued_training(client, store)
    assert "training" not in annotate(client, store, 5, 105, "left")
    pressed = client.post("/webhook", json=payload("webhook-start-training.pairwise.json")).json
    assert pressed["coalesced"] and sorted(pressed["training"]) == chain  # one chain, not two

    run_worker(settings)

    assert registry.versions("reward") == [0] and registry.versions("policy") == [0, 1]
    assert served_version(client, "policy-v1.reward-v0") == "policy-v1.reward-v0"
    status = client.get("/status").json
    models = status["lineages"]["project-1"]["models"]
    reward_meta, policy_meta = models["reward"][0], models["policy"][1]
    assert 0.0 <= reward_meta["metrics"]["eval_accuracy"] <= 1.0
    assert policy_meta["recipe"] == "ppo" and policy_meta["parents"] == {"policy": 0, "reward": 0, "reference": 0}
    for key in ("reward_before", "reward_after", "kl", "win_rate", "own_reward_before", "own_reward_after"):
        assert isinstance(policy_meta["metrics"][key], float)
    kinds = sorted((j["kind"], j["status"]) for j in status["jobs"])
    assert ("ppo", "finished") in kinds and ("reward", "finished") in kinds
    assert "policy-v1.reward-v0" in client.get("/projects/1/versions").json["versions"]

    labeled = store.labeled_task_ids(1)
    reward, tokenizer = load_reward(registry.path("reward", 0), inference_dtype(settings.generation_dtype))
    for task in store.project_tasks(1):  # unlabeled tasks got the new policy's answers, labeled ones kept theirs
        assert task.policy_version == (0 if task.id in labeled else 1), task.id
        assert task.reward_version == 0 and len(task.scores) == 2
        # each candidate records how it ended, in the store and in Label Studio's data, and is scored by it
        assert task.finished == task.data["finished"] and {type(f) for f in task.finished} == {bool}
        # (bf16 where the CPU runs it natively: a batch of other lengths moves a score by a bf16 step, 0.008 at
        # most here, far below the penalty of 1.0 a wrong reading would add)
        assert task.scores == pytest.approx(
            score(
                reward,
                tokenizer,
                [task.data["prompt"]] * 2,
                task.candidates,
                task.finished,
                settings.missing_eos_penalty,
            ),
            abs=1e-2,
        )
    answers = status["projects"]["1"]["answers"]
    assert answers["unknown"] == 0 and set(answers["by_policy"]) == {"v0", "v1"}, answers
    unlabeled = next(t for t in store.project_tasks(1) if t.id not in labeled)
    predict = payload("predict.pairwise.json")
    predict["tasks"] = [{"id": unlabeled.id, "data": unlabeled.data}]
    result = client.post("/predict", json=predict).json["results"][0]
    assert result["model_version"] == "policy-v1.reward-v0" and 0.5 <= result["score"] <= 1.0
    picked = result["result"][0]["value"]["selected"]
    assert picked == ("left" if unlabeled.scores[0] >= unlabeled.scores[1] else "right")


def test_dpo_chosen_per_project(loop) -> None:
    settings, client, store, registry = loop
    project_with_candidates(settings, client, store, extra_params=json.dumps({"algorithm": "dpo"}))
    for task_id in range(1, 5):
        annotate(client, store, task_id, 200 + task_id)
    queued_training(client, store)
    run_worker(settings)
    assert registry.current("policy") == 1 and registry.meta("policy", 1)["recipe"] == "dpo"
    assert served_version(client, "policy-v1.reward-v0") == "policy-v1.reward-v0"


def dpo_chain(tmp_path, tiny_model, **overrides):
    """A project whose four labels have run one DPO chain (reward, then policy) with these settings."""
    settings = make_settings(tmp_path, tiny_model, train_args=TINY_TRAIN, retrain_every=4, algorithm="dpo", **overrides)
    client = create_app(settings).test_client()
    store, registry = Store(settings.sqlalchemy_url), registries_of(settings).lineage("project-1")
    project_with_candidates(settings, client, store)
    for task_id in range(1, 5):
        annotate(client, store, task_id, 700 + task_id)
    queued_training(client, store)
    run_worker(settings)
    return settings, client, store, registry


def test_a_rejected_policy_is_kept_never_served_and_force_serves_it(tmp_path, tiny_model, redis) -> None:
    """KL_BUDGET=0 makes any trained policy 'drift too far': the gate rejects it, the old one keeps serving,
    the chain still completes (its trigger is cleared), and `promote --force` serves it anyway."""
    settings, client, store, registry = dpo_chain(tmp_path, tiny_model, kl_budget=0.0)

    assert registry.versions("policy") == [0, 1] and registry.current("policy") == 0
    gate = registry.meta("policy", 1)["gate"]
    assert gate["status"] == "rejected" and "KL_BUDGET" in gate["reason"]
    assert registry.meta("reward", 0)["gate"]["status"] == "unassessed"  # the lineage's first reward model
    assert served_version(client, "policy-v0.reward-v0") == "policy-v0.reward-v0"
    versions = client.get("/projects/1/versions").json["versions"]
    assert "policy-v0.reward-v0" in versions and not any(v.startswith("policy-v1") for v in versions)
    status = client.get("/status").json
    assert status["lineages"]["project-1"]["models"]["policy"][1]["gate"]["status"] == "rejected"
    assert status["lineages"]["project-1"]["due"] is None and status["projects"]["1"]["new_pairs"] == 0
    assert all(t.policy_version == 0 for t in store.project_tasks(1))  # nothing regenerated from a rejected policy

    env, cli = settings_env(settings), [sys.executable, "-m", "backend"]
    text = subprocess.run([*cli, "status", "--project", "1"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert "policy v1 dpo REJECTED" in text.stdout and "KL_BUDGET" in text.stdout, text.stderr
    refused = subprocess.run(
        [*cli, "promote", "--project", "1", "policy", "v1"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert refused.returncode == 2 and "--force" in refused.stderr
    forced = subprocess.run(
        [*cli, "promote", "--force", "--project", "1", "policy", "v1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert forced.returncode == 0, forced.stderr
    assert served_version(client, "policy-v1.reward-v0") == "policy-v1.reward-v0"
    assert registry.meta("policy", 1)["gate"]["forced"] is True
    back = subprocess.run(
        [*cli, "rollback", "--project", "1", "policy", "v0"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert back.returncode == 0 and served_version(client, "policy-v0.reward-v0") == "policy-v0.reward-v0"


def test_human_judged_tasks_pair_new_and_previous_policy_blind(tmp_path, tiny_model, redis) -> None:
    """HUMAN_JUDGE_FRACTION=1: after policy v1, regenerated tasks show one answer of v1 and one of v0; the
    annotators' choices give a human win-rate per version in /status, kept out of training by default; and
    each pair keeps who labelled it (Label Studio's completed_by)."""
    settings, client, store, registry = dpo_chain(tmp_path, tiny_model, human_judge_fraction=1.0)
    assert registry.current("policy") == 1
    judged = [t for t in store.project_tasks(1) if t.policy_version == 1]
    assert len(judged) == len(PROMPTS) - 4
    policies = {}
    for task in judged:
        [generation] = [g for g in store.generations(task.id) if g.id == task.generation]
        assert sorted(generation.policies) == [0, 1] and generation.candidates == task.candidates
        policies[task.id] = generation.policies
    assert len({tuple(p) for p in policies.values()}) == 2  # the new policy's answer is not always on one side
    for i, task in enumerate(judged[:3]):  # the annotator prefers the new policy's answer twice out of three
        new_side = "left" if policies[task.id][0] == 1 else "right"
        annotate(
            client, store, task.id, 900 + task.id, new_side if i < 2 else {"left": "right", "right": "left"}[new_side]
        )
    human = client.get("/status").json["lineages"]["project-1"]["human_judged"]
    assert human["policy v1 vs v0"]["k"] == 2 and human["policy v1 vs v0"]["n"] == 3
    assert human["policy v1 vs v0"]["low"] < 2 / 3 < human["policy v1 vs v0"]["high"]
    assert len(store.pairs("project-1", judged=True)) == 7 and len(store.pairs("project-1", judged=False)) == 4
    assert {p["annotator"] for p in store.export_pairs(1)} == {1}  # completed_by of the captured payload
    # HUMAN_JUDGE_TRAIN=false: no recipe trains on the labels that judge it (DPO read them all before)
    unjudged = [p for p in store.pairs("project-1", judged=False) if not held_out(p["prompt"], settings.seed)]
    for algorithm in ("dpo", "ppo", "grpo", "rloo"):
        store.save_project(1, algorithm=algorithm)
        assert client.post("/webhook", json=payload("webhook-start-training.pairwise.json")).status_code == 200
        # a busy Redis defers the chain to the backend's thread: wait for it
        wait_for(partial(job_pending, client, algorithm), 15, 0.1, f"a {algorithm} job to be queued")
        worker = run_worker(settings)
        reward, policy = (registry.meta(kind, max(registry.versions(kind))) for kind in ("reward", "policy"))
        assert policy["recipe"] == algorithm, worker.stderr[-4000:]
        assert policy["data"]["pairs"] == len(unjudged), policy["data"]
        assert reward["data"]["pairs"] + reward["data"]["held_out_pairs"] == 4, reward["data"]


def test_failing_policy_job_keeps_the_old_policy_serving(tmp_path, tiny_model, redis) -> None:
    broken = {**TINY_TRAIN, "ppo": {**TINY_TRAIN["ppo"], "per_device_train_batch_size": 64}}  # more than the prompts
    settings = make_settings(tmp_path, tiny_model, train_args=broken, retrain_every=4, algorithm="ppo")
    client, store, registry = (
        create_app(settings).test_client(),
        Store(settings.sqlalchemy_url),
        registries_of(settings).lineage("project-1"),
    )
    project_with_candidates(settings, client, store)
    for task_id in range(1, 5):
        annotate(client, store, task_id, 300 + task_id)
    queued_training(client, store)
    run_worker(settings)
    assert registry.versions("policy") == [0] and registry.current("policy") == 0
    failed = [j for j in client.get("/status").json["jobs"] if j["status"] == "failed"]
    assert [j["kind"] for j in failed] == ["ppo"] and "prompts" in failed[0]["error"]
    assert not list(Path(settings.model_dir).rglob(".tmp-*"))  # staging was cleaned up
    # the next trigger is not blocked by the failed chain
    assert "training" in client.post("/webhook", json=payload("webhook-start-training.pairwise.json")).json


def children(pid: int) -> list[int]:
    """Processes whose parent is pid (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_killed_job_leaves_no_partial_version(tmp_path, tiny_model, redis) -> None:
    slow = {**TINY_TRAIN, "reward": {**TINY_TRAIN["reward"], "max_steps": 100000}}
    settings = make_settings(tmp_path, tiny_model, train_args=slow, retrain_every=4, algorithm="ppo")
    client, store, registry = (
        create_app(settings).test_client(),
        Store(settings.sqlalchemy_url),
        registries_of(settings).lineage("project-1"),
    )
    project_with_candidates(settings, client, store)
    for task_id in range(1, 5):
        annotate(client, store, task_id, 400 + task_id)
    worker = subprocess.Popen(
        [sys.executable, "-m", "workers", "--queues", "train"],
        env=settings_env(settings),
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def reward_jobs() -> list[dict]:
            return [j for j in client.get("/status").json["jobs"] if j["kind"] == "reward"]

        wait_for(lambda: any(j.get("progress") for j in reward_jobs()), 120, 0.5, "the reward job to report progress")
        horses = children(worker.pid)  # RQ runs the job in a forked work-horse, in a session of its own
        assert horses, "the worker has no work-horse running the job"
        assert list(Path(settings.model_dir).rglob(".tmp-*")), "the job trains into a staging directory"
        for pid in horses:
            os.kill(pid, signal.SIGKILL)  # the job dies mid-training
        wait_for(
            lambda: any(j["status"] == "failed" for j in reward_jobs()),
            120,
            0.2,
            "the worker to notice its work-horse died",
        )
    finally:
        for pid in children(worker.pid):
            os.kill(pid, signal.SIGKILL)
        os.killpg(worker.pid, signal.SIGKILL)  # and its worker with it
        worker.wait(10)
    assert registry.versions("reward") == [] and registry.current("reward") is None
    assert served_version(client, "policy-v0") == "policy-v0"
    done = Reconciler(
        client.application.extensions["rlhf"].annotations, client.application.extensions["rlhf_registries"]
    ).run_once()  # notices the failure at once:
    assert not list(Path(settings.model_dir).rglob(".tmp-*"))  # staging removed,
    jobs = client.get("/status").json["jobs"]
    # the chain's policy step, which would have waited forever, cancelled; the trigger still due: a new chain
    assert sorted(j["status"] for j in jobs if j["kind"] == "ppo") == ["canceled", "deferred"]
    assert done["trained"] == ["project-1"] and store.due_lineages(4)


def test_rollback_and_report_cli(loop, tmp_path) -> None:
    settings, client, store, registry = loop
    project_with_candidates(settings, client, store)
    for task_id in range(1, 5):
        annotate(client, store, task_id, 500 + task_id)
    run_worker(settings)
    env = settings_env(settings)
    cli = [sys.executable, "-m", "backend"]
    out = subprocess.run(
        [*cli, "rollback", "--project", "1", "policy", "v0"], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert served_version(client, "policy-v0.reward-v0") == "policy-v0.reward-v0"
    png = tmp_path / "report.png"
    out = subprocess.run(
        [*cli, "report", "--project", "1", "--out", str(png)], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "held-out accuracy" in out.stdout
    status = subprocess.run([*cli, "status", "--project", "1"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert "policy v1" in status.stdout and "reward v0 (current)" in status.stdout


def test_sft_from_a_file_makes_a_new_policy_version(tmp_path, tiny_model, redis) -> None:
    settings = make_settings(tmp_path, tiny_model, train_args=TINY_TRAIN)
    rows = tmp_path / "sft.jsonl"
    rows.write_text("\n".join(json.dumps({"prompt": p, "response": "The sea is salty."}) for p in PROMPTS))
    out = subprocess.run(
        [sys.executable, "-m", "backend", "train", "sft", "--data", str(rows), "--lineage", "project-1"],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0 and "queued SFT job" in out.stdout, out.stderr
    worker = run_worker(settings)
    registry = registries_of(settings).lineage("project-1")
    assert registry.current("policy") == 1, worker.stderr[-3000:]
    assert registry.meta("policy", 1)["recipe"] == "sft"
    assert registry.meta("policy", 1)["data"]["rows"] == len(PROMPTS)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": 1}\n')
    out = subprocess.run(
        [sys.executable, "-m", "backend", "train", "sft", "--data", str(bad), "--lineage", "project-1"],
        env=settings_env(settings),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0 and "prompt" in out.stderr


def test_the_loop_with_models_on_object_storage_and_a_cache_per_host(tmp_path, tiny_model, redis, s3) -> None:
    """MODEL_DIR=s3://... (a real S3 API): the backend, a generation worker and a training worker each keep
    their own cache and share no model directory; a round trains, the backend serves it, the generation
    worker writes the new policy's answers from what it fetched."""
    settings = make_settings(
        tmp_path,
        tiny_model,
        model_dir=bucket_url(),
        model_cache_dir=str(tmp_path / "backend-host"),
        train_args=TINY_TRAIN,
        retrain_every=4,
        gates=False,
        algorithm="dpo",
    )
    generator = settings.model_copy(update={"model_cache_dir": str(tmp_path / "generate-host")})
    trainer = settings.model_copy(update={"model_cache_dir": str(tmp_path / "train-host")})
    client, store = create_app(settings).test_client(), Store(settings.sqlalchemy_url)
    body = payload("setup.pairwise.json") | {"schema": (ROOT / "label_config.xml").read_text(), "hostname": ""}
    assert client.post("/setup", json=body | {"access_token": ""}).status_code == 200
    created = tasks_created(1, [(i + 1, {"prompt": p, "answer1": "", "answer2": ""}) for i, p in enumerate(PROMPTS)])
    created["project"]["label_config"] = body["schema"]
    client.post("/webhook", json=created)
    run_worker(generator, "--queues", "generate")  # converts policy v0 into the bucket, then writes candidates
    for task_id in range(1, 5):
        annotate(client, store, task_id, 900 + task_id)
    queued_training(client, store)
    run_worker(trainer, "--queues", "train")
    run_worker(generator, "--queues", "generate")  # the new policy's answers for the unlabeled tasks

    registry = registries_of(settings).lineage("project-1")
    assert registry.versions("reward") == [0] and registry.versions("policy") == [0, 1]
    assert served_version(client, "policy-v1.reward-v0") == "policy-v1.reward-v0"
    labeled = store.labeled_task_ids(1)
    assert {t.policy_version for t in store.project_tasks(1) if t.id not in labeled} == {1}
    rows = {
        (kind, v): store.model_version_row(settings.model_dir, lineage, kind, v)
        for lineage, kind, v in (("", "policy", 0), ("project-1", "policy", 1), ("project-1", "reward", 0))
    }
    digests = {key: row.digest for key, row in rows.items()}

    def cached(host: str) -> set[tuple[str, int]]:
        return {key for key, digest in digests.items() if (tmp_path / host / digest / ".manifest.json").is_file()}

    assert cached("generate-host") == {("policy", 0), ("policy", 1), ("reward", 0)}  # fetched to generate and score
    assert {("policy", 1), ("reward", 0)} <= cached("train-host")  # what it trained stayed as its copy
    assert cached("backend-host") == set()  # the backend serves names and scores: it never loads a model
    assert not (ROOT / "s3:").exists() and not list(tmp_path.rglob("s3:"))  # the URL never became a folder
    assert not (tmp_path / "models").exists()
