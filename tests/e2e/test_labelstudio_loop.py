"""The product as a user runs it, against a real Label Studio: `connect`, `import`, candidates written back
by a real worker, annotations submitted through Label Studio's API arriving as webhooks, retraining, and
Label Studio listing the new model version."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys

import pytest
import requests
from redis import Redis
from rq import Queue

from backend import labelstudio as ls
from backend.background.reconciler import Reconciler
from backend.http.app import create_app
from backend.labels.selection import informative_score
from backend.store import Store
from tests.support.labelstudio_server import LabelStudioServer, free_port, listed_versions, ml_backend_id
from tests.support.objectstore import bucket_url
from tests.support.services import run_worker, serving
from tests.support.settings import AUTH, ROOT, TEST_REDIS_URL, make_settings, registries_of, settings_env
from tests.support.tiny import TINY_TRAIN
from tests.support.wait import wait_for

pytestmark = pytest.mark.labelstudio
WEBHOOK_S = 15.0  # how long Label Studio's webhooks (and what the backend does on them) may take to arrive


def cli(settings, *args: str) -> str:
    """Run `python -m backend ARGS` from another directory, as an admin might: same store, same settings."""
    out = subprocess.run(
        [sys.executable, "-m", "backend", *args],
        env=settings_env(settings),
        cwd="/",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stderr.startswith(f"using Redis {settings.redis_url}, store sqlite:///{settings.data_dir}"), out.stderr
    printed = out.stdout.strip().splitlines()
    assert len(printed) == len(set(printed)) and not any(line in out.stderr for line in printed), out  # once each
    return out.stdout


def training_queued(url: str, project: int) -> int:
    """The project's reward jobs waiting in the queue, as /status lists them: a webhook that crosses
    RETRAIN_EVERY leaves queueing the chain to a thread of the backend, off Label Studio's 1 s."""
    jobs = requests.get(f"{url}/status", auth=AUTH, timeout=5).json()["jobs"]
    return sum(j["kind"] == "reward" and j["status"] == "queued" and j["project"] == project for j in jobs)


def submit(c, task: dict, selected: str) -> None:
    """An annotator's comparison, through Label Studio's API (Label Studio then calls our webhook)."""
    c.annotations.create(
        id=task["id"],
        result=[{"from_name": "comparison", "to_name": "answer1", "type": "pairwise", "value": {"selected": selected}}],
    )


