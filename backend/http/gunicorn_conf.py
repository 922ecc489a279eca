"""gunicorn's settings for the backend: one place for `python -m backend serve` and the Docker image
(`gunicorn -c python:backend.http.gunicorn_conf backend.http.wsgi:app`); command-line flags override them."""

from backend.core.defaults import REQUEST_TIMEOUT
from backend.core.settings import get_settings

bind = f"{get_settings().bind_host}:{get_settings().port}"
workers = 2
threads = 1  # one thread per worker avoids SQLite lock waits between threads (see bench/README.md)
timeout = REQUEST_TIMEOUT
preload_app = True  # the master imports the app once: a worker that dies is replaced by a fork in milliseconds


def on_starting(server) -> None:  # noqa: ANN001 - gunicorn's Arbiter
    """A loud warning when the backend listens beyond this machine without credentials."""
    exposed = [b for b in server.cfg.bind if not b.startswith(("127.", "localhost", "[::1]", "unix:"))]
    if exposed and not get_settings().auth_enabled:
        server.log.warning(
            "AUTHENTICATION IS OFF and the backend listens on %s: anyone who reaches it can post annotations, "
            "queue training and read /status. Set BASIC_AUTH_USER and BASIC_AUTH_PASS, or bind to 127.0.0.1 "
            "(README: Security).",
            ", ".join(exposed),
        )
