"""All configuration, read once from the environment (pydantic-settings); imports only the recipe names."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from backend.core.algorithms import POLICY_ALGORITHMS
from backend.core.defaults import MAX_NEW_TOKENS

# SELECTION: how the tasks annotators see are chosen (workers.ml.choice; bench/label_efficiency.py measures each)
SELECTIONS = ("random", "variance", "fisher", "bald", "ucb-gap", "dts", "d-optimal", "v-optimal")
QUEUE_BY_CHANCE = ("random", "dts")  # strategies that choose which two of K only: the queue's order is random
FORMER_SELECTIONS = {"informative": "fisher"}  # names a setting or a project may still carry


def selection_name(value: str) -> str:
    """A SELECTION value under its current name (a former name maps to the strategy it meant)."""
    return FORMER_SELECTIONS.get(value, value)


def anchored(path: Path) -> Path:
    """A relative path as the checkout's (see HOME), so that a command run elsewhere finds the same files."""
    return path if path.is_absolute() else HOME / path


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(model_dir: str) -> bool:
    """Whether MODEL_DIR names object storage (`s3://...`, any fsspec scheme but `file://`) rather than a path."""
    return bool(_URL.match(model_dir)) and not model_dir.startswith("file://")


PRECISIONS = ("auto", "bf16-mixed", "fp32")  # TRAIN_PRECISION: bf16 autocast over fp32 master weights, or none
CHECKOUT = Path(__file__).resolve().parents[2]
# Relative paths and .env are anchored to the checkout (where `make run` runs), so a command run from another
# directory still uses the same store, registry and settings; an installed package anchors to the working dir.
HOME = CHECKOUT if (CHECKOUT / "pyproject.toml").is_file() else Path.cwd()


class Serving(BaseModel):
    """How the backend answers: address, credentials, request size, model polling."""

    # serving
    host: str = Field(
        "",
        description="Address the backend binds; empty = `0.0.0.0` with basic auth, else "
        "`127.0.0.1` (all interfaces need auth or this explicit choice).",
    )
    port: int = Field(9090, description="Port the backend listens on.")
    basic_auth_user: str = Field(
        "",
        description="When set with `BASIC_AUTH_PASS`, every endpoint but `/health` "
        "needs them (compared in constant time).",
    )
    basic_auth_pass: str = Field("", description="Password for HTTP basic auth.")
    max_body_bytes: int = Field(20 * 1024 * 1024, description="Requests larger than this get a 413.")
    model_poll_seconds: float = Field(5.0, description="Fallback polling period for new model versions.")

    @property
    def auth_enabled(self) -> bool:
        return bool(self.basic_auth_user and self.basic_auth_pass)

    @property
    def bind_host(self) -> str:
        """HOST, else every interface only when requests need credentials, else loopback."""
        return self.host or ("0.0.0.0" if self.auth_enabled else "127.0.0.1")