def test_connect_import_generate_annotate_retrain(label_studio: LabelStudioServer, backend, tmp_path) -> None:
    settings, url = backend
    store = Store(settings.sqlalchemy_url)
    connect = [
        "connect",
        "--url",
        label_studio.url,
        "--api-key",
        label_studio.token,
        "--title",
        "RLHF e2e",
        "--backend-url",
        url,
    ]
    first = cli(settings, *connect)
    assert "created project" in first and "registered ML backend" in first
    project = int(first.split("project ")[-1].split()[0])
    registry = registries_of(settings).lineage(f"project-{project}")
    again = cli(settings, *connect)  # idempotent: a second run changes nothing
    assert all(
        line.startswith(("already", "project", "Label Studio serves", "the backend reaches"))
        for line in again.strip().splitlines()
    ), again
    assert "Label Studio serves model version 'policy-" in again  # the admin sees what is served

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"Tell me fact number {i} about the sea." for i in range(8)) + "\n")
    assert "imported 8 prompts" in cli(
        settings,
        "import",
        "--project",
        str(project),
        str(prompts),
        "--url",
        label_studio.url,
        "--api-key",
        label_studio.token,
    )
    wait_for(lambda: len(store.project_tasks(project)) == 8, WEBHOOK_S, message="TASKS_CREATED webhook")
    run_worker(settings)

    c = ls.client(label_studio.url, label_studio.token)
    tasks = ls.list_tasks(c, project)
    assert len(tasks) == 8
    for task in tasks:  # the worker wrote the policy's answers into Label Studio
        assert task["data"]["answer1"] and task["data"]["answer2"], task
        assert store.tasks([task["id"]])[task["id"]].policy_version == 0

    for i, task in enumerate(tasks[:4]):
        submit(c, task, "left" if i % 2 else "right")
    wait_for(lambda: store.counts().get(project, {}).get("pairs") == 4, WEBHOOK_S, message="annotation webhooks")
    status = requests.get(f"{url}/status", auth=AUTH, timeout=5).json()
    assert status["projects"][str(project)]["annotations"] == 4
    wait_for(
        lambda: training_queued(url, project) == 1,
        WEBHOOK_S,
        message="a chain queued: the 4th pair crossed RETRAIN_EVERY",
    )

    run_worker(settings)
    assert registry.current("policy") == 1 and registry.current("reward") == 0
    backend_id = ml_backend_id(c, project, ls.project_url(url, project))
    versions = wait_for(
        lambda: "policy-v1.reward-v0" in listed_versions(c, backend_id) and listed_versions(c, backend_id),
        WEBHOOK_S,
        message="new version listed by Label Studio",
    )
    assert "policy-v0" in versions
    labeled = {t["id"] for t in tasks[:4]}
    for task in ls.list_tasks(c, project):  # unlabeled tasks now show the new policy's answers
        expected = 0 if task["id"] in labeled else 1
        assert store.tasks([task["id"]])[task["id"]].policy_version == expected
        assert store.tasks([task["id"]])[task["id"]].candidates == [task["data"]["answer1"], task["data"]["answer2"]]

    # Label Studio's "Start Training" button reaches the backend and queues a (single) retraining
    r = requests.post(
        f"{label_studio.url}/api/ml/{backend_id}/train",
        headers={"Authorization": f"Token {label_studio.token}"},
        json={},
        timeout=30,
    )
    assert r.status_code in (200, 201), r.text
    jobs = requests.get(f"{url}/status", auth=AUTH, timeout=5).json()["jobs"]
    assert [j["status"] for j in jobs if j["kind"] == "reward"].count("queued") == 1

    # deleting an annotation in Label Studio removes its pair; resync rebuilds the store from the export
    annotation_id = c.tasks.get(tasks[0]["id"]).annotations[0]["id"]
    c.annotations.delete(annotation_id)
    wait_for(lambda: store.counts()[project]["pairs"] == 3, WEBHOOK_S, message="ANNOTATIONS_DELETED webhook")
    store.clear_project(project)  # as if webhooks had been lost
    out = cli(settings, "resync", "--project", str(project), "--url", label_studio.url, "--api-key", label_studio.token)
    assert "3 annotations, 3 pairs" in out and store.counts()[project]["pairs"] == 3


def test_health_needs_no_auth_but_predict_does(backend) -> None:
    settings, url = backend
    assert requests.get(f"{url}/health", timeout=5).json()["status"] == "UP"
    assert requests.post(f"{url}/predict", json={"tasks": []}, timeout=5).status_code == 401
    token = base64.b64encode(f"{AUTH[0]}:{AUTH[1]}".encode()).decode()
    r = requests.post(f"{url}/predict", json={"tasks": []}, headers={"Authorization": f"Basic {token}"}, timeout=5)
    assert r.status_code == 400 and "tasks" in r.json()["error"]


def test_prompts_under_the_configs_key_and_deleted_tasks(label_studio: LabelStudioServer, backend, tmp_path) -> None:
    """`import` writes prompts where the label config reads them; a task deleted in Label Studio leaves the store
    (TASKS_DELETED), and one deleted behind the backend's back (webhook off) does not abort generation."""
    settings, url = backend
    store = Store(settings.sqlalchemy_url)
    config = tmp_path / "question.xml"
    config.write_text((ROOT / "label_config.xml").read_text().replace('value="$prompt"', 'value="$question"'))
    out = cli(
        settings,
        "connect",
        "--url",
        label_studio.url,
        "--api-key",
        label_studio.token,
        "--title",
        "Deleted tasks",
        "--backend-url",
        url,
        "--label-config",
        str(config),
    )
    project = int(out.split("project ")[-1].split()[0])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"Name a colour, please ({i})." for i in range(4)) + "\n")
    cli(
        settings,
        "import",
        "--project",
        str(project),
        str(prompts),
        "--url",
        label_studio.url,
        "--api-key",
        label_studio.token,
    )
    c = ls.client(label_studio.url, label_studio.token)
    tasks = ls.list_tasks(c, project)
    assert [t["data"]["question"] for t in tasks] == [f"Name a colour, please ({i})." for i in range(4)]
    wait_for(lambda: len(store.project_tasks(project)) == 4, WEBHOOK_S, message="TASKS_CREATED webhook")

    [hook] = [w for w in c.webhooks.list(project=str(project)) if w.url == ls.project_url(url, project) + "webhook"]
    c.webhooks.update(hook.id, is_active=False)
    c.tasks.delete(str(tasks[0]["id"]))  # the backend is not told: the write-back will get a 404
    c.webhooks.update(hook.id, is_active=True)
    run_worker(settings, "--queues", "generate")
    jobs = requests.get(f"{url}/status", auth=AUTH, timeout=5).json()["jobs"]
    assert {j["status"] for j in jobs if j["kind"] == "generate" and j["project"] == project} == {"finished"}
    remaining = ls.list_tasks(c, project)
    assert len(remaining) == 3 and all(t["data"]["answer1"] and t["data"]["answer2"] for t in remaining)
    assert sorted(t.id for t in store.project_tasks(project)) == sorted(t["id"] for t in remaining)

    c.tasks.delete(str(remaining[0]["id"]))  # through the webhook this time
    wait_for(lambda: len(store.project_tasks(project)) == 2, WEBHOOK_S, message="TASKS_DELETED webhook")


