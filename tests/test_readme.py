"""The README is the map for the next engineer: its configuration table and module map must stay true."""
from __future__ import annotations

import re

from conftest import ROOT

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
