"""A registry in a directory (MODEL_DIR as a path): `<root>/<kind>/vN` with meta.json, `<root>/<kind>/CURRENT`,
promotion by an atomic rename. Every process that reads or writes it must see the same directory (one host,
or a shared file system)."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from backend.core.locks import file_lock
from backend.store.registry.base import (
    KINDS,
    STALE_STAGING_SECONDS,
    VERSION_NAME,
    Kind,
    Make,
    Registries,
    Registry,
    valid_kind,
    valid_lineage,
)

log = logging.getLogger(__name__)
LEGACY_LINEAGE = "legacy"  # what one registry shared by every project becomes (see migrate_layout)


class DiskRegistry(Registry):
    """Versions live in `<root>/<kind>/vN`; `<root>/<kind>/CURRENT` names the one being served."""

    def __init__(self, root: Path, keep: int = 5, base: Registry | None = None) -> None:
        super().__init__(keep, base)
        self.root = Path(root)

    @property
    def location(self) -> str:
        return str(self.root)

    def _dir(self, kind: Kind) -> Path:
        return self.root / valid_kind(kind)

    def _versions(self, kind: Kind) -> set[int]:
        base = self._dir(kind)
        found = (VERSION_NAME.match(p.name) for p in base.iterdir()) if base.is_dir() else ()
        return {int(m.group(1)) for m in found if m}

    def _pointer(self, kind: Kind) -> int | None:
        try:
            match = VERSION_NAME.match((self._dir(kind) / "CURRENT").read_text().strip())
        except FileNotFoundError:
            return None
        return int(match.group(1)) if match else None

    def _path(self, kind: Kind, version: int) -> Path:
        return self._dir(kind) / f"v{version}"

    def _meta(self, kind: Kind, version: int) -> dict[str, Any]:
        try:
            return json.loads((self._path(kind, version) / "meta.json").read_text())
        except FileNotFoundError:
            return {}

    def staging(self, kind: Kind) -> Path:
        base = self._dir(kind)
        base.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".tmp-", dir=base))

    def _publish(self, kind: Kind, staging: Path, meta: dict[str, Any], version: int | None) -> int:
        """Move the staging directory to the next free vN: a rename is atomic, and fails if another job took vN."""
        while True:
            number = version if version is not None else self.next_free(kind)
            (staging / "meta.json").write_text(json.dumps({**meta, "version": number}, indent=2, default=str))
            try:
                os.rename(staging, self._path(kind, number))
                return number
            except OSError as exc:  # only "vN is taken" means try vN+1; anything else is a real failure
                if version is not None or exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise

    def _save_meta(self, kind: Kind, version: int, meta: dict[str, Any]) -> None:
        _replace(self._path(kind, version) / "meta.json", json.dumps(meta, indent=2, default=str))

    def _point(self, kind: Kind, version: int) -> None:
        self._dir(kind).mkdir(parents=True, exist_ok=True)  # a lineage that never trained has only v0, shared
        _replace(self._dir(kind) / "CURRENT", f"v{version}\n")

    def _delete(self, kind: Kind, version: int) -> None:
        shutil.rmtree(self._path(kind, version), ignore_errors=True)

    def discard_stale_staging(self, older_than_s: float = STALE_STAGING_SECONDS) -> None:
        for kind in KINDS:
            base = self._dir(kind)
            for tmp in base.glob(".tmp-*") if base.is_dir() else ():
                if time.time() - tmp.stat().st_mtime > older_than_s:
                    shutil.rmtree(tmp, ignore_errors=True)

    def create_once(self, kind: Kind, version: int, make: Make) -> bool:
        """Under a file lock: processes starting together create it once, the others wait and find it."""
        with file_lock(self._dir(kind) / ".bootstrap.lock"):
            if self.exists(kind, version):
                return False
            staging = self.staging(kind)
            try:
                self.promote(kind, staging, make(staging), version=version)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return True


def _replace(target: Path, text: str) -> None:
    """Write a small file so readers see the old or the new text, never half of one."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, target)


class DiskRegistries(Registries):
    """MODEL_DIR as a directory: `policy/v0` at the top, each lineage under `lineages/<name>/`."""

    def __init__(self, root: Path, keep: int = 5) -> None:
        self.root, self.keep = Path(root), keep
        self.base = DiskRegistry(self.root, keep)
        migrate_layout(self.root)

    def lineage(self, name: str) -> DiskRegistry:
        return DiskRegistry(self.root / "lineages" / valid_lineage(name), self.keep, base=self.base)

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
                if (VERSION_NAME.match(p.name) or p.name == "CURRENT") and not (kind == "policy" and p.name == "v0")
            ]
    pointer = root / "policy" / "CURRENT"
    if found == [pointer] and pointer.read_text().strip() == "v0":
        return []
    return found