def connect_project(
    settings,
    label_studio: LabelStudioServer,
    url: str,
    title: str,
    prompts: list[str],
    tmp_path,
    config: str = "label_config.xml",
) -> int:
    out = cli(
        settings,
        "connect",
        "--url",
        label_studio.url,
        "--api-key",
        label_studio.token,
        "--title",
        title,
        "--backend-url",
        url,
        "--label-config",
        str(ROOT / config),
    )
    project = int(out.split("project ")[-1].split()[0])
    source = tmp_path / f"{project}.txt"
    source.write_text("\n".join(prompts) + "\n")
    cli(
        settings,
        "import",
        "--project",
        str(project),
        str(source),
        "--url",
        label_studio.url,
        "--api-key",
        label_studio.token,
    )
    return project


def test_two_projects_keep_their_own_lineage(label_studio: LabelStudioServer, backend, tmp_path) -> None:
    """Two projects in one Label Studio, labels interleaved, one training worker: each chain trains on its own
    pairs against its own reward model, and a project's model_version moves only when its own lineage trains."""
    settings, url = backend
    store, registries = Store(settings.sqlalchemy_url), registries_of(settings)
    a = connect_project(
        settings, label_studio, url, "Lineage A", [f"Tell me about fish number {i}." for i in range(8)], tmp_path
    )
    b = connect_project(
        settings, label_studio, url, "Lineage B", [f"Name bird number {i}." for i in range(5)], tmp_path
    )
    wait_for(
        lambda: len(store.project_tasks(a)) == 8 and len(store.project_tasks(b)) == 5,
        WEBHOOK_S,
        message="TASKS_CREATED",
    )
    run_worker(settings, "--queues", "generate")
    c = ls.client(label_studio.url, label_studio.token)
    tasks = {p: ls.list_tasks(c, p) for p in (a, b)}

    def current(project: int) -> str:
        return requests.get(f"{ls.project_url(url, project)}versions", auth=AUTH, timeout=5).json()["current"]

    for task_a, task_b in zip(tasks[a][:4], tasks[b][:3] + [None], strict=False):  # A, B, A, B, A, B, A
        submit(c, task_a, "left")
        if task_b is not None:
            submit(c, task_b, "right")
    wait_for(lambda: store.counts()[a]["pairs"] == 4 and store.counts()[b]["pairs"] == 3, WEBHOOK_S, message="webhooks")
    wait_for(lambda: training_queued(url, a) == 1, WEBHOOK_S, message="A's chain queued")
    drafted = tasks[a][7]["id"]  # an annotator is half-way through this one: it must not be regenerated
    r = requests.post(
        f"{label_studio.url}/api/tasks/{drafted}/drafts",
        json={"result": [], "lead_time": 5},
        headers={"Authorization": f"Token {label_studio.token}"},
        timeout=10,
    )
    assert r.status_code in (200, 201), r.text
    run_worker(settings)  # one worker, both queues: only A's chain is due
    assert store.tasks([drafted])[drafted].policy_version == 0
    assert {t.policy_version for t in store.project_tasks(a) if t.id in {t["id"] for t in tasks[a][4:7]}} == {1}
    assert current(a) == "policy-v1.reward-v0" and current(b) == "policy-v0"  # B did not move
    b_backend = ml_backend_id(c, b, ls.project_url(url, b))
    assert "policy-v1.reward-v0" not in listed_versions(c, b_backend)  # Label Studio lists B's versions only

    submit(c, tasks[b][3], "left")  # B crosses the threshold, and A gets a second round, interleaved
    for task in tasks[a][4:8]:
        submit(c, task, "right")
    wait_for(lambda: store.counts()[a]["pairs"] == 8 and store.counts()[b]["pairs"] == 4, WEBHOOK_S, message="webhooks")
    wait_for(
        lambda: training_queued(url, a) == training_queued(url, b) == 1, WEBHOOK_S, message="A's and B's chains queued"
    )
    run_worker(settings)
    la, lb = registries.lineage(f"project-{a}"), registries.lineage(f"project-{b}")
    assert current(a) == "policy-v2.reward-v1" and current(b) == "policy-v1.reward-v0"
    assert la.meta("policy", 2)["parents"] == {"policy": 1, "reward": 1, "reference": 0}
    assert lb.meta("policy", 1)["parents"] == {"policy": 0, "reward": 0, "reference": 0}
    assert la.meta("reward", 1)["data"]["projects"] == [a] and lb.meta("reward", 0)["data"]["projects"] == [b]
    assert la.meta("reward", 1)["data"]["pairs"] + la.meta("reward", 1)["data"]["held_out_pairs"] == 8
    for project, policy in ((a, 2), (b, 1)):  # each project's unlabeled tasks show its own lineage's answers
        labeled = store.labeled_task_ids(project)
        versions = {t.policy_version for t in store.project_tasks(project) if t.id not in labeled}
        assert versions <= {policy}, (project, versions)


