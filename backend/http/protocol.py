"""The Label Studio ML-backend HTTP protocol: /health /setup /predict /webhook /versions, plus /status."""

from __future__ import annotations

import base64
import hmac
import logging
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request
from pydantic import BaseModel
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.exceptions import HTTPException

from backend.admin.status import status_report
from backend.http.adapter import RLHFBackend
from backend.http.payloads import (
    WEBHOOKS,
    PayloadError,
    PredictBody,
    SetupBody,
    WebhookBody,
    parse_json,
    validate,
)
from backend.labels.inputs import InvalidRequest, project_id_of

log = logging.getLogger(__name__)
bp = Blueprint("ml_backend", __name__)
OPEN_ENDPOINTS = {"ml_backend.health", "per_project.health", "ml_backend.ready"}


def _model() -> RLHFBackend:
    return current_app.extensions["rlhf"]


def _json_body(model: type[BaseModel] | None = None) -> dict[str, Any]:
    """The request's JSON object, checked (payloads.parse_json) and, given a model, of its declared shape."""
    body = parse_json(request.get_data(cache=True))
    if model is not None:
        validate(model, body)
    return body


@bp.before_app_request
def _basic_auth() -> Response | None:
    """Every endpoint but /health needs BASIC_AUTH_USER/PASS when they are set (constant-time compare)."""
    settings = current_app.extensions["rlhf_settings"]
    if not settings.auth_enabled or request.endpoint in OPEN_ENDPOINTS:
        return None
    expected = base64.b64encode(f"{settings.basic_auth_user}:{settings.basic_auth_pass}".encode()).decode()
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "basic" and hmac.compare_digest(credentials.strip().encode(), expected.encode()):
        return None  # the scheme name is case-insensitive (RFC 7617)
    response = jsonify(error="authentication required")
    response.status_code = 401
    response.headers["WWW-Authenticate"] = 'Basic realm="rlhf-backend"'
    return response


@bp.url_value_preprocessor
def _path_project(endpoint: str | None, values: dict[str, Any] | None) -> None:
    """Under `/projects/<id>/` (the URL `connect` registers), every call names its project, even the ones
    Label Studio sends without it (GET /versions)."""
    g.path_project = values.pop("project", None) if values else None


def _project(*candidates: Any) -> int:
    """The project a request is about: what its body says, else the URL's `/projects/<id>/`."""
    given = next((c for c in candidates if c), None)
    if given is None and g.get("path_project") is not None:
        return g.path_project
    return project_id_of(given)


@bp.get("/health")
def health() -> dict[str, Any]:
    """Liveness, the one endpoint open without credentials: it names no project and no trained version."""
    return {"status": "UP", "model_class": type(_model()).__name__}


@bp.get("/ready")
def ready() -> tuple[dict[str, Any], int]:
    """Readiness, for orchestrators (open like /health): 200 when Redis and the store answer, else 503."""
    failing = _model().unreachable()
    return {"status": "NOT READY" if failing else "READY", "failing": failing}, 503 if failing else 200


@bp.get("/")
def index() -> dict[str, Any]:
    """What the backend serves, for a person (behind auth like everything but /health)."""
    registries = current_app.extensions["rlhf_registries"]
    return {
        "status": "UP",
        "model_class": type(_model()).__name__,
        "base": registries.base.model_version(),
        "lineages": registries.lineages(),
    }


@bp.post("/setup")
def setup() -> dict[str, Any]:
    body = _json_body(SetupBody)
    return _model().setup({**body, "project": _project(body.get("project"))})


@bp.post("/predict")
def predict() -> dict[str, Any]:
    body = _json_body(PredictBody)
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise InvalidRequest("'tasks' must be a non-empty list")
    first = tasks[0] if isinstance(tasks[0], dict) else {}
    project_id = _project(body.get("project"), first.get("project"))
    params = body.get("params") if isinstance(body.get("params"), dict) else {}
    results = _model().predict(
        tasks, params.get("context"), project_id=project_id, label_config=body.get("label_config")
    )
    return {"results": results, "model_version": _model().model_version(project_id)}


@bp.post("/webhook")
def webhook() -> dict[str, Any]:
    body = _json_body(WebhookBody)
    validate(WEBHOOKS.get(body["action"], WebhookBody), body)
    result = _model().fit(body["action"], body)
    if result.get("pairs"):  # new labels: the reward head refits, asked for off this request's path
        current_app.extensions["rlhf_refits"].note(result["project"])
    if result.get("training") == "requested":  # queued off this request's path too
        current_app.extensions["rlhf_trains"].note(result["project"])
    return result


@bp.get("/versions")
def versions() -> dict[str, Any]:
    """The project's lineage's versions (under /projects/<id>/ or ?project=N); without a project, every
    lineage's, since Label Studio's GET carries none."""
    registries = current_app.extensions["rlhf_registries"]
    project = g.get("path_project") or request.args.get("project", type=int)
    if project is None:
        names = set().union(*(registries.lineage(n).servable() for n in registries.lineages()))
        return {"versions": sorted(names)}
    registry = registries.lineage(_model().lineage(project))
    return {"versions": registry.servable(), "current": registry.model_version()}


@bp.get("/status")
def status() -> dict[str, Any]:
    model = _model()
    project = g.get("path_project") or request.args.get("project", type=int)
    return status_report(model.store, model.queue, current_app.extensions["rlhf_registries"], model.settings, project)


def register_errors(app: Flask) -> None:
    """Every failure answers JSON: 4xx for bad input, 503 when Redis or the database is down."""

    @app.errorhandler(InvalidRequest)
    def _invalid(exc: InvalidRequest) -> tuple[Response, int]:
        return jsonify(error=str(exc)), exc.status

    @app.errorhandler(PayloadError)
    def _malformed(exc: PayloadError) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 400

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        return jsonify(error=exc.description, status=exc.code), exc.code or 500

    @app.errorhandler(RedisError)
    @app.errorhandler(SQLAlchemyError)
    def _unavailable(exc: Exception) -> tuple[Response, int]:
        log.exception("backing service failed")
        return jsonify(error=f"backing service unavailable: {type(exc).__name__}"), 503
