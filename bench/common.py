"""What every bench shares: cached models, HH-RLHF pairs, processes, percentiles and the verdict lines.

The benches run as modules from the repository root (`.venv/bin/python -m bench.loop --quick`), so `backend`,
`workers` and `tests.support` (tiny models, captured payloads, free ports) import without path edits.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tests.support.labelstudio_server import free_port  # noqa: F401  (one copy of each helper, shared with the tests)
from tests.support.payloads import payload  # noqa: F401  (the benches post the tests' recorded payloads)
from tests.support.settings import settings_env  # noqa: F401  (the environment a gunicorn or worker needs)

ROOT = Path(__file__).resolve().parent.parent  # the benches' environment defaults are set in bench/__init__.py

BENCH_REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
MODEL_CACHE = ROOT / ".cache" / "bench-models"  # gitignored; converted models are reused between runs
LABEL_CONFIG = ROOT / "label_config.xml"
HH_DATA = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"
ASSISTANT = "\n\nAssistant:"


# --- models ------------------------------------------------------------------------------------------------------


def embedded_policy() -> Path:
    """The embedded SmolLM2-135M-Instruct as policy v0, converted once (about 20 s) into the bench cache."""
    from backend.store.registry import DiskRegistry
    from workers.runtime.bootstrap import ensure_base_policy

    registry = DiskRegistry(MODEL_CACHE / "smollm2")
    ensure_base_policy(registry, "")
    return registry.path("policy", 0)


def tiny_policy() -> Path:
    """A 2-layer GPT-2 with a locally trained tokenizer (tests/support/tiny.py), built once into the bench cache."""
    from tests.support.tiny import build_tiny_model

    out = MODEL_CACHE / "tiny"
    if not (out / "config.json").is_file():
        build_tiny_model(out)
    return out


def resolve_model(name: str) -> str:
    """`embedded` and `tiny` name the cached models; anything else is a local directory or hub id."""
    if name == "embedded":
        return str(embedded_policy())
    if name == "tiny":
        return str(tiny_policy())
    return name


# --- data --------------------------------------------------------------------------------------------------------


def split_transcript(text: str) -> tuple[str, str] | None:
    """(prompt, answer) of an HH-RLHF transcript: the answer is what follows the last `Assistant:` turn."""
    cut = text.rfind(ASSISTANT)
    if cut < 0:
        return None
    return text[:cut], text[cut + len(ASSISTANT) :].strip()


def prompt_message(prefix: str) -> str:
    """The prompt as one user message: a single Human turn is the bare question; earlier turns stay as labelled text.

    RecipeInputs carries a prompt as one string (the backend's task prompt), so a multi-turn history cannot be
    a real conversation without bypassing the recipe: keeping `Human:`/`Assistant:` labels preserves the context.
    """
    text = prefix.strip()
    if text.count("Human:") == 1 and text.startswith("Human:") and "Assistant:" not in text:
        return text[len("Human:") :].strip()
    return text


def hh_pairs(path: Path = HH_DATA) -> tuple[list[dict[str, str]], int]:
    """HH-RLHF rows as {prompt, chosen, rejected}; returns (pairs, skipped rows whose prompts differ or are empty)."""
    pairs, skipped = [], 0
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            chosen, rejected = split_transcript(row["chosen"]), split_transcript(row["rejected"])
            if (
                chosen is None
                or rejected is None
                or chosen[0] != rejected[0]
                or not chosen[1]
                or not rejected[1]
                or chosen[1] == rejected[1]
            ):
                skipped += 1
                continue
            pairs.append({"prompt": prompt_message(chosen[0]), "chosen": chosen[1], "rejected": rejected[1]})
    return pairs, skipped


def synthetic_pairs(n: int) -> list[dict[str, str]]:
    """Distinct short pairs when no real data is at hand."""
    return [
        {
            "prompt": f"Question {i}: what is {i} plus {i}?",
            "chosen": f"The answer is {2 * i}.",
            "rejected": f"I do not know, maybe {i}.",
        }
        for i in range(n)
    ]


def fits(tokenizer: Any, pair: dict[str, str], max_length: int) -> bool:
    """Whether both sides fit max_length once rendered as trl renders them (trl drops longer pairs)."""
    from workers.ml.scoring import conversation_text

    return all(
        len(
            tokenizer(conversation_text(tokenizer, pair["prompt"], pair[side], None), add_special_tokens=False)[
                "input_ids"
            ]
        )
        <= max_length
        for side in ("chosen", "rejected")
    )


# --- processes and services --------------------------------------------------------------------------------------


def flush_bench_redis() -> None:
    """Empty the bench's own Redis database (never another one)."""
    from redis import Redis

    Redis.from_url(BENCH_REDIS_URL).flushdb()


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Terminate a process group we started (SIGTERM, then SIGKILL), and its children that left the group
    (an RQ work-horse calls setpgrp, so killing the worker's group alone would leave it training)."""
    if proc.poll() is not None:
        return
    children = _children(proc.pid)
    try:
        os.killpg(proc.pid, 15)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(timeout)
    except ProcessLookupError:
        pass
    for child in children:
        try:
            os.kill(child, 9)
        except ProcessLookupError:
            pass


def _children(pid: int) -> list[int]:
    """Direct children of a process, from /proc (Linux)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


# --- reporting ---------------------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); exact and dependency-free."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered), max(1, math.ceil(q / 100 * len(ordered)))) - 1]


def header(title: str) -> None:
    """Say what ran where and when: load from other processes skews every figure on a 2-core machine."""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), platform.processor()
    )
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"== {title} ==")
    print(
        f"date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC | {cpu}, {os.cpu_count()} cores | "
        f"load average at start {load} | python {platform.python_version()}"
    )


def load() -> str:
    """The 1-minute load average beside each phase: a bench itself makes about 2; more means the cores were shared."""
    return f"load {os.getloadavg()[0]:.2f}"


def _cpuinfo() -> list[str]:
    """Lines of /proc/cpuinfo, or none off Linux."""
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def compare(
    what: str,
    unit: str,
    baseline: float,
    ours: float,
    goal_ratio: float,
    baseline_label: str = "baseline",
    ours_label: str = "ours",
) -> bool:
    """Print baseline, ours, their ratio (higher is better) and the verdict against a ratio goal."""
    ratio = ours / baseline
    print(f"{baseline_label}: {baseline:,.2f} {unit}")
    print(f"{ours_label}: {ours:,.2f} {unit}")
    return verdict(f"{what} ratio {ratio:.2f}x", f">= {goal_ratio:g}x", ratio >= goal_ratio)


def verdict(measured: str, goal: str, ok: bool) -> bool:
    """One PASS/FAIL line, so every bench ends the same way."""
    print(f"{measured} | goal {goal} | {'PASS' if ok else 'FAIL'}")
    return ok


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence trainers' per-step log prints and load reports, so a bench's own lines stay readable."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        hf_logging.set_verbosity(level)


class Timer:
    """Wall-clock seconds of a `with` block."""

    def __enter__(self) -> "Timer":
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start