class Trap:
    """Another host: records every request that reaches it (and the token it carried)."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[str, str, str | None]] = []
        trap = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                trap.requests.append((self.command, self.path, self.headers.get("Authorization")))
                self.send_response(404)
                self.end_headers()

            do_GET = do_POST = do_PATCH = do_PUT = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_label_studio_address_and_token_come_from_one_source(
    label_studio: LabelStudioServer, backend, tmp_path
) -> None:
    """With LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY set, a /setup naming another host changes nothing: the
    operator's token never leaves for it, and the candidates still reach the real Label Studio."""
    settings, url = backend
    store, trap = Store(settings.sqlalchemy_url), Trap()
    project = connect_project(settings, label_studio, url, "One source", ["What is rain?"], tmp_path)
    wait_for(lambda: len(store.project_tasks(project)) == 1, WEBHOOK_S, message="TASKS_CREATED webhook")
    hostile = {
        "project": f"{project}.1",
        "schema": store.project(project).label_config,
        "hostname": trap.url,
        "access_token": "not-the-operators",
    }
    assert requests.post(f"{url}/setup", json=hostile, auth=AUTH, timeout=5).status_code == 200
    operator = settings.model_copy(
        update={"label_studio_url": label_studio.url, "label_studio_api_key": label_studio.token}
    )
    run_worker(operator, "--queues", "generate")
    assert trap.requests == []
    c = ls.client(label_studio.url, label_studio.token)
    assert all(t["data"]["answer1"] for t in ls.list_tasks(c, project))


def test_annotations_whose_webhook_never_arrived_are_resynced(
    label_studio: LabelStudioServer, backend, tmp_path
) -> None:
    """Label Studio sends each webhook once; while the backend is unreachable it is lost. The periodic resync
    brings the annotation in, once (it is idempotent), and /status says when it last ran."""
    settings, url = backend
    store = Store(settings.sqlalchemy_url)
    project = connect_project(settings, label_studio, url, "Resync", ["What is snow?", "What is hail?"], tmp_path)
    wait_for(lambda: len(store.project_tasks(project)) == 2, WEBHOOK_S, message="TASKS_CREATED webhook")
    run_worker(settings, "--queues", "generate")
    c = ls.client(label_studio.url, label_studio.token)
    [hook] = [w for w in c.webhooks.list(project=str(project)) if w.url == ls.project_url(url, project) + "webhook"]
    c.webhooks.update(hook.id, is_active=False)  # as if the backend were down
    for task in ls.list_tasks(c, project):
        submit(c, task, "left")
    c.webhooks.update(hook.id, is_active=True)
    assert store.counts()[project]["pairs"] == 0
    app = create_app(settings)
    reconciler = Reconciler(app.extensions["rlhf"].annotations, app.extensions["rlhf_registries"])
    assert reconciler.resync()[project] == 2
    assert store.counts()[project]["pairs"] == 2
    assert reconciler.resync()[project] == 0  # incremental: nothing changed since
    assert store.counts()[project]["pairs"] == 2
    assert app.test_client().get(f"/status?project={project}", auth=AUTH).json["projects"][str(project)]["synced_at"]


SCREENSHOTS = ROOT / ".cache" / "screenshots"  # test artifacts; two of them are docs/labeling-*.png


