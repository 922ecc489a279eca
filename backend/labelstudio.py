"""Everything we ask of Label Studio, through label-studio-sdk: connect, import, candidates, export."""

from __future__ import annotations

import base64
import copy
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from backend.core.settings import QUEUE_BY_CHANCE
from backend.labels.inputs import utc
from backend.labels.preferences import parse_layout

log = logging.getLogger(__name__)

IMPORT_BATCH = 1000
INSTRUCTIONS = (  # shown to annotators before each task (the project's "show instructions" setting is on)
    "<p>Read the prompt, then judge the answers as the person who asked would: which one helps more, is "
    "correct, and says it clearly and safely?</p><p><b>Pairwise:</b> click the better answer, then Submit. "
    "<b>Ranker:</b> drag the answers into order, best at the top, then Submit.</p><p>Nothing is pre-selected; "
    "if both are equally bad, pick the less bad one, or Skip.</p>"
)


class LabelStudioError(RuntimeError):
    """Label Studio refused a request; the message carries its reason."""


@dataclass
class ConnectResult:
    """What connect() found or changed, as the project id and human-readable lines."""

    project_id: int
    actions: list[str] = field(default_factory=list)
    ml_backend_id: int | None = None
    webhook_id: int | None = None
    model_version: str | None = None  # what Label Studio recorded from the backend's /setup


def client(url: str, api_key: str) -> LabelStudio:
    """An SDK client; api_key may be a legacy token or a personal access (refresh) token."""
    return LabelStudio(base_url=url.rstrip("/"), api_key=api_key)


def _reason(e: ApiError) -> str:
    """Label Studio's own words from an ApiError body."""
    body = e.body
    if isinstance(body, dict):
        return json.dumps(body.get("validation_errors") or body.get("detail") or body)
    return str(body)[:500]


def _basic_auth_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _find_project(c: LabelStudio, project_id: int | None, title: str | None) -> Any | None:
    """The project with that id, else the one titled exactly title, else None."""
    if project_id is not None:
        try:
            return c.projects.get(project_id)
        except ApiError as e:
            if e.status_code == 404:
                return None
            raise
    for p in c.projects.list(title=title):  # "contains", case-insensitive: filter exactly
        if p.title == title:
            return p
    return None


def _ensure_project(
    c: LabelStudio, project_id: int | None, title: str | None, label_config: str | None, actions: list[str]
) -> int:
    """Find the project or create it with label_config; record what happened in actions."""
    if project_id is None and not title:
        raise ValueError("connect() needs project_id or title: pass the project to use or the title to create")
    project = _find_project(c, project_id, title)
    if project is None:
        if project_id is not None:
            raise ValueError(f"project_id={project_id} does not exist in Label Studio; pass title= to create one")
        if not label_config:
            raise ValueError(f"project {title!r} does not exist; pass label_config= to create it")
        try:
            project = c.projects.create(
                title=title, label_config=label_config, show_instruction=True, expert_instruction=INSTRUCTIONS
            )
        except ApiError as e:
            raise LabelStudioError(f"could not create project {title!r}: {_reason(e)}") from e
        actions.append(f"created project {project.id} {title!r}")
        return project.id
    line = f"already have project {project.id} {project.title!r}"
    if label_config and (project.label_config or "").strip() != label_config.strip():
        line += " (its label config differs from the given one; left unchanged)"
    actions.append(line)
    return project.id


def _find_ml(c: LabelStudio, project_id: int, backend_url: str) -> Any | None:
    """The project's ML backend registered at backend_url (listing makes Label Studio call /health, /setup)."""
    want = backend_url.rstrip("/")
    return next((ml for ml in c.ml.list(project=project_id) if ml.url.rstrip("/") == want), None)


def _ensure_ml_backend(
    c: LabelStudio, project_id: int, backend_url: str, auth_user: str, auth_pass: str, actions: list[str]
) -> tuple[int, bool]:
    """Register backend_url with the project unless it is there; return (id, created)."""
    ml = _find_ml(c, project_id, backend_url)
    if ml is not None:
        if auth_user and (ml.auth_method != "BASIC_AUTH" or ml.basic_auth_user != auth_user):
            try:  # Label Studio 1.23 re-runs /health and /setup on PATCH and needs url and project for it
                c.ml.update(
                    ml.id,
                    url=ml.url,
                    project=project_id,
                    auth_method="BASIC_AUTH",
                    basic_auth_user=auth_user,
                    basic_auth_pass=auth_pass,
                )
            except ApiError as e:
                raise LabelStudioError(f"could not set basic auth on ML backend {ml.id}: {_reason(e)}") from e
            actions.append(f"set basic auth on ML backend {ml.id} ({backend_url})")
        else:
            actions.append(f"already registered ML backend {ml.id} ({backend_url}) in project {project_id}")
        return ml.id, False
    auth: dict[str, Any] = {}
    if auth_user:
        auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": auth_user, "basic_auth_pass": auth_pass}
    try:  # Label Studio calls the backend's /health and /setup before it answers
        ml = c.ml.create(project=project_id, url=backend_url, title="RLHF", is_interactive=False, **auth)
    except ApiError as e:
        raise LabelStudioError(f"Label Studio could not register the ML backend {backend_url}: {_reason(e)}") from e
    actions.append(
        f"registered ML backend {ml.id} ({backend_url}) in project {project_id}, model version {ml.model_version!r}"
    )
    return ml.id, True


