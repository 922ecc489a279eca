"""The product's own setting for the label-efficiency bench: prompts with K candidates each, sampled once from
the embedded policy v0 with the product's sampling (workers.ml.generation.candidates) and cached, and the
frozen features the selection head reads of every candidate (workers.ml.features, as workers/jobs/select.py).

Generation is the slow part on a CPU (about 0.8 s per 128-token answer on 2 cores), so the cache is written
chunk by chunk and a rerun resumes where the last one stopped.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

from bench.common import HH_DATA, MODEL_CACHE, embedded_policy, hh_pairs

POOL_CACHE = MODEL_CACHE / "label-efficiency"
CHUNK = 32  # prompts per generate() batch (K answers each) and per cache write


@dataclass(frozen=True)
class Candidate:
    text: str
    finished: bool | None  # None: not recorded (HH-RLHF answers)


@dataclass(frozen=True)
class Pool:
    """prompts[i]'s K candidates are candidates[i]."""

    prompts: list[str]
    candidates: list[list[Candidate]]
    key: str  # names every cache derived from this pool


def hh_prompts(n: int, seed: int = 0, path: Path = HH_DATA) -> list[str]:
    """n distinct single-turn HH-RLHF prompts (a bare question, as a Label Studio task would hold), seeded."""
    pairs, _ = hh_pairs(path)
    prompts = [p for p in dict.fromkeys(pair["prompt"] for pair in pairs) if "Human:" not in p and p.strip()]
    random.Random(seed).shuffle(prompts)
    return prompts[:n]


def file_prompts(path: Path, n: int) -> list[str]:
    """Prompts from a file: one per line, or a JSON list of strings."""
    text = path.read_text(encoding="utf-8")
    prompts = json.loads(text) if text.lstrip().startswith("[") else text.splitlines()
    return [p for p in dict.fromkeys(str(p).strip() for p in prompts) if p][:n]


def candidate_pool(prompts: list[str], k: int, max_new_tokens: int, seed: int = 0) -> Pool:
    """K candidates per prompt from the embedded v0, cached in a JSONL file named by the sampling settings, one
    row per prompt: a smaller or larger pool of the same prompts reuses what was drawn."""
    import torch

    from workers.ml.generation import SamplingConfig, candidates
    from workers.ml.loading import inference_dtype, load_policy

    cfg = SamplingConfig(k=k, temperature=0.9, top_p=0.95, max_new_tokens=max_new_tokens, batch_size=CHUNK * k)
    sampling = hashlib.sha256(repr((k, max_new_tokens, seed, cfg)).encode()).hexdigest()[:12]
    cache = POOL_CACHE / f"candidates-{sampling}.jsonl"
    done: dict[str, list[Candidate]] = {}
    if cache.is_file():
        for line in cache.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            done[row["prompt"]] = [Candidate(c["text"], c["finished"]) for c in row["candidates"]]
    todo = [p for p in prompts if p not in done]
    if todo:
        cache.parent.mkdir(parents=True, exist_ok=True)
        model, tokenizer = load_policy(embedded_policy(), inference_dtype())
        started = time.monotonic()
        for start in range(0, len(todo), CHUNK):
            chunk = todo[start : start + CHUNK]
            torch.manual_seed(seed * 1_000_003 + len(done))
            answers = candidates(model, tokenizer, chunk, cfg)
            with cache.open("a", encoding="utf-8") as out:
                for prompt, pool in zip(chunk, answers, strict=True):
                    done[prompt] = [Candidate(a.text, a.finished) for a in pool]
                    row = {"prompt": prompt, "candidates": [{"text": a.text, "finished": a.finished} for a in pool]}
                    out.write(json.dumps(row) + "\n")
            n = start + len(chunk)
            print(f"  candidates {n}/{len(todo)} prompts ({time.monotonic() - started:.0f} s)", flush=True)
    key = hashlib.sha256(repr((sampling, prompts)).encode()).hexdigest()[:12]
    return Pool(prompts, [done[p] for p in prompts], key)


def pool_features(pool: Pool, layers: tuple[int, ...] = (-1,), pooled_layers: tuple[int, ...] = ()):
    """[prompts, K, d] float64 frozen features of every candidate under v0, as the product's head reads them
    (the last layer at the reward token; more layers, and answer means of `pooled_layers`, side by side when
    asked), cached per pool and layers."""
    import torch

    from workers.ml.features import eos_features
    from workers.ml.loading import inference_dtype, load_policy

    name = "_".join(map(str, layers)) + "".join(f"-mean{n}" for n in pooled_layers)
    cache = POOL_CACHE / f"features-{pool.key}-{name}.pt"
    if cache.is_file():
        return torch.load(cache)
    model, tokenizer = load_policy(embedded_policy(), inference_dtype())
    flat = [(p, c) for p, cands in zip(pool.prompts, pool.candidates, strict=True) for c in cands]
    started = time.monotonic()

    def progress(done: int, total: int) -> None:
        if done % 400 < 8 or done == total:
            print(f"  features {done}/{total} ({time.monotonic() - started:.0f} s)", flush=True)

    out = eos_features(
        model,
        tokenizer,
        [p for p, _ in flat],
        [c.text for _, c in flat],
        [c.finished for _, c in flat],
        layers=layers,
        pooled_layers=pooled_layers,
        progress=progress,
    )
    out = out.view(len(pool.prompts), len(pool.candidates[0]), -1).double()
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, cache)
    return out