@pytest.fixture
def browser_page(label_studio: LabelStudioServer):
    """Headless Debian Chromium driven by Playwright, logged in to Label Studio as its admin."""
    chromium = shutil.which("chromium")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is installed by make test")
    if chromium is None:
        pytest.skip("no chromium on the PATH (make test installs Debian's chromium where it can)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        page.goto(f"{label_studio.url}/user/login/")
        page.fill("input[name=email]", label_studio.email)
        page.fill("input[name=password]", label_studio.password)
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle")
        yield page
        browser.close()


def visible_piece(text: str) -> str:
    """A piece of an answer that the page shows whole: Label Studio lays a text out line by line, so an answer
    with a line break (a tiny random model writes "\r" too) is never one element's text."""
    return max(re.split(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+", text), key=len).strip() or text


def open_task(page, label_studio: LabelStudioServer, project: int, task_id: int, text: str) -> None:
    page.goto(f"{label_studio.url}/projects/{project}/data?task={task_id}")
    wait_shown(page, text)


def wait_shown(page, text: str) -> None:  # noqa: ANN001 - Playwright's Page
    """Until the labelling view shows this answer and can be submitted."""
    answer = page.locator(".lsf-richtext__line, .htx-ranker-item").filter(has_text=visible_piece(text))
    answer.first.wait_for(timeout=60_000)
    page.wait_for_load_state("networkidle")
    submit_button(page).wait_for(timeout=60_000)
    page.wait_for_timeout(1000)  # the view fades in after loading


def close_instructions(page) -> None:  # noqa: ANN001 - Playwright's Page
    """The stream opens with the project's instructions in a dialog; the annotator reads and closes it."""
    dialog = page.locator(".lsf-modal-ls_visible").filter(has_text="Labeling Instructions")
    if dialog.count():
        dialog.first.get_by_label("Close modal").click()
        dialog.first.wait_for(state="hidden")


def rank_first_last(page, generation: str, k: int) -> None:  # noqa: ANN001 - Playwright's Page
    """Drag the first card to the bottom with the keyboard, as an annotator without a mouse would."""
    page.locator(f'[data-ranker-id="{generation}-0"]').focus()
    page.keyboard.press("Space")
    for _ in range(k - 1):
        page.keyboard.press("ArrowDown")
        page.wait_for_timeout(300)
    page.keyboard.press("Space")
    page.wait_for_timeout(500)


def submit_button(page):  # noqa: ANN001, ANN201 - Playwright's Page and Locator
    return page.locator("button:has-text('Submit')").first


def test_an_annotator_compares_in_the_labeling_view(
    label_studio: LabelStudioServer, backend, browser_page, tmp_path
) -> None:
    """Log in, open a task, see the prompt and both answers side by side with nothing pre-selected, pick one,
    submit: the backend stores the pair the annotator chose."""
    settings, url = backend
    store, page = Store(settings.sqlalchemy_url), browser_page
    project = connect_project(settings, label_studio, url, "Browser pairwise", ["Name a fruit, please."], tmp_path)
    wait_for(lambda: len(store.project_tasks(project)) == 1, WEBHOOK_S, message="TASKS_CREATED webhook")
    run_worker(settings, "--queues", "generate")
    [task] = store.project_tasks(project)
    left, right = task.candidates
    open_task(page, label_studio, project, task.id, left)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "labeling-pairwise.png"))
    captions = [
        page.locator(f".answer-{x} .lsf-richtext__container").first.evaluate(
            "e => getComputedStyle(e, '::before').content"
        )
        for x in "ab"
    ]
    assert captions == ['"Answer A"', '"Answer B"']  # an annotator can say which one was better
    queue_score = page.locator('[title^="Prediction score"]')  # the prediction tab's "80.00%": a queue position
    assert queue_score.count() and not queue_score.first.is_visible()
    answers = [
        page.locator(".answer-box").filter(has_text=visible_piece(t)).first  # not the table's cells
        for t in (left, right)
    ]
    boxes = [a.bounding_box() for a in answers]
    assert abs(boxes[0]["y"] - boxes[1]["y"]) < 40 and boxes[1]["x"] > boxes[0]["x"] + 300  # side by side, 1440 px
    assert page.get_by_text("Name a fruit, please.").first.is_visible()
    answers[1].click()
    submit_button(page).click()
    pairs = wait_for(lambda: store.pairs(f"project-{project}", judged=True), 30, message="the annotation's webhook")
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [(right, left)]


def test_an_annotator_ranks_in_the_labeling_view(
    label_studio: LabelStudioServer, backend, browser_page, tmp_path
) -> None:
    """The Ranker: cards without internal ids; moving the first answer to the bottom (keyboard drag) and
    submitting gives K(K-1)/2 pairs with it ranked last."""
    settings, url = backend
    store, page = Store(settings.sqlalchemy_url), browser_page
    project = connect_project(
        settings,
        label_studio,
        url,
        "Browser ranker",
        ["Name a colour, please."],
        tmp_path,
        config="label_config_ranker.xml",
    )
    wait_for(lambda: len(store.project_tasks(project)) == 1, WEBHOOK_S, message="TASKS_CREATED webhook")
    run_worker(settings, "--queues", "generate")
    [task] = store.project_tasks(project)
    first = task.candidates[0]
    page.goto(f"{label_studio.url}/projects/{project}/data")  # connect's "RLHF" tab: readable answer columns
    page.get_by_text("answer_1", exact=True).first.wait_for(timeout=60_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "datamanager-ranker.png"))
    assert page.get_by_text("items", exact=True).count() == 0  # the raw JSON column is hidden
    open_task(page, label_studio, project, task.id, first)
    cards = page.locator(".htx-ranker-item")
    shown = [cards.nth(i).inner_text() for i in range(cards.count())]  # what the annotator sees on each card
    assert len(shown) == len(task.candidates) and not any(task.generation in text for text in shown), shown
    assert [t.splitlines()[0] for t in shown] == [f"Answer {i + 1}" for i in range(len(shown))]  # captions
    queue_score = page.locator('[title^="Prediction score"]')  # the prediction tab's percentage: a queue position
    assert queue_score.count() and not queue_score.first.is_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "labeling-ranker.png"))
    rank_first_last(page, task.generation, len(task.candidates))
    submit_button(page).click()
    k = len(task.candidates)
    pairs = wait_for(lambda: store.pairs(f"project-{project}", judged=True), 30, message="the annotation's webhook")
    assert len(pairs) == k * (k - 1) // 2
    assert all(p["rejected"] == first for p in pairs if first in (p["chosen"], p["rejected"]))