class Storage(BaseModel):
    """Where state lives: Redis, the SQL store, the model registry, and Label Studio's address."""

    # storage and queue
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis for RQ queues and notifications.")
    database_url: str = Field(
        "", description="SQLAlchemy URL (`postgresql://…` works); empty means SQLite (WAL) under `DATA_DIR`."
    )
    data_dir: Path = Field(
        HOME / "data",
        description="Where the default SQLite store lives; relative to the checkout, not the working directory.",
    )
    model_dir: str = Field(
        "models",
        validate_default=True,
        description="Model registry: the base `policy/v0` and `lineages/<name>/{policy,reward}/vN`. A directory "
        "(relative: to the checkout), or an object-store URL such as `s3://bucket/prefix` for hosts that share no "
        'disk (docs/deployment.md, "Several hosts"; credentials and endpoint from `AWS_*`).',
    )
    model_cache_dir: str = Field(
        "",
        description="Where a process keeps checked copies of the versions it loads from an object-store "
        "`MODEL_DIR`; empty = `DATA_DIR/model-cache`.",
    )
    model_cache_bytes: int = Field(
        20 * 10**9, description="The model cache is pruned, least recently used first, to this many bytes."
    )
    model_upload_timeout: float = Field(
        3600.0,
        description="An upload to an object-store `MODEL_DIR` unfinished after this many seconds is abandoned: "
        "never served, its objects removed by the reconciler.",
    )
    queue_prefix: str = Field(
        "rlhf", description="Prefix of the RQ queue names (`-generate`, `-train`) and the Redis channel."
    )

    # models
    policy_model: str = Field(
        "", description="HF model id or local dir for policy v0; empty = embedded SmolLM2-135M-Instruct."
    )
    keep_versions: int = Field(
        5, description="Older versions beyond this many are pruned (v0 and the current one are always kept)."
    )

    # Label Studio
    label_studio_url: str = Field(
        "",
        description="Label Studio URL for workers and the CLI; with "
        "`LABEL_STUDIO_API_KEY` it overrides `/setup`'s hostname and token.",
    )
    label_studio_api_key: str = Field(
        "", description="Label Studio token (legacy or personal access token), sent only to `LABEL_STUDIO_URL`."
    )
    label_studio_hosts: str = Field(
        "",
        description="Comma-separated hosts a `/setup` hostname may name (when "
        "`LABEL_STUDIO_URL` is unset); empty = any.",
    )

    @field_validator("data_dir")
    @classmethod
    def _anchored(cls, value: Path) -> Path:
        return anchored(value)

    @field_validator("model_dir", mode="before")
    @classmethod
    def _path_or_url(cls, value: Any) -> str:
        """A URL stays a URL (without a trailing slash); a path is anchored like DATA_DIR."""
        text = str(value)
        if is_url(text):
            return text.rstrip("/")
        return str(anchored(Path(text.removeprefix("file://"))))

    @property
    def model_cache_path(self) -> Path:
        return anchored(Path(self.model_cache_dir)) if self.model_cache_dir else self.data_dir / "model-cache"

    @property
    def sqlalchemy_url(self) -> str:
        """The store's URL: DATABASE_URL, or SQLite under DATA_DIR."""
        url = self.database_url or f"sqlite:///{(self.data_dir / 'rlhf.sqlite3').resolve()}"
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        return url

    @property
    def allowed_label_studio_hosts(self) -> tuple[str, ...]:
        return tuple(h.strip() for h in self.label_studio_hosts.split(",") if h.strip())


class Generation(BaseModel):
    """How candidates are written and shown."""

    # generation
    num_candidates: int = Field(
        4,
        ge=2,
        le=32,
        description="K answers sampled per prompt: a Ranker shows all K, "
        "Pairwise the two that `SELECTION` picks (K=2: both).",
    )
    temperature: float = Field(0.9, description="Sampling temperature for candidates.")
    top_p: float = Field(0.95, description="Nucleus sampling for candidates.")
    max_new_tokens: int = Field(
        MAX_NEW_TOKENS,
        description="Token budget of every answer: candidates, PPO/GRPO/RLOO rollouts, "
        "evaluation (`TRAIN_ARGS` may shorten rollouts).",
    )
    system_prompt: str = Field(
        "Keep every answer short and to the point: at most three sentences, then stop.",
        description="System message before every prompt, in every stage alike; empty = the model's own. With it "
        "the embedded SmolLM2 ends most answers within `MAX_NEW_TOKENS` (`bench/answer_length.py`). "
        "Reward models read it too: retrain after changing it.",
    )
    missing_eos_penalty: float = Field(
        1.0,
        description="Subtracted from the reward of an answer cut off at "
        "`MAX_NEW_TOKENS`, wherever a reward is read "
        "(`workers/ml/scoring.py`).",
    )
    generation_batch_size: int = Field(128, description="Sequences per `generate()` call.")
    generation_dtype: str = Field(
        "auto", description="`auto` (bf16 where the GPU/CPU runs it natively), `float32` or `bfloat16`."
    )
    preselect_choice: bool = Field(
        False, description="Predictions pre-select the reward model's pick or order (off: they only carry the score)."
    )
    regenerate_stale: bool = Field(True, description="Regenerate unlabeled tasks' candidates after a new policy.")


