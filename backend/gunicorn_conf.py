"""gunicorn's settings for the backend: one place for `python -m backend serve` and the Docker image
(`gunicorn -c python:backend.gunicorn_conf backend.wsgi:app`); command-line flags override them."""
from backend.core.settings import get_settings

bind = f"0.0.0.0:{get_settings().port}"
workers = 2
threads = 1  # one thread per worker avoids SQLite lock waits between threads (see bench/README.md)
timeout = 120  # seconds a request may take before its worker is replaced (Label Studio's /predict waits 100 s)
