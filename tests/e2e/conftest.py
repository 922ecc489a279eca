"""Fixtures of the end-to-end tests: a real Label Studio for the session, the backend under gunicorn."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis import Redis

from tests.support.labelstudio_server import LabelStudioServer, LabelStudioUnavailable, free_port, start_label_studio
from tests.support.services import serving
from tests.support.settings import AUTH, TEST_REDIS_URL, make_settings
from tests.support.tiny import TINY_TRAIN


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    """A real Label Studio for the session; skips when it cannot be installed or started."""
    try:
        server = start_label_studio(tmp_path_factory.mktemp("label-studio"))
    except LabelStudioUnavailable as e:
        pytest.skip(f"Label Studio unavailable (set LS_VENV to an installed venv): {e}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def backend(tmp_path_factory, tiny_model):  # yields (Settings, url)
    """The backend under gunicorn, as `python -m backend serve` runs it, with basic auth on."""
    Redis.from_url(TEST_REDIS_URL).flushdb()
    port = free_port()
    # GATES=false: these tests follow versions through Label Studio; a tiny random model's policy steps need not
    # raise its own objective, and the gate would keep the round unserved (test_gates covers gating)
    settings = make_settings(
        tmp_path_factory.mktemp("backend"),
        tiny_model,
        port=port,
        train_args=TINY_TRAIN,
        retrain_every=4,
        basic_auth_user=AUTH[0],
        basic_auth_pass=AUTH[1],
        gates=False,
        selection="fisher",  # a strategy that orders the queue: refits land between labels, as they can in use
    )
    with serving(settings) as url:
        yield settings, url
