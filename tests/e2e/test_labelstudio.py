"""backend.labelstudio against a real Label Studio, with a stub ML backend recording what it is sent."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

import pytest

from backend import labelstudio as ls
from tests.support.labelstudio_server import LabelStudioServer, listed_versions, ml_backend_id
from tests.support.settings import PAYLOADS
from tests.support.wait import wait_for

pytestmark = pytest.mark.labelstudio

PAIRWISE = (
    '<View><Text name="prompt" value="$prompt"/>'
    '<Pairwise name="comparison" toName="answer1,answer2"/>'
    '<Text name="answer1" value="$answer1"/><Text name="answer2" value="$answer2"/></View>'
)
RANKER = (
    '<View><Text name="prompt" value="$prompt"/>'
    '<List name="answers" value="$items" title="Answers"/><Ranker name="rank" toName="answers"/></View>'
)
# Annotation keys of data/ls-pairwise-export-32.json, a JSON export made by hand from Label Studio.
EXPORTED_ANNOTATION_KEYS = {
    "completed_by",
    "created_at",
    "ground_truth",
    "id",
    "last_action",
    "last_created_by",
    "lead_time",
    "parent_annotation",
    "parent_prediction",
    "prediction",
    "project",
    "result",
    "result_count",
    "task",
    "unique_id",
    "updated_at",
    "updated_by",
    "was_cancelled",
}
ITEMS = [{"id": "a", "title": "A", "body": "answer a"}, {"id": "b", "title": "B", "body": "answer b"}]


class StubBackend:
    """A throwaway ML backend: answers /health, /setup, /versions, /webhook and records every request."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _record(self, body: object) -> None:
                with stub.lock:  # path: the endpoint, without the /projects/<id> prefix `connect` registers
                    stub.requests.append(
                        {
                            "method": self.command,
                            "path": re.sub(r"^/projects/\d+", "", self.path),
                            "raw_path": self.path,
                            "headers": dict(self.headers),
                            "body": body,
                        }
                    )

            def do_GET(self) -> None:
                self._record(None)
                self._reply(
                    {"status": "UP", "model_class": "Stub"}
                    if self.path.startswith("/health")
                    else {"versions": ["v1", "v2"]}
                )

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._record(json.loads(raw or b"null"))
                self._reply({"model_version": "test"} if self.path.startswith("/setup") else {"status": "ok"})

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self, pred, timeout: float = 10.0) -> dict:
        """The first recorded request matching pred, waiting for it to arrive."""

        def first() -> dict | None:
            with self.lock:
                return next((r for r in self.requests if pred(r)), None)

        return wait_for(
            first, timeout, 0.1, lambda: f"such a request; got {[(r['method'], r['path']) for r in self.requests]}"
        )

    def webhook(self, action: str, timeout: float = 10.0) -> dict:
        """The first /webhook request carrying that action."""
        return self.received(lambda r: r["path"] == "/webhook" and (r["body"] or {}).get("action") == action, timeout)


@pytest.fixture
def stub() -> Iterator[StubBackend]:
    backend = StubBackend()
    yield backend
    backend.server.shutdown()
    backend.server.server_close()


@pytest.fixture
def c(label_studio: LabelStudioServer):
    return ls.client(label_studio.url, label_studio.token)


_counter = iter(range(10**6))


def _title(kind: str) -> str:
    return f"{kind} test {next(_counter)} {time.monotonic_ns()}"


def _connect(server: LabelStudioServer, stub: StubBackend, config: str, **kw) -> ls.ConnectResult:
    return ls.connect(
        server.url, server.token, stub.url, title=kw.pop("title", _title("RLHF")), label_config=config, **kw
    )


def test_connect_twice_changes_nothing_the_second_time(label_studio, stub, c):
    title = _title("RLHF pairwise")
    first = _connect(label_studio, stub, PAIRWISE, title=title, auth_user="ls", auth_pass="s3cret")
    joined = "\n".join(first.actions)
    assert f"created project {first.project_id} {title!r}" in joined
    assert "registered ML backend" in joined and "added the Authorization header" in joined

    setup = stub.received(lambda r: r["path"] == "/setup")  # Label Studio calls /setup on registration
    expected_auth = "Basic " + base64.b64encode(b"ls:s3cret").decode()
    assert setup["headers"]["Authorization"] == expected_auth
    assert setup["body"]["project"].startswith(f"{first.project_id}.")
    assert setup["body"]["schema"] == PAIRWISE
    assert setup["body"]["access_token"] == label_studio.token

    for again in (
        _connect(label_studio, stub, PAIRWISE, title=title, auth_user="ls", auth_pass="s3cret"),
        ls.connect(
            label_studio.url,
            label_studio.token,
            stub.url + "/",
            project_id=first.project_id,
            auth_user="ls",
            auth_pass="s3cret",
        ),
    ):
        assert again.project_id == first.project_id
        assert again.ml_backend_id == first.ml_backend_id and again.webhook_id == first.webhook_id
        assert all(line.startswith("already") for line in again.actions), again.actions

    assert [p.id for p in c.projects.list(title=title) if p.title == title] == [first.project_id]
    created = c.projects.get(first.project_id)
    assert created.show_instruction and "better answer" in created.expert_instruction  # annotators see how to judge
    assert ls.label_config_of(c, first.project_id) == PAIRWISE
    backends = c.ml.list(project=first.project_id)
    registered = ls.project_url(stub.url, first.project_id)
    assert [(b.url, b.auth_method, b.basic_auth_user, b.is_interactive) for b in backends] == [
        (registered, "BASIC_AUTH", "ls", False)
    ]
    hooks = list(c.webhooks.list(project=str(first.project_id)))
    assert [(h.url, h.headers, h.send_payload, h.send_for_all_actions) for h in hooks] == [
        (registered + "webhook", {"Authorization": expected_auth}, True, True)
    ]
    assert ml_backend_id(c, first.project_id, registered) == first.ml_backend_id
    assert ml_backend_id(c, first.project_id, "http://127.0.0.1:9") is None


