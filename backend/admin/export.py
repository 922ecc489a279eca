"""`python -m backend export`: what a team takes to its own training stack. A project's preference pairs as
JSONL and as a Hugging Face `datasets` folder, and one model version of its lineage as a plain Hugging Face
directory with a model card (recipe, data, metrics, parents, gate verdict)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from backend.store import Store
from backend.store.registry import Kind, Registries, Registry, RegistryError

log = logging.getLogger(__name__)

PAIRS_FILE, DATASET_DIR, MODEL_DIR = "pairs.jsonl", "dataset", "model"
META_FILE = "rlhf_meta.json"  # meta.json under a name no Hugging Face loader reads
COLUMNS = {
    "id": "int64",
    "task_id": "int64",
    "prompt": "string",
    "chosen": "string",
    "rejected": "string",
    "chosen_finished": "bool",
    "rejected_finished": "bool",
    "annotator": "int64",
    "selection": "string",
    "generation": "string",
    "policy_version": "int64",
    "created_at": "string",
    "project_id": "int64",
    "lineage": "string",
}
_MODEL_NAME = re.compile(r"^(policy|reward)-v(\d+)$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
EMBEDDED_BASE = "HuggingFaceTB/SmolLM2-135M-Instruct"  # what policy v0 "embedded:..." was converted from


@dataclass(frozen=True)
class Exported:
    """What an export wrote, for the CLI to report."""

    project_id: int
    lineage: str
    pairs: int
    pairs_path: Path
    dataset_path: Path
    model: str | None = None  # e.g. "policy-v3"
    recipe: str | None = None
    model_path: Path | None = None

    def lines(self) -> list[str]:
        found = [
            f"project {self.project_id} (lineage {self.lineage}): {self.pairs} pairs -> {self.pairs_path}",
            f"dataset of {self.pairs} rows -> {self.dataset_path}",
        ]
        if self.model_path is not None:
            found.append(
                f"{self.model} ({self.recipe or 'unknown recipe'}) -> {self.model_path} "
                f"(model card {self.model_path / 'README.md'})"
            )
        return found


def export_project(
    store: Store, registries: Registries, project_id: int, out: Path, model: str | None = None, with_model: bool = True
) -> Exported:
    """Write pairs.jsonl, dataset/ and (unless with_model is False) model/ under `out`. `model` names a version
    ("policy-v3", "reward-v2"); None takes the lineage's served policy. A bad name fails before anything is
    written."""
    lineage = store.lineage_of(project_id)
    registry = registries.lineage(lineage)
    rows = [_jsonable(r) for r in store.export_pairs(project_id)]
    if not rows and store.project(project_id) is None:
        raise LookupError(f"project {project_id} is not in the store; have {store.project_ids()}")
    chosen = resolve_model(registry, lineage, model) if with_model else None
    out.mkdir(parents=True, exist_ok=True)
    pairs_path, dataset_path = out / PAIRS_FILE, out / DATASET_DIR
    _write_jsonl(rows, pairs_path)
    _replace_dir(dataset_path, lambda tmp: _save_dataset(rows, tmp))
    result = Exported(project_id, lineage, len(rows), pairs_path, dataset_path)
    if chosen is not None:
        kind, version = chosen
        meta = registry.meta(kind, version)
        _replace_dir(out / MODEL_DIR, lambda tmp: _copy_model(registry, lineage, kind, version, meta, tmp))
        result = replace(result, model=f"{kind}-v{version}", recipe=meta.get("recipe"), model_path=out / MODEL_DIR)
    log.debug("exported project %d: %d pairs, model %s", project_id, len(rows), result.model)
    return result


def resolve_model(registry: Registry, lineage: str, name: str | None) -> tuple[Kind, int]:
    """(kind, version) of `name`, or of the served policy when None; an unknown one is a RegistryError."""
    if name is None:
        current = registry.current("policy")
        if current is None:
            raise RegistryError(f"lineage {lineage} serves no policy yet; export with --no-model or --model reward-vN")
        return "policy", current
    match = _MODEL_NAME.match(name.strip())
    if match is None:
        raise ValueError(f"--model must name a version like policy-v3 or reward-v2, got {name!r}")
    kind, version = match.group(1), int(match.group(2))
    if not registry.exists(kind, version):
        raise RegistryError(
            f"{kind} v{version} does not exist in lineage {lineage}; have "
            f"{[f'{kind}-v{v}' for v in registry.versions(kind)]}"
        )
    return kind, version


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """A store row in the export's column order, its time as ISO 8601 (the store keeps naive UTC)."""
    created = row.get("created_at")
    if isinstance(created, datetime):
        created = (created if created.tzinfo else created.replace(tzinfo=timezone.utc)).isoformat()
    return {name: created if name == "created_at" else row.get(name) for name in COLUMNS}