STREAM = 6  # labels in a row through "Label All Tasks"
NEXT_TASK = re.compile(r"/api/dm/actions\?id=next_task")  # how the stream asks Label Studio 1.23 for the next task
SAVE = re.compile(r"/api/tasks/\d+/annotations")  # ... and how it saves a submit


@pytest.mark.parametrize("config", ["label_config.xml", "label_config_ranker.xml"])
def test_label_all_tasks_saves_every_submit_while_refits_land(
    label_studio: LabelStudioServer, backend, browser_page, tmp_path, config: str
) -> None:
    """The annotator's stream: "Label All Tasks", pick, Submit, and Label Studio opens the next task at once.
    The refit that the label queued then republishes every task's score, the open task's included, before the
    annotator submits it. Every submit must save the first time (a prediction deleted under the open task made
    Label Studio refuse it: "Annotation is not saved"), and the open task's prediction keeps its id."""
    settings, url = backend
    store, page = Store(settings.sqlalchemy_url), browser_page
    prompts = [f"Name animal number {i}, please." for i in range(STREAM)]
    project = connect_project(settings, label_studio, url, f"Stream {config}", prompts, tmp_path, config=config)
    wait_for(lambda: len(store.project_tasks(project)) == STREAM, WEBHOOK_S, message="TASKS_CREATED webhook")
    run_worker(settings, "--queues", "generate")
    c = ls.client(label_studio.url, label_studio.token)
    version = registries_of(settings).lineage(f"project-{project}").model_version()
    refits = Queue(f"{settings.queue_prefix}-generate", connection=Redis.from_url(TEST_REDIS_URL))

    def prediction(task_id: int) -> tuple[int, float]:
        [found] = [
            (p.id, p.score)
            for p in c.predictions.list(project=project)
            if p.task == task_id and p.model_version == version
        ]
        return found

    page.goto(f"{label_studio.url}/projects/{project}/data")
    with page.expect_response(lambda r: NEXT_TASK.search(r.url)) as served:
        page.get_by_role("button", name=re.compile("Label All Tasks")).click()
    moves = []
    for i in range(STREAM):
        task = store.tasks([served.value.json()["id"]])[served.value.json()["id"]]
        wait_shown(page, task.candidates[0])
        close_instructions(page)
        if i:  # the previous label's refit lands now, while this task is open
            wait_for(
                lambda: any(j.meta.get("kind") == "refit" for j in refits.jobs), WEBHOOK_S, message="the label's refit"
            )
            before = prediction(task.id)
            run_worker(settings, "--queues", "generate")
            moves.append((before, prediction(task.id)))
        if config == "label_config.xml":
            page.locator(".answer-box").filter(has_text=visible_piece(task.candidates[1])).first.click()
        else:
            rank_first_last(page, task.generation, len(task.candidates))
        with page.expect_response(lambda r: NEXT_TASK.search(r.url)) as served:
            with page.expect_response(lambda r: r.request.method == "POST" and SAVE.search(r.url)) as saved:
                submit_button(page).click()
            assert saved.value.status == 201, f"submit {i + 1} of {STREAM} not saved: {saved.value.text()[:300]}"
    page.screenshot(path=str(SCREENSHOTS / f"stream-{config.removesuffix('.xml')}.png"))
    assert page.get_by_text("not saved").count() == 0
    wait_for(
        lambda: store.counts().get(project, {}).get("annotations") == STREAM, WEBHOOK_S, message="every label's webhook"
    )
    assert all(after[0] == before[0] for before, after in moves), moves  # one prediction per task, kept
    assert sum(after[1] != before[1] for before, after in moves) >= STREAM // 2, moves  # the refits moved them