class Training(BaseModel):
    """When and how models train, and how workers run the jobs."""

    # training
    retrain_every: int = Field(50, description="Retrain once this many new preference pairs arrived.")
    algorithm: str = Field(
        "grpo",
        description="Policy recipe after the reward model: `grpo` (chosen by measurement: docs/benchmarks.md), "
        "`ppo`, `dpo` or `rloo`; "
        'per project: `extra_params` `{"algorithm": "dpo"}`.',
    )
    train_args: dict[str, Any] = Field(
        default_factory=dict,
        description="JSON overrides of recipe-config fields, per recipe name: "
        '`{"ppo": {"response_length": 64}}` (the fields are the dataclasses in '
        "`workers/recipes/`: each `*RecipeConfig`, PPO's in `ppo/config.py`).",
    )
    train_processes: int = Field(
        1, description="GPUs one training job spans (`accelerate launch`, DDP); 1 = inside the job."
    )
    train_precision: str = Field(
        "auto",
        description="`auto` (bf16-mixed on GPUs that support bf16, else fp32), "
        "`bf16-mixed` (bf16 autocast over fp32 weights; a CPU runs it too) or `fp32`. Every "
        "version is saved in fp32 either way.",
    )
    use_lora: bool = Field(False, description="Train LoRA adapters (peft) and merge them, for big models.")
    train_timeout: int = Field(6 * 3600, description="RQ job timeout of a training job, seconds.")
    generate_timeout: int = Field(3600, description="RQ job timeout of a generation job, seconds.")
    reconcile_seconds: float = Field(
        30.0, description="How often the backend queues what the store says is due (training, candidates); 0 = never."
    )
    reconcile_backoff_seconds: float = Field(
        60.0, description="Wait before re-queueing a lineage whose chain failed; doubles per attempt, at most 1 h."
    )
    resync_seconds: float = Field(
        300.0,
        description="How often annotations changed in Label Studio are resynced "
        "(webhooks that never arrived); 0 = never.",
    )
    redis_request_timeout: float = Field(
        0.25,
        description="Seconds a request waits on Redis; past it the job is "
        "deferred to the reconciler, the request still answers.",
    )
    job_stall_seconds: float = Field(
        600.0,
        description="A job whose work-horse uses no CPU this long is killed and failed with that reason; 0 = never.",
    )
    worker_threads: int = Field(0, description="Torch CPU threads per worker; 0 = CPU cores / `LOCAL_WORKERS`.")
    local_workers: int = Field(
        1, description="Workers sharing this host's CPUs (`make run`: 2); sizes `WORKER_THREADS=0`."
    )
    seed: int = Field(0, description="Seed of the held-out splits and of training.")

    @field_validator("train_args", mode="before")
    @classmethod
    def _parse_json(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) and value else (value or {})


class Gating(BaseModel):
    """Which versions are served (promotion gates) and which tasks annotators see first."""

    # promotion gates (docs/algorithms.md, "Promotion gates")
    gates: bool = Field(
        True,
        description="Promote a new model only when its gate passes (docs/algorithms.md, "
        '"Promotion gates"); false = promote every model.',
    )
    gate_min_held_out: int = Field(
        10, description="Fewer held-out pairs (reward) or prompts (policy) than this: promoted, marked unassessed."
    )
    gate_alpha: float = Field(0.05, description="One-sided significance of 'worse than the current one' that rejects.")
    kl_budget: float = Field(
        0.5, description="Largest mean per-token KL (nats) to the reference a promoted policy may have."
    )
    human_judge_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of new Pairwise tasks that show the "
        "new policy's answer beside the previous policy's, blind.",
    )
    human_judge_train: bool = Field(False, description="Also train on the labels of human-judged tasks.")

    # choosing what annotators label (docs/algorithms.md, "Fewer labels")
    selection: str = Field(
        "random",
        description="Which comparisons annotators label: the Pairwise pair of K and the queue's order "
        '(docs/algorithms.md, "Fewer labels"). `random` (measured: no strategy saved labels for every '
        "annotator); `variance`, `fisher` (formerly `informative`), `bald`, `ucb-gap`, `dts`, `d-optimal`, "
        "`v-optimal` follow a reward head refitted after each label. Per project: `extra_params` "
        '`{"selection": "v-optimal"}`.',
    )


class Settings(Gating, Training, Generation, Storage, Serving, BaseSettings):  # fields in section order
    """Every knob of the backend and the workers, by section; field names map to upper-case env vars."""

    model_config = SettingsConfigDict(env_file=HOME / ".env", extra="ignore")

    @field_validator("algorithm", "selection", "train_precision")
    @classmethod
    def _one_of(cls, value: str, info: ValidationInfo) -> str:
        value = selection_name(value) if info.field_name == "selection" else value
        allowed = {"algorithm": POLICY_ALGORITHMS, "selection": SELECTIONS, "train_precision": PRECISIONS}
        if value not in allowed[info.field_name]:
            raise ValueError(f"{info.field_name.upper()} must be one of {allowed[info.field_name]}, got {value!r}")
        return value

    def as_env(self) -> dict[str, str]:
        """These settings as environment variables, for a process started with them (worker, gunicorn, CLI)."""
        return {
            name.upper(): json.dumps(value) if isinstance(value, (dict, list)) else str(value)
            for name, value in self.model_dump().items()
            if value is not None
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
