"""The model registry under MODEL_DIR: policy/vN and reward/vN with meta.json, and atomic promotion."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from backend.core.locks import file_lock

log = logging.getLogger(__name__)

Kind = Literal["policy", "reward"]
KINDS: tuple[Kind, ...] = ("policy", "reward")
_VERSION = re.compile(r"^v(\d+)$")


class RegistryError(ValueError):
    """A version that does not exist, or a kind that is not policy/reward."""


def rejected(meta: dict[str, Any]) -> bool:
    """A version its promotion gate rejected and nobody forced: kept for inspection, never served."""
    gate = meta.get("gate") or {}
    return gate.get("status") == "rejected" and not gate.get("forced")


class Registry:
    """Versions live in `<root>/<kind>/vN`; `<root>/<kind>/CURRENT` names the one being served.

    A lineage's registry reads policy v0 from `base` (the shared starting point, converted once) instead of
    holding a copy.
    """

    def __init__(self, root: Path, keep: int = 5, base: Path | None = None) -> None:
        self.root, self.keep, self.base = Path(root), keep, base

    def _dir(self, kind: str) -> Path:
        if kind not in KINDS:
            raise RegistryError(f"unknown model kind {kind!r}: use one of {KINDS}")
        return self.root / kind

    def versions(self, kind: Kind) -> list[int]:
        base = self._dir(kind)
        found = (_VERSION.match(p.name) for p in base.iterdir()) if base.is_dir() else ()
        numbers = {int(m.group(1)) for m in found if m}
        if kind == "policy" and self.base is not None and (self.base / "v0").is_dir():
            numbers.add(0)
        return sorted(numbers)

    def current(self, kind: Kind) -> int | None:
        """The served version: CURRENT's, or the newest not rejected when the pointer is missing."""
        pointer = self._dir(kind) / "CURRENT"
        try:
            match = _VERSION.match(pointer.read_text().strip())
            if match and self.path(kind, int(match.group(1))).is_dir():
                return int(match.group(1))
        except FileNotFoundError:
            pass
        versions = [v for v in self.versions(kind) if not rejected(self.meta(kind, v))]
        return versions[-1] if versions else None

    def path(self, kind: Kind, version: int) -> Path:
        if kind == "policy" and version == 0 and self.base is not None:
            return self.base / "v0"
        return self._dir(kind) / f"v{version}"

    def meta(self, kind: Kind, version: int) -> dict[str, Any]:
        try:
            return json.loads((self.path(kind, version) / "meta.json").read_text())
        except FileNotFoundError:
            return {}

    def servable_versions(self, kind: Kind) -> list[int]:
        """Versions that may be served: all but those a gate rejected (a forced one is servable)."""
        current = self.current(kind)
        return [v for v in self.versions(kind) if v == current or not rejected(self.meta(kind, v))]

    def servable(self) -> list[str]:
        """The names Label Studio may list and pick: the served one, each servable policy alone, and with each
        servable reward model still on disk. Rejected versions are not among them."""
        policies, rewards = self.servable_versions("policy"), self.servable_versions("reward")
        names = {self.model_version()} | {f"policy-v{p}" for p in policies}
        return sorted(names | {f"policy-v{p}.reward-v{r}" for p in policies for r in rewards})

    def catalog(self) -> dict[str, list[dict[str, Any]]]:
        """Every version of both kinds with its metadata, for /status and reports."""
        return {
            kind: [
                {"version": v, "current": v == self.current(kind), **self.meta(kind, v)} for v in self.versions(kind)
            ]
            for kind in KINDS
        }

    def model_version(self) -> str:
        """The name Label Studio sees, e.g. `policy-v2.reward-v1`; it changes with every promotion."""
        policy, reward = self.current("policy"), self.current("reward")
        if policy is None:  # v0 is still being converted: name nothing that does not exist yet
            return "policy-pending"
        name = f"policy-v{policy}"
        return name if reward is None else f"{name}.reward-v{reward}"

    def staging(self, kind: Kind) -> Path:
        """A fresh directory to train into; never served until promoted."""
        base = self._dir(kind)
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".tmp-", dir=base))

    def promote(
        self, kind: Kind, staging: Path, meta: dict[str, Any], version: int | None = None, serve: bool = True
    ) -> int:
        """Move a trained, verified model into the next free vN, then flip CURRENT to it atomically. With
        serve=False (its gate rejected it) it is kept as vN with its meta, and CURRENT stays."""
        meta = {**meta, "kind": kind, "promoted_at": time.time()}
        while True:
            number = version if version is not None else (max(self.versions(kind), default=-1) + 1)
            (staging / "meta.json").write_text(json.dumps({**meta, "version": number}, indent=2, default=str))
            try:
                os.rename(staging, self.path(kind, number))  # atomic; fails if another job took vN
                break
            except OSError as exc:  # only "vN is taken" means try vN+1; anything else is a real failure
                if version is not None or exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        if serve:
            self.set_current(kind, number)
        self.prune(kind)
        log.info("%s %s v%d", "promoted" if serve else "kept (not served)", kind, number)
        return number

    def force(self, kind: Kind, version: int) -> None:
        """Serve a version its gate rejected (`promote --force`): recorded in its meta, then CURRENT flips."""
        meta = self.meta(kind, version)
        if not meta:
            raise RegistryError(f"{kind} v{version} does not exist; have {self.versions(kind)}")
        if "gate" in meta:
            meta["gate"] = {**meta["gate"], "forced": True, "forced_at": time.time()}
            _replace(self.path(kind, version) / "meta.json", json.dumps(meta, indent=2, default=str))
        self.set_current(kind, version)

    def set_current(self, kind: Kind, version: int) -> None:
        """Point CURRENT at an existing version (promotion and rollback); a rejected one only through force()."""
        if not self.path(kind, version).is_dir():
            raise RegistryError(f"{kind} v{version} does not exist; have {self.versions(kind)}")
        if rejected(self.meta(kind, version)):
            raise RegistryError(f"{kind} v{version} was rejected by its gate: serve it with `promote --force`")
        self._dir(kind).mkdir(parents=True, exist_ok=True)  # a lineage that never trained has only v0, shared
        _replace(self._dir(kind) / "CURRENT", f"v{version}\n")

    def prune(self, kind: Kind) -> None:
        """Delete old versions beyond `keep`, never v0 (the SFT reference) nor the current one."""
        current = self.current(kind)
        old = [v for v in self.versions(kind) if v not in (0, current)]
        for version in old[: max(len(old) - self.keep, 0)]:
            shutil.rmtree(self.path(kind, version), ignore_errors=True)

    def discard_stale_staging(self, older_than_s: float = 24 * 3600) -> None:
        """Remove staging dirs left by killed jobs."""
        for kind in KINDS:
            base = self._dir(kind)
            for tmp in base.glob(".tmp-*") if base.is_dir() else ():
                if time.time() - tmp.stat().st_mtime > older_than_s:
                    shutil.rmtree(tmp, ignore_errors=True)


