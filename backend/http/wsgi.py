"""The WSGI entry point for gunicorn: `gunicorn backend.http.wsgi:app`."""

from backend.core.logs import configure_logging
from backend.http.app import create_app

configure_logging()
app = create_app()