def _ensure_webhook(
    c: LabelStudio, project_id: int, backend_url: str, auth_header: str | None, ml_created: bool, actions: list[str]
) -> int:
    """Make sure the project's <backend>/webhook exists and carries the auth header; return its id."""
    url = backend_url + "/webhook"
    hook = next((w for w in c.webhooks.list(project=str(project_id)) if w.url == url), None)
    if hook is None:  # Label Studio creates it with the ML backend; someone deleted it since
        hook = c.webhooks.create(url=url, project=project_id, send_payload=True, send_for_all_actions=True)
        actions.append(f"created webhook {hook.id} -> {url}")
    elif ml_created:
        actions.append(f"Label Studio created webhook {hook.id} -> {url}")
    else:
        actions.append(f"already have webhook {hook.id} -> {url}")
    headers = dict(hook.headers or {})
    if auth_header and headers.get("Authorization") != auth_header:
        headers["Authorization"] = auth_header
        c.webhooks.update(hook.id, headers=headers)
        actions.append(f"added the Authorization header to webhook {hook.id}")
    elif auth_header:
        actions.append(f"already sending the Authorization header on webhook {hook.id}")
    return hook.id


def project_url(backend_url: str, project_id: int) -> str:
    """The ML-backend URL registered for a project: `<backend>/projects/<id>/`. Label Studio joins every call
    onto it (urljoin), so /versions, which it sends without naming the project, arrives as
    /projects/<id>/versions; the webhook it creates is `<that URL>webhook`."""
    return f"{backend_url.rstrip('/')}/projects/{project_id}/"


def connect(
    url: str,
    api_key: str,
    backend_url: str,
    *,
    project_id: int | None = None,
    title: str | None = None,
    label_config: str | None = None,
    auth_user: str = "",
    auth_pass: str = "",
) -> ConnectResult:
    """Create the project if needed, register the backend and its authenticated webhook; idempotent."""
    c = client(url, api_key)
    result = ConnectResult(project_id=0)
    result.project_id = _ensure_project(c, project_id, title, label_config, result.actions)
    ml_url = project_url(backend_url, result.project_id)
    result.ml_backend_id, created = _ensure_ml_backend(
        c, result.project_id, ml_url, auth_user, auth_pass, result.actions
    )
    auth_header = _basic_auth_header(auth_user, auth_pass) if auth_user else None
    result.webhook_id = _ensure_webhook(c, result.project_id, ml_url.rstrip("/"), auth_header, created, result.actions)
    if label_config:
        _ensure_view(c, result.project_id, parse_layout(label_config).hidden_columns(), result.actions)
    result.model_version = c.ml.get(result.ml_backend_id).model_version
    return result


VIEW_TITLE = "RLHF"


def _ensure_view(c: LabelStudio, project_id: int, hidden: list[str], actions: list[str]) -> None:
    """A Data Manager tab showing the prompt and readable answer columns, without internal JSON fields."""
    if any((v.data or {}).get("title") == VIEW_TITLE for v in c.views.list(project=project_id)):
        actions.append(f"already have the Data Manager tab {VIEW_TITLE!r}")
        return
    columns = {"explore": hidden, "labeling": hidden}
    try:
        c.views.create(project=project_id, data={"title": VIEW_TITLE, "hiddenColumns": columns})
    except ApiError as e:  # a nicety: the project works without it
        log.warning("could not create the Data Manager tab: %s", _reason(e))
        return
    actions.append(f"created the Data Manager tab {VIEW_TITLE!r} (internal fields hidden)")


def import_prompts(
    c: LabelStudio, project_id: int, prompts: list[str], data_keys: dict[str, Any], prompt_key: str = "prompt"
) -> int:
    """Import one task per prompt, under the key the label config reads it from, with empty candidate fields
    (Label Studio requires every $key)."""
    count = 0
    for start in range(0, len(prompts), IMPORT_BATCH):
        batch = [{"data": {prompt_key: p, **copy.deepcopy(data_keys)}} for p in prompts[start : start + IMPORT_BATCH]]
        try:
            r = c.projects.import_tasks(project_id, request=batch)
        except ApiError as e:
            raise LabelStudioError(f"Label Studio refused the tasks for project {project_id}: {_reason(e)}") from e
        count += r.task_count or 0
    return count


def list_tasks(c: LabelStudio, project_id: int, page_size: int = 100) -> list[dict]:
    """All the project's tasks as {"id", "data"}, every page."""
    return [{"id": t.id, "data": t.data} for t in c.tasks.list(project=project_id, page_size=page_size)]


