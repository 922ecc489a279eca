"""The worker process itself: first run on the embedded model, the stall guard, the CPU thread budget."""

from __future__ import annotations

import os
import subprocess
import sys

from rq.job import Job

from backend.http.app import create_app
from backend.queue import JobQueue
from backend.store import Store
from tests.support.payloads import setup_project, tasks_created
from tests.support.services import run_worker
from tests.support.settings import make_settings, registries_of
from tests.support.wait import wait_for
from workers.runtime.worker import process_tree_cpu, thread_budget


def test_first_generation_on_a_fresh_model_dir_with_the_embedded_model(tmp_path, tiny_model, redis) -> None:
    """The first `make run`: v0 is converted from the embedded SmolLM2, then the first job runs in a forked
    work-horse. Converting in the worker's own process hung that horse in OpenMP (0 % CPU, forever)."""
    settings = make_settings(
        tmp_path, tiny_model, policy_model="", max_new_tokens=6, job_stall_seconds=60, generation_dtype="float32"
    )
    client = create_app(settings).test_client()
    assert client.get("/").json["base"] == "policy-pending"  # nothing served before v0 exists
    setup_project(client)
    created = tasks_created(1, [(1, {"prompt": "What is the capital of France?", "answer1": "", "answer2": ""})])
    assert client.post("/webhook", json=created).json["job"]
    run_worker(settings, timeout=300)
    task = Store(settings.sqlalchemy_url).tasks([1])[1]
    assert task.policy_version == 0 and len(task.candidates) == 2 and all(task.candidates)
    meta = registries_of(settings).base.meta("policy", 0)
    assert meta["source"].startswith("embedded:")
    assert [(j["kind"], j["status"]) for j in client.get("/status").json["jobs"]] == [("generate", "finished")]


def test_a_job_that_makes_no_progress_fails_with_the_reason(tmp_path, tiny_model, redis) -> None:
    settings = make_settings(tmp_path, tiny_model, job_stall_seconds=2)
    queue = JobQueue(settings)
    job = queue.generate.enqueue("time.sleep", 120, meta={"kind": "generate", "project": 1}, job_timeout=600)
    run_worker(settings, "--queues", "generate", timeout=60)  # returns long before the 120 s sleep would end
    job = Job.fetch(job.id, connection=queue.redis)
    assert job.get_status() == "failed"
    [view] = [j for j in queue.recent_jobs() if j["id"] == job.id]
    assert "stalled" in view["error"] and "JOB_STALL_SECONDS" in view["error"]


def test_each_worker_gets_its_thread_budget(tmp_path, tiny_model, redis) -> None:
    settings = make_settings(tmp_path, tiny_model, worker_threads=1)
    queue = JobQueue(settings)
    job = queue.generate.enqueue("torch.get_num_threads")
    run_worker(settings, "--queues", "generate")
    assert Job.fetch(job.id, connection=queue.redis).return_value() == 1
    cpus = len(os.sched_getaffinity(0))
    assert thread_budget(0, 2) == max(1, cpus // 2) and thread_budget(0, 1) == cpus and thread_budget(3, 2) == 3


def test_process_tree_cpu_counts_children() -> None:
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\ntime.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", busy])
    try:
        wait_for(lambda: (process_tree_cpu(child.pid) or 0) >= 0.45, 30, 0.1, "the child to spend 0.45 s of CPU")
        child_cpu = process_tree_cpu(child.pid)
        assert child_cpu is not None and child_cpu >= 0.45
        own = sum(os.times()[:2])
        assert process_tree_cpu(os.getpid()) >= own + child_cpu - 0.05  # the tree includes the live child
    finally:
        child.kill()
