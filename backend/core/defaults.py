"""Named decisions that are not settings: lengths, limits, timeouts and retention, each written once.

What an admin tunes lives in `backend.core.settings` (its Field default is the one place for that value);
what follows is fixed by the protocol, a library or a measurement, and every module that needs it imports it
from here."""

from __future__ import annotations

from datetime import timedelta

# --- ids and payloads
MAX_INT = 2**63 - 1  # what a BIGINT column holds: larger ids are refused with a 4xx

# --- lengths, in tokens
MAX_LENGTH = 512  # prompt + answer tokens a training example (reward, DPO, SFT) or a selection feature may hold
MAX_PROMPT_LENGTH = 256  # PPO leaves out prompts longer than this
MAX_NEW_TOKENS = 256  # the default answer budget (MAX_NEW_TOKENS): bench/answer_length.py measured 80 % finish
TOP_K = 50  # transformers' default top-k, applied before top-p as generate() does

# --- timeouts and retries, in seconds
REDIS_REST_SECONDS = 5.0  # after a Redis failure, how long requests skip it (the reconciler catches up)
REQUEST_TIMEOUT = 120  # gunicorn replaces a worker whose request takes longer (Label Studio's /predict waits 100 s)
SQLITE_BUSY_TIMEOUT = 30  # how long a SQLite connection waits for another writer's lock
HEALTHCHECK_REDIS_TIMEOUT = 3.0  # well under a container healthcheck's own timeout
RESYNC_OVERLAP = timedelta(minutes=2)  # a resync re-reads a little before the last one: clocks, in-flight saves
RETRY_BACKOFF_CAP = 3600  # the reconciler's doubling wait between attempts stops growing here
TRAIN_LOCK = {"timeout": 10, "blocking_timeout": 0.5, "sleep": 0.005}  # redis-py polls every 0.1 s by default

# --- how long RQ keeps what /status shows
DAY = 86400
GENERATE_TTL = {"result_ttl": 7 * DAY, "failure_ttl": 30 * DAY}
TRAIN_TTL = {"result_ttl": 30 * DAY, "failure_ttl": 30 * DAY}
REFIT_TTL = {"result_ttl": 3600, "failure_ttl": 30 * DAY}  # one per label: finished ones go soon