def test_connect_recreates_a_deleted_webhook_and_needs_a_project(label_studio, stub, c):
    first = _connect(label_studio, stub, PAIRWISE)
    c.webhooks.delete(first.webhook_id)
    again = ls.connect(label_studio.url, label_studio.token, stub.url, project_id=first.project_id)
    assert any(line.startswith("created webhook") for line in again.actions)
    with pytest.raises(ValueError, match="label_config"):
        ls.connect(label_studio.url, label_studio.token, stub.url, title=_title("missing"))
    with pytest.raises(ValueError, match="project_id"):
        ls.connect(label_studio.url, label_studio.token, stub.url, project_id=999_999)


def test_connect_adds_basic_auth_to_a_backend_registered_without(label_studio, stub, c):
    first = _connect(label_studio, stub, PAIRWISE)
    again = ls.connect(
        label_studio.url, label_studio.token, stub.url, project_id=first.project_id, auth_user="ls", auth_pass="pw"
    )
    registered = ls.project_url(stub.url, first.project_id)
    assert f"set basic auth on ML backend {first.ml_backend_id} ({registered})" in again.actions
    assert f"added the Authorization header to webhook {first.webhook_id}" in again.actions
    (backend,) = c.ml.list(project=first.project_id)
    assert (backend.auth_method, backend.basic_auth_user, backend.basic_auth_pass_is_set) == ("BASIC_AUTH", "ls", True)
    expected_auth = "Basic " + base64.b64encode(b"ls:pw").decode()
    assert stub.received(lambda r: r["path"] == "/setup" and r["headers"].get("Authorization") == expected_auth)


def test_connect_reports_an_unreachable_backend(label_studio):
    with pytest.raises(ls.LabelStudioError, match="health check failed"):
        ls.connect(
            label_studio.url, label_studio.token, "http://127.0.0.1:9", title=_title("RLHF"), label_config=PAIRWISE
        )


def test_import_prompts_then_list_tasks_across_pages(label_studio, stub, c):
    pid = _connect(label_studio, stub, PAIRWISE).project_id
    prompts = [f"Question {i}?" for i in range(5)]
    assert ls.import_prompts(c, pid, prompts, {"answer1": "", "answer2": ""}) == 5
    tasks = ls.list_tasks(c, pid, page_size=2)
    assert [t["data"] for t in tasks] == [{"prompt": p, "answer1": "", "answer2": ""} for p in prompts]
    created = stub.webhook("TASKS_CREATED")
    assert sorted(t["id"] for t in created["body"]["tasks"]) == sorted(t["id"] for t in tasks)
    with pytest.raises(ls.LabelStudioError, match="answer1"):  # Label Studio checks every $key on import
        ls.import_prompts(c, pid, ["no answers"], {})


def test_ranker_accepts_an_empty_items_list_but_not_null(label_studio, stub, c):
    pid = _connect(label_studio, stub, RANKER).project_id
    assert ls.import_prompts(c, pid, ["Rank these"], {"items": []}) == 1
    assert ls.list_tasks(c, pid)[0]["data"] == {"prompt": "Rank these", "items": []}
    with pytest.raises(ls.LabelStudioError, match="List expects"):
        ls.import_prompts(c, pid, ["Rank these"], {"items": None})


def test_update_task_data_is_visible_through_the_api(label_studio, stub, c):
    pid = _connect(label_studio, stub, PAIRWISE).project_id
    ls.import_prompts(c, pid, ["Q?"], {"answer1": "", "answer2": ""})
    task_id = ls.list_tasks(c, pid)[0]["id"]
    data = {"prompt": "Q?", "answer1": "first candidate", "answer2": "second candidate"}
    ls.update_task_data(c, task_id, data)
    assert c.tasks.get(str(task_id)).data == data
    assert ls.list_tasks(c, pid)[0]["data"] == data


