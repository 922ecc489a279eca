"""What a request names, checked before anything is stored: projects, tasks, label configs and a project's
extra params. A failure is an `InvalidRequest`, which the HTTP layer answers with its 4xx status."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from backend.core.algorithms import POLICY_ALGORITHMS
from backend.core.defaults import MAX_INT
from backend.core.settings import SELECTIONS, selection_name
from backend.labels.preferences import InvalidConfig, Layout, parse_layout
from backend.store.registry import RegistryError, valid_lineage


class InvalidRequest(ValueError):
    """A request Label Studio (or a caller) sent that cannot be served; answered with a 4xx."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def project_id_of(value: Any) -> int:
    """Label Studio names projects as `<id>.<created_ts>` in /setup and /predict, as an int or object elsewhere."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool):
        value = None
    try:
        project_id = int(str(value).split(".")[0])
    except (TypeError, ValueError):
        project_id = 0
    if not 1 <= project_id <= MAX_INT:
        raise InvalidRequest(f"project must be an id or '<id>.<timestamp>', got {str(value)[:80]!r}")
    return project_id


def require(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """data[key], which must be of `kind` (a bool never counts as an int)."""
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidRequest(f"'{key}' must be {getattr(kind, '__name__', kind)}")
    return value


def ids_of(items: list[Any], what: str) -> list[int]:
    """Label Studio lists deleted things as `[{id}]` (or bare ids)."""
    ids = [item.get("id") if isinstance(item, dict) else item for item in items]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise InvalidRequest(f"'{what}' must be a list of {{id: int}}")
    return ids


def layout_of(label_config: Any) -> Layout:
    """The layout of a label config this backend can serve (Pairwise or Ranker), else a 4xx."""
    if not isinstance(label_config, str):
        raise InvalidRequest("label config must be a string of XML")
    try:
        return parse_layout(label_config)
    except InvalidConfig as exc:
        raise InvalidRequest(str(exc), 422) from None


def task_of(task: Any, layout: Layout) -> tuple[int, dict[str, Any]]:
    """(id, data) of a task object that carries a prompt."""
    if not isinstance(task, dict):
        raise InvalidRequest("each task must be an object")
    task_id, data = require(task, "id", int), require(task, "data", dict)
    prompt = data.get(layout.prompt_key)
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidRequest(f"task {task_id} has no '{layout.prompt_key}' text", 422)
    return task_id, data


def task_ref(annotation: dict[str, Any]) -> Any:
    """The task an annotation names: an id, or an object with one."""
    task = annotation.get("task")
    return task.get("id") if isinstance(task, dict) else task


def extra_params(extra_params: Any) -> dict[str, str]:
    """`extra_params` arrives as JSON text (or null); it may pick the project's policy recipe (`algorithm`),
    a lineage to pool the project with (`lineage`; default: its own) and its SELECTION (`selection`)."""
    if not extra_params:
        return {}
    try:
        params = json.loads(extra_params) if isinstance(extra_params, str) else extra_params
    except json.JSONDecodeError:
        raise InvalidRequest("extra_params must be JSON text") from None
    params = params if isinstance(params, dict) else {}
    algorithm, lineage, selection = params.get("algorithm"), params.get("lineage"), params.get("selection")
    selection = selection_name(selection) if isinstance(selection, str) else selection
    if algorithm is not None and algorithm not in POLICY_ALGORITHMS:
        raise InvalidRequest(f"extra_params.algorithm must be one of {POLICY_ALGORITHMS}")
    if selection is not None and selection not in SELECTIONS:
        raise InvalidRequest(f"extra_params.selection must be one of {SELECTIONS}")
    if lineage is not None:
        try:
            valid_lineage(lineage)
        except RegistryError as exc:
            raise InvalidRequest(f"extra_params.{exc}") from None
    return {
        k: v for k, v in (("algorithm", algorithm), ("lineage", lineage), ("selection", selection)) if v is not None
    }


def utc(value: Any) -> datetime | None:
    """A Label Studio timestamp (ISO text or datetime) as naive UTC, the way the store keeps times."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value
