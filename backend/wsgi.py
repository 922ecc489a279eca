"""The WSGI entry point for gunicorn: `gunicorn backend.wsgi:app`."""
from backend.core.logs import configure_logging
from backend.app import create_app

configure_logging()
app = create_app()
