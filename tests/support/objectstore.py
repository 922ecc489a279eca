"""A real S3 API for the tests: moto's server mode (an HTTP server speaking the S3 protocol), started on a free
loopback port, and the AWS_* environment that points boto and s3fs at it (this process's and its children's)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.labelstudio_server import _die_with_parent, _get, free_port
from tests.support.wait import wait_for

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "rlhf-test", "AWS_SECRET_ACCESS_KEY": "rlhf-test-secret"}


@contextmanager
def s3_server(log_dir: Path) -> Iterator[str]:
    """Start moto's S3 server; yields its endpoint URL with AWS_* set for this process, then stops it."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = open(log_dir / "moto.log", "wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    env = {**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {name: os.environ.get(name) for name in env}
    try:
        wait_for(lambda: _get(f"{endpoint}/moto-api/") == 200, 30, 0.1, f"moto's S3 server on port {port}")
        os.environ.update(env)
        yield endpoint
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        proc.terminate()
        proc.wait(10)
        log.close()


def bucket_url() -> str:
    """A fresh bucket (created by the registry on first use) and prefix, so tests never share objects."""
    return f"s3://rlhf-{uuid.uuid4().hex[:12]}/models"
