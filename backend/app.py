"""Flask app factory: settings in, app out; clients live in `app.extensions`."""
from __future__ import annotations

import logging

import rq_dashboard
from flask import Flask
from redis import Redis

from backend.model import RLHFModel
from backend.protocol import bp, register_errors
from backend.queue import JobQueue
from backend.registry import Registry
from backend.settings import Settings, get_settings
from backend.store import Store
from backend.watcher import ModelWatcher

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the backend: store, queue, model watcher, the ML-backend blueprint and the RQ dashboard."""
    settings = settings or get_settings()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    redis = Redis.from_url(settings.redis_url, socket_timeout=5)
    store = Store(settings.sqlalchemy_url)
    queue = JobQueue(settings, redis)
    registry = Registry(settings.model_dir, settings.keep_versions)
    watcher = ModelWatcher(registry, redis, queue.models_channel, settings.model_poll_seconds)
    watcher.start()
    app.extensions["rlhf"] = RLHFModel(settings, store, queue, watcher)
    app.extensions["rlhf_settings"] = settings
    app.extensions["rlhf_registry"] = registry
    app.register_blueprint(bp)
    app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis_url
    rq_dashboard.web.setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix="/rq")
    register_errors(app)
    log.info("backend ready: model %s, store %s", watcher.served().model_version, store.engine.url.drivername)
    return app
