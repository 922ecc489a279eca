"""The README is the map for the next engineer: its configuration table and module map must stay true."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, settings_env
from labelstudio_server import label_studio  # noqa: F401  (session fixture)

from backend.core.settings import Settings

README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", README, flags=re.M))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_architecture_lists_every_module() -> None:
    """Each module's file name appears in the architecture tree (brace groups such as {reward,ppo}.py expanded)."""
    section = README.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    for group, suffix in re.findall(r"\{([\w,]+)\}(\.py)", section):
        section += " " + " ".join(f"{name}{suffix}" for name in group.split(","))
    listed = set(re.findall(r"(?<![\w.])([\w]+\.py)\b", section))
    modules = [p.relative_to(ROOT) for d in ("backend", "workers") for p in (ROOT / d).rglob("*.py")
               if p.name != "__init__.py" or p.parent.name == "recipes"]
    missing = [str(m) for m in modules if m.name not in listed]
    assert not missing, f"README architecture section does not mention {missing}"


def test_relative_paths_are_anchored_to_the_checkout(tmp_path, monkeypatch) -> None:
    """A CLI command run from another directory uses the same store and registry as `make run`."""
    monkeypatch.chdir(tmp_path)
    settings = Settings(data_dir="data", model_dir="models", _env_file=None)
    assert settings.data_dir == ROOT / "data" and settings.model_dir == ROOT / "models"
    assert Settings(data_dir=tmp_path / "elsewhere", _env_file=None).data_dir == tmp_path / "elsewhere"


def test_all_interfaces_need_credentials_or_an_explicit_host() -> None:
    """README, Security: with auth off the backend binds loopback unless HOST says otherwise."""
    assert Settings(_env_file=None).bind_host == "127.0.0.1"
    assert Settings(basic_auth_user="u", basic_auth_pass="p", _env_file=None).bind_host == "0.0.0.0"
    assert Settings(host="0.0.0.0", _env_file=None).bind_host == "0.0.0.0"


def _section(heading: str) -> str:
    """A `## ` section of the README, its subsections included."""
    return README.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


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
def test_the_readme_commands_run_as_written(label_studio, backend, tmp_path) -> None:  # noqa: F811
    """The Connect and Import sections' commands, then every admin command, typed as the README shows them
    (Label Studio's and the backend's addresses are this test's; placeholders get real values) into a shell
    in a directory of the admin's, after `connect`: each exits 0, and none needs --url or --api-key."""
    settings, url = backend
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parents[1])
    (tmp_path / "prompts.txt").write_text("Name a river.\nName a mountain.\n")
    env = {**settings_env(settings), "LABEL_STUDIO_API_KEY": label_studio.token,
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}

    def run(command: str) -> str:
        command = command.replace("http://localhost:8080", label_studio.url).replace("http://localhost:9090", url)
        out = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                             timeout=600)
        assert out.returncode == 0, f"{command}\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
        return out.stdout

    [connect, import_] = _shell_commands(_section("## Connect Label Studio"))
    connected = run(connect)
    project = connected.split("project ")[-1].split()[0]
    assert "need no --url" in connected, connected
    assert "imported 2 prompts" in run(import_.replace("--project 1", f"--project {project}"))

    values = {"N": project, "FILE": "prompts.txt", "vN": "v0", "policy-vN": "policy-v0", "DIR": "exported"}
    rows = [c for c in _table_commands(_section("## Admin commands")) if not c.endswith(("serve", "connect …"))]
    workers = [c for c in rows if c.startswith("python -m workers")]
    assert len(workers) == 1 and len(rows) == 11, rows
    run(_filled(workers[0].replace("[--gpu N] ", ""), values))  # a CPU here: GPU flags are out of scope
    for command in rows:
        if command.startswith("python -m backend cancel"):
            jobs = json.loads(run(f"python -m backend status --project {project} --json"))["jobs"]
            values["JOB"] = next(j["id"] for j in jobs if j["status"] == "queued")
        if command not in workers:
            run(_filled(command.replace("train …", "train --project N"), values))