def _write_jsonl(rows: list[dict[str, Any]], path: Path) -> None:
    """One JSON object a line, replaced atomically so that a reader never sees half an export."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _save_dataset(rows: list[dict[str, Any]], path: Path) -> None:
    """Declared features, so that an empty export or an all-null column keeps the same schema (column-wise:
    from_list of no rows has no columns). No rows would also save no shard, which load_from_disk cannot read."""
    import datasets  # heavy (pyarrow, pandas): only the export pays for it

    features = datasets.Features({name: datasets.Value(dtype) for name, dtype in COLUMNS.items()})
    columns = {name: [row[name] for row in rows] for name in COLUMNS}
    dataset = datasets.Dataset.from_dict(columns, features=features)
    quiet = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # the CLI reports one line per thing written
    try:
        dataset.save_to_disk(str(path), num_shards=None if rows else 1)
    finally:
        if not quiet:
            datasets.enable_progress_bars()


def _replace_dir(target: Path, fill: Callable[[Path], None]) -> None:
    """Fill a fresh directory beside `target`, then swap it in: a failed export leaves the previous one whole."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        fill(tmp / "content")
        if target.exists():
            old = tmp / "old"
            os.rename(target, old)
        os.rename(tmp / "content", target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _copy_model(registry: Registry, lineage: str, kind: Kind, version: int, meta: dict[str, Any], dest: Path) -> None:
    """The registry's version directory as-is, its meta.json renamed, plus a model card."""
    shutil.copytree(registry.path(kind, version), dest, ignore=shutil.ignore_patterns("meta.json", ".*"))
    (dest / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    card = model_card(kind, version, meta, lineage, base_model(registry, kind, version))
    (dest / "README.md").write_text(card, encoding="utf-8")


def base_model(registry: Registry, kind: Kind, version: int) -> str | None:
    """The hub id the version descends from: follow `parents.policy` down to policy v0 and read its source.
    None when it came from a local directory (not a hub id) or the chain is broken."""
    seen: set[tuple[str, int]] = set()
    while (kind, version) not in seen:
        seen.add((kind, version))
        meta = registry.meta(kind, version)
        if kind == "policy" and version == 0:
            source = str(meta.get("source") or "")
            if source.startswith("embedded:"):
                return EMBEDDED_BASE
            return source if _HUB_ID.match(source) and not Path(source).exists() else None
        parent = (meta.get("parents") or {}).get("policy")
        if not isinstance(parent, int):
            return None
        kind, version = "policy", parent
    return None


def model_card(
    kind: Kind, version: int, meta: dict[str, Any], lineage: str, base: str | None, now: datetime | None = None
) -> str:
    """A Hugging Face README.md: front matter the hub indexes, then how this version was made."""
    front = [
        "---",
        "library_name: transformers",
        "tags:",
        "- rlhf",
        "- trl",
        "- label-studio",
        f"pipeline_tag: {'text-generation' if kind == 'policy' else 'text-classification'}",
    ]
    if base:
        front.append(f"base_model: {base}")
    front.append("---")
    recipe = meta.get("recipe") or "unknown"
    what = (
        "A policy (causal LM)"
        if kind == "policy"
        else "A reward model (one-output sequence classifier: a higher score is a preferred answer)"
    )
    exported = (now or datetime.now(timezone.utc)).isoformat(timespec="seconds")
    body = [
        f"# {lineage} {kind}-v{version}",
        "",
        f"{what} trained from human preferences collected in Label Studio by the RLHF backend.",
        "",
        "## Recipe",
        "",
        f"- recipe: `{recipe}`" + (f" (from `{meta['source']}`)" if meta.get("source") else ""),
        *_items({k: meta[k] for k in ("use_lora", "bf16", "seconds") if k in meta}),
        *_items(meta.get("hyperparameters") or {}, "hyperparameter "),
        "",
        "## Data",
        "",
        *(_items(meta.get("data") or {}) or ["- none recorded"]),
        "",
        "## Metrics",
        "",
        *(_items(meta.get("metrics") or {}) or ["- none recorded"]),
        "",
        "## Parents",
        "",
        *(_parents(meta.get("parents") or {}) or ["- none (a base model)"]),
        "",
        "## Promotion gate",
        "",
        *_gate(meta.get("gate")),
        "",
        "## Provenance",
        "",
        f"- lineage: `{lineage}`",
        f"- version: `{kind}-v{version}`",
        *(
            [f"- promoted at: {_when(meta['promoted_at'])}"]
            if isinstance(meta.get("promoted_at"), (int, float))
            else []
        ),
        f"- exported at: {exported}",
        f"- full metadata: `{META_FILE}`",
        "",
    ]
    return "\n".join(front + body)


def _items(values: dict[str, Any], prefix: str = "") -> list[str]:
    return [f"- {prefix}{key}: {json.dumps(value, default=str)}" for key, value in values.items()]


def _parents(parents: dict[str, Any]) -> list[str]:
    """{"policy": 1, "reward": 2, "reference": 0} as version names: only the reward parent is a reward model."""
    return [
        f"- {role}: {'reward' if role == 'reward' else 'policy'}-v{v}" if isinstance(v, int) else f"- {role}: {v}"
        for role, v in parents.items()
    ]


def _gate(gate: Any) -> list[str]:
    if not isinstance(gate, dict):
        return ["- none recorded (no promotion gate ran for this version)"]
    lines = [f"- verdict: {gate.get('status', 'unknown')}" + (" (served by force)" if gate.get("forced") else "")]
    return lines + _items({k: v for k, v in gate.items() if k not in ("status", "forced")})


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")