def test_every_score_move_is_published_once(label_studio: LabelStudioServer) -> None:
    """publish_scores keeps Label Studio's queue on the stored scores: a move at the published precision
    replaces the task's prediction (one per task and version), an unchanged score costs nothing."""
    c = ls.client(label_studio.url, label_studio.token)
    project = c.projects.create(title="scores", label_config=(ROOT / "label_config.xml").read_text()).id
    c.projects.import_tasks(project, request=[{"prompt": f"p{i}", "answer1": "a", "answer2": "b"} for i in range(3)])
    a, b, d = sorted(t["id"] for t in ls.list_tasks(c, project))

    def published(version: str = "v") -> list[tuple[int, int, float]]:
        return sorted(
            (p.task, p.id, p.score) for p in c.predictions.list(project=project) if p.model_version == version
        )

    assert ls.publish_scores(c, project, "v", {a: 0.5, b: 0.6, d: 0.7}) == 3
    ids = [i for _, i, _ in published()]
    assert ls.publish_scores(c, project, "v", {a: 0.5 + 5e-5, b: 0.6 + 1e-7, d: 0.7}) == 1  # b rounds to the same
    assert published() == [(a, ids[0], 0.50005), (b, ids[1], 0.6), (d, ids[2], 0.7)]  # moved in place: same ids
    assert ls.publish_scores(c, project, "v", {a: 0.50005, b: 0.6, d: 0.7}) == 0
    assert ls.publish_scores(c, project, "w", {a: 0.1, b: 0.2}) == 2  # a new version gets its own predictions
    assert [s for _, _, s in published("w")] == [0.1, 0.2] and published()[0] == (a, ids[0], 0.50005)


