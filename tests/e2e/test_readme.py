"""The README and docs/ are the map for the next engineer, and must stay true: the README fits a first read,
its links resolve, the module map matches the file system, and the commands run as written.
(docs/configuration.md's settings table is checked against Settings in tests/unit/test_config_docs.py.)"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from backend import labelstudio as ls
from backend.core.settings import Settings
from backend.store import Store
from tests.support.settings import ROOT, settings_env
from tests.support.wait import wait_for

README_PATH = ROOT / "README.md"
README = README_PATH.read_text()
DOCS = ROOT / "docs"
PAGES = [README_PATH, *sorted(DOCS.glob("*.md"))]
MAX_README_LINES = 250


def _page(name: str) -> str:
    return (DOCS / name).read_text()


def _section(text: str, heading: str) -> str:
    """A `## ` section of a page, its subsections included."""
    assert f"\n{heading}\n" in text, f"no section {heading!r}"
    return text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


def _prose(text: str) -> str:
    """A page without its fenced code blocks and inline code (where brackets and # are not Markdown)."""
    return re.sub(r"`[^`\n]*`", "", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M))


# --- the README fits a first read, and every link goes somewhere -------------------------------------------


def test_the_readme_fits_a_first_read() -> None:
    lines = len(README.splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines; move detail into docs/"


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for heading in re.findall(
        r"^#{1,6} (.+)$", re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M), flags=re.M
    ):
        slug = _slug(heading)
        anchors.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def _links(path: Path) -> list[str]:
    return re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", _prose(path.read_text()))


def test_every_relative_link_resolves() -> None:
    """Links in README.md and docs/*.md point at files of the checkout, and anchors into pages at headings."""
    broken = []
    for page in PAGES:
        for link in _links(page):
            if re.match(r"^[a-z][a-z0-9+.-]*:", link):  # https:, mailto:
                continue
            target, _, anchor = link.partition("#")
            path = (page.parent / target).resolve() if target else page
            if not path.exists() or not path.resolve().is_relative_to(ROOT):
                broken.append(f"{page.relative_to(ROOT)}: {link} (no such file)")
            elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
                broken.append(f"{page.relative_to(ROOT)}: {link} (no such heading in {path.relative_to(ROOT)})")
    assert not broken, "\n".join(broken)


def test_the_readme_links_every_docs_page_and_the_pictures_stay() -> None:
    linked = {(README_PATH.parent / link.partition("#")[0]).resolve() for link in _links(README_PATH)}
    assert {p.resolve() for p in DOCS.glob("*.md")} <= linked, "a docs/ page the README does not link"
    everywhere = {(page.parent / link.partition("#")[0]).resolve() for page in PAGES for link in _links(page)}
    assert {p.resolve() for p in DOCS.glob("*.png")} <= everywhere, "a picture in docs/ that no page shows"


def test_commands_name_make_targets_and_modules_that_exist() -> None:
    """`make X` and `python -m X` in the pages name a Makefile target and an importable module."""
    targets = set(re.findall(r"^([\w.-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    text = "\n".join(page.read_text() for page in PAGES)
    missing = {f"make {t}" for t in re.findall(r"(?:^|`)make ([a-z][\w-]*)", text, flags=re.M) if t not in targets}
    modules = set(re.findall(r"python -m ([a-z_][\w.]*\w)", text))  # the checkout is importable under pytest
    missing |= {f"python -m {m}" for m in modules if importlib.util.find_spec(m) is None}
    assert not missing, f"the docs name what does not exist: {sorted(missing)}"


# --- docs/architecture.md lists every module --------------------------------------------------------------


def _documented_modules() -> set[str]:
    """Paths of the module map's tree: `name/` opens a folder, `name.py` is a file, two spaces per level;
    lines that are neither (a description's continuation) are skipped."""
    block = re.search(r"```\n(.*?)```", _section(_page("architecture.md"), "## Module map"), flags=re.S)
    assert block, "docs/architecture.md: no module map block"
    folders: list[str] = []
    files = set()
    for line in block.group(1).splitlines():
        match = re.match(r"^( *)([\w.]+(?:/|\.py))(?: {2,}|$)", line)
        indent = len(match.group(1)) if match else 1
        if not match or indent % 2 or indent // 2 > len(folders):
            continue
        folders = folders[: indent // 2]
        name = match.group(2)
        if name.endswith("/"):
            folders.append(name[:-1])
        else:
            files.add("/".join([*folders, name]))
    return files


def _modules_on_disk() -> set[str]:
    """Every .py file under backend/ and workers/; an __init__.py only when it holds more than a docstring."""
    found = set()
    for path in [p for d in ("backend", "workers") for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts]:
        if path.name == "__init__.py":
            body = ast.parse(path.read_text()).body
            if not [node for node in body if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]:
                continue
        found.add(path.relative_to(ROOT).as_posix())
    return found


def test_architecture_lists_every_module() -> None:
    missing = sorted(_modules_on_disk() - _documented_modules())
    assert not missing, f"docs/architecture.md's module map does not list {missing}"


def test_architecture_lists_only_modules_that_exist() -> None:
    gone = sorted(m for m in _documented_modules() if not (ROOT / m).is_file())
    assert not gone, f"docs/architecture.md's module map lists files that do not exist: {gone}"


# --- what the pages promise about settings ----------------------------------------------------------------


def test_relative_paths_are_anchored_to_the_checkout(tmp_path, monkeypatch) -> None:
    """docs/configuration.md: a CLI command run from another directory uses the same store and registry as
    `make run`."""
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir="data", model_dir="models", _env_file=None)
    assert settings.data_dir == ROOT / "data" and settings.model_dir == str(ROOT / "models")
    assert Settings(data_dir=tmp_path / "elsewhere", _env_file=None).data_dir == tmp_path / "elsewhere"


def test_all_interfaces_need_credentials_or_an_explicit_host() -> None:
    """docs/deployment.md, Security: with auth off the backend binds loopback unless HOST says otherwise."""
    assert Settings(_env_file=None).bind_host == "127.0.0.1"
    assert Settings(basic_auth_user="u", basic_auth_pass="p", _env_file=None).bind_host == "0.0.0.0"
    assert Settings(host="0.0.0.0", _env_file=None).bind_host == "0.0.0.0"


# --- the commands run as written --------------------------------------------------------------------------


def _shell_commands(section: str) -> list[str]:
    """The commands of a section's ```bash blocks: continuation lines joined, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    lines = " ".join(blocks).replace("\\\n", " ").splitlines()
    return [c for c in (line.split(" #", 1)[0].strip() for line in lines) if c and not c.startswith("#")]


def _table_commands(section: str) -> list[str]:
    """The first cell of each row of a section's command table."""
    return [cell.replace("\\|", "|") for cell in re.findall(r"^\| `(.+?)` \|", section, flags=re.M)]


def _filled(command: str, values: dict[str, str]) -> str:
    """A table command as an admin types it: optional parts taken (the first of alternatives), placeholders
    filled; anything left unfilled fails the test, so a new placeholder gets a value here."""
    command = re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).split(" | ")[0], command)
    command = re.sub(r"policy\|reward", "policy", command)
    filled = " ".join(values.get(word, word) for word in command.split())
    assert not re.search(r"\b(N|FILE|JOB|DIR|NAME|vN|policy-vN)\b|…", filled), f"unfilled placeholder in {filled!r}"
    return filled


