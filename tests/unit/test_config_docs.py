"""docs/configuration.md's settings table is generated from Settings: the page and the code cannot disagree."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backend.admin import config_docs
from backend.admin.config_docs import BEGIN, DOC, END, render, render_default, render_table
from backend.core.settings import HOME, Settings


def test_configuration_page_is_what_settings_render() -> None:
    current = DOC.read_text()
    assert current == render(current), "docs/configuration.md is out of date: run python -m backend.admin.config_docs"


def test_every_setting_has_one_row_in_declaration_order() -> None:
    documented = re.findall(r"^\| `([A-Z_0-9]+)` \|", render_table(), flags=re.M)
    assert documented == [name.upper() for name in Settings.model_fields]
    assert all(field.description for field in Settings.model_fields.values())


def test_only_the_table_between_the_markers_is_rewritten() -> None:
    page = f"# Title\n\nprose before\n\n{BEGIN}\n| stale |\n{END}\n\nprose after\n"
    rendered = render(page)
    assert rendered.startswith("# Title\n\nprose before\n\n" + BEGIN + "\n| variable | default | meaning |")
    assert rendered.endswith(f"{END}\n\nprose after\n") and "| stale |" not in rendered
    assert render(rendered) == rendered
    with pytest.raises(ValueError):
        render("no markers here")
    with pytest.raises(ValueError):
        render(f"{END}\n{BEGIN}\n")


def test_defaults_read_as_they_are_written_in_env() -> None:
    assert render_default(HOME / "data") == "`data`"  # anchored to the checkout at import, shown relative
    assert render_default(Path("/srv/models")) == "`/srv/models`"
    assert render_default(False) == "`false`" and render_default(True) == "`true`"
    assert render_default(30.0) == "`30`" and render_default(0.25) == "`0.25`"
    assert render_default({}) == "`{}`" and render_default("") == "" and render_default(9090) == "`9090`"


def test_the_entry_point_rewrites_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    page = tmp_path / "configuration.md"
    page.write_text(f"intro\n{BEGIN}\n{END}\noutro\n")
    assert config_docs.main(["--check", "--path", str(page)]) == 1
    assert config_docs.main(["--path", str(page)]) == 0
    assert config_docs.main(["--check", "--path", str(page)]) == 0
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "`RETRAIN_EVERY` | `50` |" in text
    capsys.readouterr()
