"""Run a recipe in the job's process, or spread over several GPUs of the host with `accelerate launch`.

With TRAIN_PROCESSES=N > 1 the job writes its RecipeInputs to a JSON spec and starts
`accelerate launch --num_processes N -m workers.runtime.launch SPEC`; every process trains its shard (DDP), the
main one saves the model and the metrics, and the job carries on (verify, assess, promote) as usual.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args, get_type_hints

from workers.recipes.base import RecipeInputs

log = logging.getLogger(__name__)


def run_recipe(recipe: str, inputs: RecipeInputs, processes: int = 1, job_id: str | None = None) -> dict[str, Any]:
    """Train `recipe` on `inputs`; with processes > 1, in an accelerate-launched process group."""
    from workers.recipes import RECIPES

    if processes <= 1:
        return RECIPES[recipe].train(inputs)
    inputs.out_dir.mkdir(parents=True, exist_ok=True)
    spec = inputs.out_dir / "launch.json"  # inside staging: never promoted, gone with it on failure
    fields = {f.name: getattr(inputs, f.name) for f in dataclasses.fields(inputs) if f.name != "callbacks"}
    spec.write_text(json.dumps({"recipe": recipe, "job_id": job_id, "inputs": fields}, default=str))
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        *_launch_mode(),
        "-m",
        "workers.runtime.launch",
        str(spec),
    ]
    log.info("launching %s on %d processes: %s", recipe, processes, " ".join(command))
    try:
        subprocess.run(command, check=True)
        result = json.loads(spec.with_name("launch-result.json").read_text())
    finally:
        spec.unlink(missing_ok=True)
        spec.with_name("launch-result.json").unlink(missing_ok=True)
    return result["metrics"]


def _launch_mode() -> list[str]:
    """DDP over the visible GPUs; without GPUs accelerate runs one process (multi-CPU would need MPI)."""
    from workers.ml.loading import device

    if device() == "cuda":
        return ["--multi_gpu"]
    log.warning("TRAIN_PROCESSES > 1 without a GPU: accelerate runs a single CPU process")
    return ["--cpu"]


def _inputs_from_spec(spec: dict[str, Any]) -> RecipeInputs:
    """RecipeInputs back from JSON: the fields typed as paths become Paths again."""
    fields = dict(spec["inputs"])
    for name, hint in get_type_hints(RecipeInputs).items():
        if Path in (hint, *get_args(hint)) and fields.get(name) is not None:
            fields[name] = Path(fields[name])
    return RecipeInputs(**fields)


def main(spec_path: str) -> None:
    """One process of a launched training: train, and on the main process write the metrics back."""
    from accelerate import PartialState
    from rq.job import Job

    from workers.recipes import RECIPES
    from workers.runtime.context import context
    from workers.runtime.progress import JobProgress

    spec = json.loads(Path(spec_path).read_text())
    inputs = _inputs_from_spec(spec)
    state = PartialState()
    log.info(
        "%s: process %d of %d (%s)", spec["recipe"], state.process_index, state.num_processes, state.distributed_type
    )
    if state.is_main_process and spec.get("job_id"):
        job = Job.fetch(spec["job_id"], connection=context().queue.redis)
        inputs.callbacks = [JobProgress(stage=spec["recipe"], job=job)]
    metrics = RECIPES[spec["recipe"]].train(inputs)
    if state.is_main_process:
        result = {"metrics": metrics}
        Path(spec_path).with_name("launch-result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    from backend.core.logs import configure_logging

    configure_logging()
    main(sys.argv[1])
