"""Benchmarks: each prints what it measured beside its baseline and ends in PASS/FAIL lines (bench/README.md).

Run them as modules from the repository root, e.g. `.venv/bin/python -m bench.loop --quick`; bench.common
holds what they share and imports the tests' helpers from tests.support.

The environment defaults below are set here, when the package loads, so that they hold before any bench
module imports backend, workers, transformers or torch, whatever the order of its imports.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # benches never download
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # keep bench output to the figures
os.environ.setdefault("TQDM_DISABLE", "1")
