"""Read a plain list of prompts from JSON, JSONL, CSV or one-per-line text."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any


class PromptsFileError(ValueError):
    """The file holds no prompts in a format we read."""


def _prompt(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        value = item.get(
            "prompt", (item.get("data") or {}).get("prompt") if isinstance(item.get("data"), dict) else None
        )
        return value if isinstance(value, str) else None
    return None


def read_prompts(path: Path) -> list[str]:
    """Prompts in file order, blanks dropped: a JSON list (strings or {"prompt"} objects), JSONL, a CSV with
    a `prompt` column (else its first column), or one prompt per line."""
    return parse_prompts(Path(path).read_text(encoding="utf-8-sig"), str(path), Path(path).suffix.lower())


def parse_prompts(text: str, source: str, suffix: str = "") -> list[str]:
    """Prompts in text, read by the file suffix it came with (no suffix: one prompt per line)."""
    if suffix == ".json":
        items = json.loads(text)
        if not isinstance(items, list):
            raise PromptsFileError(f"{source}: expected a JSON list of prompts")
    elif suffix == ".jsonl":
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    elif suffix == ".csv":
        rows = list(csv.reader(io.StringIO(text)))
        header = [h.strip().lower() for h in rows[0]] if rows else []
        column = header.index("prompt") if "prompt" in header else 0
        items = [r[column] for r in rows[1 if "prompt" in header else 0 :] if len(r) > column]
    else:
        items = text.splitlines()
    prompts = [p.strip() for p in map(_prompt, items) if isinstance(p, str) and p.strip()]
    if not prompts:
        raise PromptsFileError(f"{source}: no prompts found")
    return prompts
