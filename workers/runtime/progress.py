"""Report training progress into the running RQ job's meta, so the backend can show it without touching torch."""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.exceptions import RedisError
from rq import get_current_job
from transformers import (
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

log = logging.getLogger(__name__)


class JobProgress(TrainerCallback):
    """Writes {step, total, loss, stage} to job.meta at most every `min_interval` seconds; a no-op outside a job."""

    def __init__(self, stage: str = "train", min_interval: float = 2.0, job: Any = None) -> None:
        self.stage = stage
        self.job = job  # the RQ job to report to; default: the job running this process
        self.min_interval = min_interval
        self.loss: float | None = None
        self._last_write = float("-inf")

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember the latest loss (trainers name it differently) and report it."""
        loss = _loss_of(logs or {})
        if loss is not None:
            self.loss = loss
        log.info("%s step %s/%s loss %s", self.stage, state.global_step, state.max_steps, self.loss)
        self._report(state)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Show the stage and the step count as soon as training starts, not at the first logged step."""
        self._report(state, force=True)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        """Report the step even when nothing is logged."""
        self._report(state)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Always leave the final step in the meta."""
        self._report(state, force=True)

    def _report(self, state: TrainerState, force: bool = False) -> None:
        """Save the progress into the current job's meta, throttled, never failing the training."""
        now = time.monotonic()
        if not force and now - self._last_write < self.min_interval:
            return
        job = self.job or get_current_job()
        if job is None:
            return
        self._last_write = now
        record(job, step=state.global_step, total=state.max_steps, loss=self.loss, stage=self.stage)


class PhaseProgress:
    """Which half of an RL step is running, for trainers whose step is long (a PPO step on a CPU: minutes):
    the trainer names the phase ("generating rollouts", "optimising") as it enters it, and the phase is
    recorded with the step in progress when it changes."""

    def __init__(self, stage: str, state: TrainerState) -> None:
        self.stage, self.state, self.phase = stage, state, ""

    def __call__(self, phase: str) -> None:
        if phase != self.phase:
            self.phase = phase
            record(stage=f"{self.stage}: {phase}", step=self.state.global_step + 1, total=self.state.max_steps)


def record(job: Any = None, **fields: Any) -> None:
    """Merge fields into a job's progress (default: the job running this process); never fails the job."""
    job = job or get_current_job()
    if job is None:
        return
    job.meta.setdefault("progress", {}).update(fields)
    try:
        job.save_meta()
    except RedisError as exc:
        log.warning("could not save progress of job %s: %s", job.id, exc)


def _loss_of(logs: dict[str, Any]) -> float | None:
    """The loss in a trainer log: 'loss' for Trainer subclasses, 'loss/policy_avg' for PPO."""
    for key in ("loss", "loss/policy_avg"):
        if isinstance(logs.get(key), (int, float)):
            return float(logs[key])
    return None