def test_the_queue_serves_the_comparison_worth_most_first(label_studio: LabelStudioServer, backend, tmp_path) -> None:
    """SELECTION=fisher through a real Label Studio: the worker sets the project to uncertainty sampling
    under the served model version and publishes each task's score; labels queue a refit of the head, which
    reweighs the tasks and republishes; Label Studio's /next then serves the task with the lowest score."""
    settings, url = backend
    store = Store(settings.sqlalchemy_url)
    first = cli(
        settings,
        "connect",
        "--url",
        label_studio.url,
        "--api-key",
        label_studio.token,
        "--title",
        "RLHF informative",
        "--backend-url",
        url,
    )
    project = int(first.split("project ")[-1].split()[0])
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"Describe colour number {i} in one line." for i in range(6)) + "\n")
    cli(
        settings,
        "import",
        "--project",
        str(project),
        str(prompts),
        "--url",
        label_studio.url,
        "--api-key",
        label_studio.token,
    )
    wait_for(lambda: len(store.project_tasks(project)) == 6, WEBHOOK_S, message="TASKS_CREATED webhook")
    run_worker(settings)

    c = ls.client(label_studio.url, label_studio.token)
    version = registries_of(settings).lineage(f"project-{project}").model_version()
    ls_project = c.projects.get(project)
    assert (ls_project.sampling, ls_project.model_version) == ("Uncertainty sampling", version)

    def published() -> dict[int, float]:
        found = [(p.task, p.score) for p in c.predictions.list(project=project) if p.model_version == version]
        assert len(found) == len({t for t, _ in found}), "one prediction per task and version"
        return dict(found)

    def stored() -> dict[int, float]:
        return {t.id: informative_score(t.worth) for t in store.project_tasks(project)}

    before = stored()
    assert published() == pytest.approx(before, abs=10**-ls.SCORE_DIGITS) and len(before) == 6
    tasks = ls.list_tasks(c, project)
    for task in tasks[:2]:
        submit(c, task, "left")
    wait_for(lambda: store.counts().get(project, {}).get("pairs") == 2, WEBHOOK_S, message="annotation webhooks")
    queue = Queue(f"{settings.queue_prefix}-generate", connection=Redis.from_url(TEST_REDIS_URL))
    wait_for(
        lambda: any(j.meta.get("kind") == "refit" for j in queue.jobs),
        WEBHOOK_S,
        message="a refit queued after the labels",
    )
    run_worker(settings)
    after = stored()
    assert published() == pytest.approx(after, abs=10**-ls.SCORE_DIGITS)  # every move, however small
    waiting = [t["id"] for t in tasks[2:]]
    assert sum(after[t] for t in waiting) > sum(before[t] for t in waiting)  # labels shrank what is left to learn
    r = requests.get(
        f"{label_studio.url}/api/projects/{project}/next",
        headers={"Authorization": f"Token {label_studio.token}"},
        timeout=10,
    )
    assert r.ok, r.text
    assert r.json()["id"] == min(waiting, key=after.get), (r.json()["id"], after)


def test_a_learn_round_with_models_on_object_storage(label_studio: LabelStudioServer, tiny_model, tmp_path, s3) -> None:
    """MODEL_DIR=s3://... (a real S3 API), as on hosts that share no disk: the backend under gunicorn, a
    generation worker and a training worker, each with its own MODEL_CACHE_DIR; one round through Label Studio."""
    settings = make_settings(
        tmp_path,
        tiny_model,
        port=free_port(),
        model_dir=bucket_url(),
        model_cache_dir=str(tmp_path / "backend-host"),
        queue_prefix="rlhf-s3",  # beside the module's other backend, on the same Redis
        train_args=TINY_TRAIN,
        retrain_every=4,
        basic_auth_user=AUTH[0],
        basic_auth_pass=AUTH[1],
        gates=False,
    )
    generator = settings.model_copy(update={"model_cache_dir": str(tmp_path / "generate-host")})
    trainer = settings.model_copy(update={"model_cache_dir": str(tmp_path / "train-host")})
    store = Store(settings.sqlalchemy_url)
    with serving(settings) as url:
        project = connect_project(
            settings, label_studio, url, "On object storage", [f"Name sea creature {i}." for i in range(6)], tmp_path
        )
        wait_for(lambda: len(store.project_tasks(project)) == 6, WEBHOOK_S, message="TASKS_CREATED")
        run_worker(generator, "--queues", "generate")  # converts policy v0 into the bucket, writes candidates
        c = ls.client(label_studio.url, label_studio.token)
        tasks = ls.list_tasks(c, project)
        for i, task in enumerate(tasks[:4]):
            submit(c, task, "left" if i % 2 else "right")
        wait_for(lambda: training_queued(url, project) == 1, WEBHOOK_S, message="the chain queued")
        run_worker(trainer, "--queues", "train")
        run_worker(generator, "--queues", "generate")
        registry = registries_of(settings).lineage(f"project-{project}")
        assert registry.current("policy") == 1 and registry.current("reward") == 0
        backend_id = ml_backend_id(c, project, ls.project_url(url, project))
        wait_for(
            lambda: "policy-v1.reward-v0" in listed_versions(c, backend_id),
            WEBHOOK_S,
            message="Label Studio listing the round's version",
        )
        labeled = {t["id"] for t in tasks[:4]}
        for task in ls.list_tasks(c, project):  # what Label Studio shows came from the version in the bucket
            assert store.tasks([task["id"]])[task["id"]].policy_version == (0 if task["id"] in labeled else 1)
    digests = [store.model_version_row(settings.model_dir, f"project-{project}", "policy", 1).digest]
    assert (tmp_path / "generate-host" / digests[0]).is_dir() and (tmp_path / "train-host" / digests[0]).is_dir()
    assert not (tmp_path / "models").exists() and not (ROOT / "s3:").exists()