def _replace(target: Path, text: str) -> None:
    """Write a small file so readers see the old or the new text, never half of one."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, target)


LINEAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LEGACY_LINEAGE = "legacy"  # what one registry shared by every project becomes (see migrate_layout)


def valid_lineage(name: str) -> str:
    """A lineage name becomes a directory: letters, digits, '.', '_' and '-' only."""
    if not isinstance(name, str) or not LINEAGE_NAME.match(name):
        raise RegistryError(f"lineage must match {LINEAGE_NAME.pattern}, got {name!r}")
    return name


class Registries:
    """MODEL_DIR: the shared base policy (`policy/v0`) and one registry per lineage (`lineages/<name>/`)."""

    def __init__(self, root: Path, keep: int = 5) -> None:
        self.root, self.keep = Path(root), keep
        self.base = Registry(self.root, keep)
        migrate_layout(self.root)

    def lineage(self, name: str) -> Registry:
        return Registry(self.root / "lineages" / valid_lineage(name), self.keep, base=self.root / "policy")

    def all(self) -> list[Registry]:
        """The base and every lineage's registry."""
        return [self.base, *(self.lineage(name) for name in self.lineages())]

    def lineages(self) -> list[str]:
        found = self.root / "lineages"
        return sorted(p.name for p in found.iterdir() if p.is_dir()) if found.is_dir() else []


def migrate_layout(root: Path) -> None:
    """A MODEL_DIR from before lineages served every project from `policy/vN` and `reward/vN`: its trained
    versions move to the lineage "legacy", which the store assigns to the projects it had (revision 0002).
    Policy v0 stays where it is, as the base of every lineage. Idempotent; one process at a time."""
    if not _old_versions(root):
        return
    with file_lock(root / ".layout.lock"):
        legacy = root / "lineages" / LEGACY_LINEAGE
        for old in _old_versions(root):
            target = legacy / old.parent.name / old.name
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(old, target)
            log.info("moved %s to lineage %r (the layout before lineages)", old, LEGACY_LINEAGE)


def _old_versions(root: Path) -> list[Path]:
    """Trained versions and CURRENT pointers at the top of MODEL_DIR (everything there but policy v0). A lone
    `policy/CURRENT` naming v0 is not one: creating v0 writes it, and nothing was trained before lineages."""
    found = []
    for kind in KINDS:
        base = root / kind
        if base.is_dir():
            found += [
                p
                for p in base.iterdir()
                if (_VERSION.match(p.name) or p.name == "CURRENT") and not (kind == "policy" and p.name == "v0")
            ]
    pointer = root / "policy" / "CURRENT"
    if found == [pointer] and pointer.read_text().strip() == "v0":
        return []
    return found
