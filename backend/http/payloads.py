"""What Label Studio (or anyone) may send, checked at the edge: JSON that parses within bounds, holds no text a
database cannot store, and has the declared shape for each endpoint and webhook action. Anything else is a
4xx with a message, before the domain sees it."""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from backend.core.defaults import MAX_INT

MAX_DEPTH = 64  # Label Studio's payloads nest a few levels; 10,000 levels would exhaust the parser's stack

Id = Annotated[StrictInt, Field(ge=1, le=MAX_INT)]


class PayloadError(ValueError):
    """The request body is not acceptable; the message says why."""


def parse_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a PayloadError: not UTF-8, bad JSON, too deep, numbers beyond 64 bits or
    not finite, lone UTF-16 surrogates or NUL characters (neither UTF-8 nor PostgreSQL stores them)."""
    try:
        text = raw.decode("utf-8")
        body = json.loads(text, parse_int=_int, parse_float=_float, parse_constant=_constant)
    except PayloadError:
        raise
    except RecursionError:
        raise PayloadError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise PayloadError(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise PayloadError("body must be a JSON object")
    _check_depth(body)
    if _ESCAPED_NUL_OR_SURROGATE.search(text):  # only an escape can put either in a string: rare, then look
        _check_texts(body)
    return body


# In UTF-8 JSON text a NUL or a lone surrogate can only arrive as an escape (raw control characters are not
# JSON, and UTF-8 cannot encode surrogates); a match may be a false alarm (an escaped backslash, a valid pair).
_ESCAPED_NUL_OR_SURROGATE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def _int(digits: str) -> int:
    value = int(digits)
    if not -MAX_INT - 1 <= value <= MAX_INT:
        raise PayloadError("integer beyond 64 bits")
    return value


def _float(digits: str) -> float:
    value = float(digits)
    if not math.isfinite(value):
        raise PayloadError(f"number {digits[:20]} is beyond a 64-bit float")
    return value


def _constant(name: str) -> float:
    raise PayloadError("NaN and Infinity are not JSON numbers")


def _check_depth(value: Any) -> None:
    """Walk the containers without recursion: Label Studio's payloads nest a few levels."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise PayloadError(f"JSON nested deeper than {MAX_DEPTH} levels")
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def _check_texts(value: Any) -> None:
    """Every key and string, for what no store can hold."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                _text(key)
                stack.append(child)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            _text(item)


def _text(text: str) -> None:
    if "\x00" in text:
        raise PayloadError("text contains a NUL character")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PayloadError("text contains a lone UTF-16 surrogate") from None


class Loose(BaseModel):
    """Label Studio sends more fields than we read; unknown ones are kept, declared ones are checked."""

    model_config = ConfigDict(extra="allow")


class IdRef(Loose):
    id: Id


class TaskIn(Loose):
    id: Id
    data: dict[str, Any]
    project: Id | None = None


class AnnotationIn(Loose):
    id: Id
    task: Id | IdRef | None = None
    project: Id | None = None
    result: list[dict[str, Any]] | None = None
    was_cancelled: bool | None = False
    lead_time: float | None = None


class SetupBody(Loose):
    project: StrictStr | Id | IdRef | None = None  # None: the URL's /projects/<id>/ names it
    label_config: StrictStr = Field(alias="schema")
    hostname: StrictStr | None = None
    access_token: StrictStr | None = None
    extra_params: StrictStr | dict[str, Any] | None = None


class PredictBody(Loose):
    tasks: list[TaskIn] = Field(min_length=1)
    project: StrictStr | Id | IdRef | None = None
    label_config: StrictStr | None = None
    params: dict[str, Any] | None = None


ProjectRef = Id | IdRef | StrictStr


class WebhookBody(Loose):
    action: StrictStr
    project: ProjectRef | None = None


class AnnotationEvent(WebhookBody):
    annotation: AnnotationIn
    task: TaskIn | Id | None = None


class AnnotationsEvent(WebhookBody):
    """Label Studio 1.23 sends the list under "annotation" (and the tasks under "task"); older ones "annotations"."""

    annotations: list[AnnotationIn] | None = None
    annotation: list[AnnotationIn] | None = None
    task: list[TaskIn] | TaskIn | Id | None = None
    tasks: list[TaskIn] | None = None

    @model_validator(mode="after")
    def _has_annotations(self) -> AnnotationsEvent:
        if self.annotations is None and self.annotation is None:
            raise ValueError("'annotations' (or 'annotation') must be a list of annotation objects")
        return self


class DeletedEvent(WebhookBody):
    annotations: list[IdRef | Id]


class TasksEvent(WebhookBody):
    tasks: list[TaskIn]


class TaskIdsEvent(WebhookBody):
    tasks: list[IdRef | Id]


class ProjectEvent(WebhookBody):
    project: IdRef


WEBHOOKS: dict[str, type[WebhookBody]] = {
    "ANNOTATION_CREATED": AnnotationEvent,
    "ANNOTATION_UPDATED": AnnotationEvent,
    "ANNOTATIONS_CREATED": AnnotationsEvent,
    "ANNOTATIONS_DELETED": DeletedEvent,
    "TASKS_CREATED": TasksEvent,
    "TASKS_DELETED": TaskIdsEvent,
    "PROJECT_DELETED": ProjectEvent,
}


def validate(model: type[BaseModel], body: dict[str, Any]) -> None:
    """Raise PayloadError naming the first field that does not match the declared shape."""
    try:
        model.model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise PayloadError(f"{where}: {first['msg']}") from None