@pytest.mark.labelstudio
def test_the_readme_commands_run_as_written(label_studio, backend, tmp_path) -> None:
    """The README's Connect (with Import) and first-round commands, then every admin command of
    docs/operations.md, typed as the pages show them (Label Studio's and the backend's addresses are this
    test's; the project and placeholders get real values) into a shell in a directory of the admin's, after
    `connect`: each exits 0, and none needs --url or --api-key. Between them a worker writes the answers and
    one task is labelled through Label Studio, so the first round's `train` really queues a chain."""
    settings, url = backend
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    (tmp_path / "prompts.txt").write_text("Name a river.\nName a mountain.\n")
    env = {
        **settings_env(settings),
        "LABEL_STUDIO_API_KEY": label_studio.token,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }

    def run(command: str) -> str:
        command = command.replace("http://localhost:8080", label_studio.url).replace("http://localhost:9090", url)
        out = subprocess.run(
            ["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
        )
        assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        return out.stdout

    [connect, import_] = _shell_commands(_section(README, "## Connect Label Studio"))
    connected = run(connect)
    project = connected.split("project ")[-1].split()[0]
    assert "need no --url" in connected, connected

    def ours(command: str) -> str:  # the README's examples name project 1
        return re.sub(r"--project 1\b", f"--project {project}", command)

    assert "imported 2 prompts" in run(ours(import_))

    values = {"N": project, "FILE": "prompts.txt", "vN": "v0", "policy-vN": "policy-v0", "DIR": "exported"}
    rows = [
        c
        for c in _table_commands(_section(_page("operations.md"), "## Admin commands"))
        if not c.endswith(("serve", "connect …"))
    ]
    workers = [c for c in rows if c.startswith("python -m workers")]
    assert len(workers) == 1 and len(rows) == 11, rows
    run(_filled(workers[0].replace("[--gpu N] ", ""), values))  # a CPU here: GPU flags are out of scope

    # the first round: an annotator labels a task the worker wrote answers into, then the README's commands
    # (after the worker's burst, so its `train` stays queued: the table's `cancel` needs a queued job)
    client = ls.client(label_studio.url, label_studio.token)
    task = ls.list_tasks(client, int(project))[0]
    assert task["data"]["answer1"] and task["data"]["answer2"], task
    client.annotations.create(
        id=task["id"],
        result=[{"from_name": "comparison", "to_name": "answer1", "type": "pairwise", "value": {"selected": "left"}}],
    )
    store = Store(settings.sqlalchemy_url)
    wait_for(lambda: store.counts().get(int(project), {}).get("pairs") == 1, 30, message="the annotation webhook")
    first_round = _shell_commands(_section(README, "## The first round"))
    assert [c.split()[3] for c in first_round] == ["train", "status", "report", "rollback"], first_round
    assert '"training"' in run(ours(first_round[0])), "train --project queued no chain"
    for command in first_round[1:]:
        run(ours(command))
    assert (tmp_path / "report.png").is_file()

    for command in rows:
        if command.startswith("python -m backend cancel"):
            jobs = json.loads(run(f"python -m backend status --project {project} --json"))["jobs"]
            # the first round's chain: a queued refit may be replaced by a newer one (coalesced) meanwhile
            values["JOB"] = next(j["id"] for j in jobs if j["status"] == "queued" and j["kind"] == "reward")
        if command not in workers:
            run(_filled(command.replace("train …", "train --project N"), values))