class TaskGone(LabelStudioError):
    """The task no longer exists in Label Studio (deleted, or its project was)."""


def update_task_data(c: LabelStudio, task_id: int, data: dict) -> datetime | None:
    """Replace a task's data (Label Studio does not validate it against the config here); returns when Label
    Studio stored it, by its own clock (naive UTC), which annotations' timestamps are compared with."""
    try:
        task = c.tasks.update(str(task_id), data=data)
    except ApiError as e:
        if e.status_code == 404:
            raise TaskGone(f"task {task_id} no longer exists in Label Studio") from e
        raise
    return utc(getattr(task, "updated_at", None))


def tasks_with_drafts(c: LabelStudio, project_id: int) -> set[int]:
    """Tasks an annotator has a draft of: work in progress that regenerating the candidates would invalidate."""
    return {t.id for t in c.tasks.list(project=project_id, page_size=100) if getattr(t, "drafts", None)}


def access(
    project_url: str | None,
    project_token: str | None,
    env_url: str,
    env_token: str,
    allowed_hosts: tuple[str, ...] = (),
) -> tuple[str, str] | None:
    """Where to reach Label Studio, and with which token, from ONE source: LABEL_STUDIO_URL and
    LABEL_STUDIO_API_KEY when set (the operator's token then goes to that host only, whatever /setup said),
    else the hostname and token Label Studio itself sent to /setup, if its host is allowed
    (LABEL_STUDIO_HOSTS, when set); None when neither is complete."""
    if env_url and env_token:
        return env_url, env_token
    if not (project_url and project_token):
        return None
    host = urlsplit(project_url).hostname or ""
    if allowed_hosts and host not in allowed_hosts:
        log.warning("not calling %s: its host is not in LABEL_STUDIO_HOSTS", project_url)
        return None
    return project_url, project_token


def export_annotations(c: LabelStudio, project_id: int, all_tasks: bool = False) -> list[dict]:
    """The annotated tasks (skipped ones included) in Label Studio's JSON export format."""
    chunks = c.projects.exports.download_sync(project_id, export_type="JSON", download_all_tasks=all_tasks)
    return json.loads(b"".join(chunks))


def label_config_of(c: LabelStudio, project_id: int) -> str:
    """The project's label config XML."""
    return c.projects.get(project_id).label_config or ""


def order_queue(c: LabelStudio, project_id: int, selection: str, model_version: str | None = None) -> list[str]:
    """Make the annotators' queue follow SELECTION: "Uncertainty sampling" serves the task with the lowest
    prediction score first, among predictions of the project's model version only (so that is set to the
    version whose scores were published; Label Studio refuses a version it holds no predictions of);
    a strategy that leaves the order to chance (SELECTION=random, dts) uses "Uniform sampling". Returns what
    changed."""
    project = c.projects.get(project_id)
    sampling = "Uniform sampling" if selection in QUEUE_BY_CHANCE else "Uncertainty sampling"
    wanted = {"sampling": sampling} | ({"model_version": model_version} if model_version else {})
    changed = {k: v for k, v in wanted.items() if getattr(project, k, None) != v}
    if changed:
        try:
            c.projects.update(project_id, **changed)
        except ApiError as e:
            raise LabelStudioError(f"could not set {changed} on project {project_id}: {_reason(e)}") from e
    return [f"{k} = {v!r}" for k, v in changed.items()]


UPDATE_THREADS = 8  # prediction updates in flight at once (one request each)
SCORE_DIGITS = 6  # a published score is the stored one to this many decimals; any move at that precision republishes


def publish_scores(c: LabelStudio, project_id: int, model_version: str, scores: dict[int, float]) -> int:
    """Give each task a prediction of this model version carrying its score (and selecting nothing), so that
    uncertainty sampling orders the queue by it. A published prediction keeps its id for good: an annotator in
    "Label All Tasks" may have its task open, and Label Studio refuses to save an annotation whose parent
    prediction was deleted meanwhile. So a moved score is changed in place (one update per prediction of this
    version), and only tasks with no prediction of this version get one, all in one import. Returns how many
    tasks were published or moved."""
    try:
        scores = {t: round(s, SCORE_DIGITS) for t, s in scores.items()}
        listed = [p for p in c.predictions.list(project=project_id) if p.model_version == model_version]
        moved = [p for p in listed if p.task in scores and p.score != scores[p.task]]
        with ThreadPoolExecutor(UPDATE_THREADS) as pool:  # one request per prediction: Label Studio has no bulk update
            list(pool.map(lambda p: c.predictions.update(p.id, score=scores[p.task]), moved))
        published = {p.task for p in listed}
        new = [t for t in scores if t not in published]
        if new:
            c.projects.import_predictions(
                project_id,
                request=[{"task": t, "result": [], "score": scores[t], "model_version": model_version} for t in new],
            )
    except ApiError as e:
        raise LabelStudioError(f"could not publish task scores to project {project_id}: {_reason(e)}") from e
    return len({p.task for p in moved}) + len(new)
