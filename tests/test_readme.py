"""The README is the map for the next engineer: its configuration table and module map must stay true."""
from __future__ import annotations

import re

from conftest import ROOT

from backend.settings import Settings

README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", README, flags=re.M))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_architecture_lists_every_module() -> None:
    modules = [p.relative_to(ROOT) for d in ("backend", "workers") for p in (ROOT / d).rglob("*.py")]
    missing = [str(m) for m in modules if m.name != "__init__.py" or m.parent.name == "recipes"
               if m.stem not in README]
    assert not missing, f"README architecture section does not mention {missing}"