def test_export_annotations_returns_the_created_annotation(label_studio, stub, c):
    pid = _connect(label_studio, stub, PAIRWISE, auth_user="ls", auth_pass="pw").project_id
    ls.import_prompts(c, pid, ["Q1?", "Q2?", "Q3?"], {"answer1": "yes", "answer2": "no"})
    t1, t2, _t3 = (t["id"] for t in ls.list_tasks(c, pid))
    result = [{"from_name": "comparison", "to_name": "comparison", "type": "pairwise", "value": {"selected": "left"}}]
    ann = c.annotations.create(t1, result=result, lead_time=2.0)
    skipped = c.annotations.create(t2, result=[], was_cancelled=True)

    exported = {t["id"]: t for t in ls.export_annotations(c, pid)}
    assert sorted(exported) == [t1, t2]  # annotated and skipped tasks, not the untouched one
    assert {"id", "data", "annotations", "predictions", "drafts", "meta"} <= set(exported[t1])
    assert EXPORTED_ANNOTATION_KEYS <= set(exported[t1]["annotations"][0])
    (a,) = exported[t1]["annotations"]
    assert (a["id"], a["result"], a["was_cancelled"], a["task"]) == (ann.id, result, False, t1)
    assert exported[t1]["data"] == {"prompt": "Q1?", "answer1": "yes", "answer2": "no"}
    assert [(x["id"], x["was_cancelled"]) for x in exported[t2]["annotations"]] == [(skipped.id, True)]
    assert len(ls.export_annotations(c, pid, all_tasks=True)) == 3

    hook = stub.webhook("ANNOTATION_CREATED")  # the webhook carries the header connect() added
    assert hook["headers"]["Authorization"] == "Basic " + base64.b64encode(b"ls:pw").decode()
    assert hook["body"]["annotation"]["id"] == ann.id and hook["body"]["task"]["id"] == t1


def _shape(payload: dict) -> dict:
    """Top-level keys and annotation keys, to compare with a saved capture."""
    ann = payload["annotation"]
    first = ann[0] if isinstance(ann, list) else ann
    return {"top": sorted(payload), "annotation": sorted(first), "list": isinstance(ann, list)}


def test_ranker_webhooks_match_the_saved_captures(label_studio, stub, c):
    pid = _connect(label_studio, stub, RANKER).project_id
    ls.import_prompts(c, pid, ["Q1?", "Q2?", "Q3?"], {"items": ITEMS})
    t1, t2, t3 = (t["id"] for t in ls.list_tasks(c, pid))
    rank = [{"from_name": "rank", "to_name": "answers", "type": "ranker", "value": {"ranker": {"rank": ["b", "a"]}}}]
    c.annotations.create(t1, result=rank)
    one = stub.webhook("ANNOTATION_CREATED")["body"]
    assert one["annotation"]["result"] == rank
    saved = json.loads((PAYLOADS / "webhook-annotation-created.ranker.json").read_text())["body"]
    assert _shape(one) == _shape(saved)

    # ANNOTATIONS_CREATED comes only from "predictions -> annotations" in the Data Manager.
    for t in (t2, t3):
        c.predictions.create(task=t, result=rank, model_version="test", score=0.5)
    c.actions.create(id="predictions_to_annotations", project=pid, selected_items={"all": False, "included": [t2, t3]})
    many = stub.webhook("ANNOTATIONS_CREATED")["body"]
    assert sorted(a["task"] for a in many["annotation"]) == [t2, t3]  # a list under the singular key
    assert sorted(t["id"] for t in many["task"]) == [t2, t3]
    saved = json.loads((PAYLOADS / "webhook-annotations-created.ranker.json").read_text())["body"]
    assert _shape(many) == _shape(saved)


def test_model_versions_are_relayed_from_the_backend(label_studio, stub, c):
    result = _connect(label_studio, stub, PAIRWISE)
    assert listed_versions(c, result.ml_backend_id) == ["v1", "v2"]
    # Label Studio's GET /versions names no project; joined onto the registered URL, the path does
    assert stub.received(lambda r: r["raw_path"] == f"/projects/{result.project_id}/versions")


def test_address_and_token_come_from_one_source() -> None:
    """The operator's settings win as a pair; /setup's hostname and token are used only together."""
    assert ls.access("http://evil:1", "setup-token", "http://ls:8080", "operator") == ("http://ls:8080", "operator")
    assert ls.access("http://ls:8080", "setup-token", "", "") == ("http://ls:8080", "setup-token")
    assert ls.access("http://evil:1", None, "", "operator") is None  # never the operator's token to /setup's host
    assert ls.access(None, None, "http://ls:8080", "") is None


def test_a_setup_hostname_outside_the_allow_list_is_never_called() -> None:
    allowed = ("ls.internal",)
    assert ls.access("http://ls.internal:8080", "t", "", "", allowed) == ("http://ls.internal:8080", "t")
    assert ls.access("http://attacker.example", "t", "", "", allowed) is None
