"""Flask app factory: settings in, app out; clients live in `app.extensions`."""

from __future__ import annotations

import logging

import rq_dashboard
from flask import Flask
from redis import Redis

from backend.background.deferred import Checkpoints, Deferred
from backend.background.reconciler import Reconciler
from backend.background.watcher import ModelWatcher
from backend.core.settings import Settings, get_settings
from backend.http.adapter import RLHFBackend
from backend.http.protocol import bp, register_errors
from backend.services import build

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the backend: services, model watcher, the ML-backend blueprint (at `/` and under `/projects/<id>/`,
    the URL `connect` registers so that every call names its project) and the RQ dashboard."""
    settings = settings or get_settings()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Requests never wait long on Redis (Label Studio gives a webhook 1 s): what needs it is deferred instead.
    timeout = settings.redis_request_timeout
    services = build(
        settings,
        Redis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout),
        checkpoint_in_commits=False,
    )
    listener = Redis.from_url(settings.redis_url, health_check_interval=30)  # pub/sub blocks: no short timeout
    watcher = ModelWatcher(services.registries, listener, services.queue.models_channel, settings.model_poll_seconds)
    backend = RLHFBackend(settings, services.store, services.queue, watcher)
    reconciler = Reconciler(backend.annotations, services.registries)
    refits = Deferred("refit-requests", services.queue.request_refit, interval=0.5)  # a burst asks once
    trains = Deferred("training-requests", backend.trigger.train, interval=0.5)
    checkpoints = Checkpoints(services.store)
    for background in (watcher.start, reconciler.start, refits.start, trains.start, checkpoints.start):
        # now, and in each process gunicorn forks
        background()
        app.before_request(background)
    app.extensions["rlhf"] = backend
    app.extensions["rlhf_settings"] = settings
    app.extensions["rlhf_refits"] = refits
    app.extensions["rlhf_trains"] = trains
    app.extensions["rlhf_registries"] = services.registries
    app.register_blueprint(bp)
    app.register_blueprint(bp, url_prefix="/projects/<int:project>", name="per_project")
    app.config["RQ_DASHBOARD_REDIS_URL"] = settings.redis_url
    rq_dashboard.web.setup_rq_connection(app)
    app.register_blueprint(rq_dashboard.blueprint, url_prefix="/rq")
    register_errors(app)
    log.info(
        "backend ready: base %s, lineages %s, store %s",
        services.registries.base.model_version(),
        services.registries.lineages(),
        services.store.engine.url.drivername,
    )
    return app
