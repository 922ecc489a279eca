"""The test suite, by layer: unit/ (pure logic), integration/ (Redis, SQL stores, RQ workers, trl on tiny models,
the Flask app), e2e/ (a real Label Studio, the browser, `make run`); support/ holds the helpers they share.

Nothing is downloaded: the hub is off before anything imports transformers (this package loads first)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
