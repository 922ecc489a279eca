"""What every model registry does, wherever its files live: numbered versions per kind, one served per kind,
promotion gates' verdicts honoured, old versions pruned. The subclasses say where versions and the pointer live
(disk.py: a local or shared directory; objects.py: object storage with its state in the SQL store)."""

from __future__ import annotations

import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

Kind = Literal["policy", "reward"]
KINDS: tuple[Kind, ...] = ("policy", "reward")
VERSION_NAME = re.compile(r"^v(\d+)$")
LINEAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
STALE_STAGING_SECONDS = 24 * 3600  # a worker removes its own staging directories left this long by killed jobs


class RegistryError(ValueError):
    """A version that does not exist, or a kind that is not policy/reward."""


def rejected(meta: dict[str, Any]) -> bool:
    """A version its promotion gate rejected and nobody forced: kept for inspection, never served."""
    gate = meta.get("gate") or {}
    return gate.get("status") == "rejected" and not gate.get("forced")


def valid_lineage(name: str) -> str:
    """A lineage name becomes a directory or a key prefix: letters, digits, '.', '_' and '-' only."""
    if not isinstance(name, str) or not LINEAGE_NAME.match(name):
        raise RegistryError(f"lineage must match {LINEAGE_NAME.pattern}, got {name!r}")
    return name


def valid_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise RegistryError(f"unknown model kind {kind!r}: use one of {KINDS}")
    return kind  # type: ignore[return-value]


Make = Callable[[Path], dict[str, Any]]  # fills a staging directory, returns the version's meta


class Registry(ABC):
    """One lineage's versions (or the shared base's). A lineage's registry reads policy v0 from `base`, the
    shared starting point converted once, instead of holding a copy."""

    def __init__(self, keep: int, base: Registry | None) -> None:
        self.keep, self.base = keep, base

    # --- where things live: each kind of registry says
    @property
    @abstractmethod
    def location(self) -> str:
        """The directory or URL this registry is at (for messages and child processes)."""

    @abstractmethod
    def _versions(self, kind: Kind) -> set[int]:
        """This registry's own complete versions (not the base's v0)."""

    @abstractmethod
    def _pointer(self, kind: Kind) -> int | None:
        """The version CURRENT names, as written (None: never written)."""

    @abstractmethod
    def _meta(self, kind: Kind, version: int) -> dict[str, Any]: ...

    @abstractmethod
    def _path(self, kind: Kind, version: int) -> Path:
        """A local directory with the version's files (fetched first where they are remote)."""

    @abstractmethod
    def _publish(self, kind: Kind, staging: Path, meta: dict[str, Any], version: int | None) -> int:
        """Make the staged files version `version` (None: the next free number) with `meta`, whole or not at
        all, and return its number. It is not served yet."""

    @abstractmethod
    def _point(self, kind: Kind, version: int) -> None:
        """Write CURRENT so that readers see the old or the new version, never neither."""

    @abstractmethod
    def _save_meta(self, kind: Kind, version: int, meta: dict[str, Any]) -> None: ...

    @abstractmethod
    def _delete(self, kind: Kind, version: int) -> None: ...

    @abstractmethod
    def staging(self, kind: Kind) -> Path:
        """A fresh local directory to train into; never served until promoted."""

    @abstractmethod
    def discard_stale_staging(self, older_than_s: float = STALE_STAGING_SECONDS) -> None:
        """Remove this host's staging directories left by killed jobs."""

    @abstractmethod
    def create_once(self, kind: Kind, version: int, make: Make) -> bool:
        """Create `version` with `make` unless it exists, once even when several processes (hosts) try at the
        same time: the others wait and find it. True when this call created it."""

    # --- the same for every registry
    def _home(self, kind: Kind, version: int) -> Registry:
        """Where a version lives: policy v0 of a lineage is the base's."""
        valid_kind(kind)
        return self.base if (kind == "policy" and version == 0 and self.base is not None) else self

    def versions(self, kind: Kind) -> list[int]:
        numbers = set(self._versions(valid_kind(kind)))
        if kind == "policy" and self.base is not None and 0 in self.base._versions("policy"):
            numbers.add(0)
        return sorted(numbers)

    def next_free(self, kind: Kind) -> int:
        """The number a new version takes: after the newest; a lineage's policies start at 1 (v0 is the base's)."""
        floor = 1 if (kind == "policy" and self.base is not None) else 0
        return max(max(self.versions(kind), default=-1) + 1, floor)

    def exists(self, kind: Kind, version: int) -> bool:
        return version in self._home(kind, version)._versions(kind)

    def meta(self, kind: Kind, version: int) -> dict[str, Any]:
        """A version's metadata ({} for one that does not exist)."""
        return self._home(kind, version)._meta(kind, version)

    def path(self, kind: Kind, version: int) -> Path:
        """A local directory holding the version, ready for from_pretrained."""
        if not self.exists(kind, version):
            raise RegistryError(f"{kind} v{version} does not exist; have {self.versions(kind)}")
        return self._home(kind, version)._path(kind, version)

    def current(self, kind: Kind) -> int | None:
        """The served version: CURRENT's, or the newest not rejected when the pointer is missing."""
        pointed = self._pointer(valid_kind(kind))
        if pointed is not None and self.exists(kind, pointed):
            return pointed
        versions = [v for v in self.versions(kind) if not rejected(self.meta(kind, v))]
        return versions[-1] if versions else None

    def servable_versions(self, kind: Kind) -> list[int]:
        """Versions that may be served: all but those a gate rejected (a forced one is servable)."""
        current = self.current(kind)
        return [v for v in self.versions(kind) if v == current or not rejected(self.meta(kind, v))]

    def servable(self) -> list[str]:
        """The names Label Studio may list and pick: the served one, each servable policy alone, and with each
        servable reward model still kept. Rejected versions are not among them."""
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

    def promote(
        self, kind: Kind, staging: Path, meta: dict[str, Any], version: int | None = None, serve: bool = True
    ) -> int:
        """Publish a trained, verified model as the next free vN, then point CURRENT at it. With serve=False
        (its gate rejected it) it is kept as vN with its meta, and CURRENT stays."""
        number = self._publish(valid_kind(kind), staging, self._stamped(kind, meta), version)
        self._promoted(kind, number, serve)
        return number

    def _stamped(self, kind: Kind, meta: dict[str, Any]) -> dict[str, Any]:
        return {**meta, "kind": kind, "promoted_at": time.time()}

    def _promoted(self, kind: Kind, number: int, serve: bool = True) -> None:
        if serve:
            self.set_current(kind, number)
        self.prune(kind)
        log.info("%s %s v%d", "promoted" if serve else "kept (not served)", kind, number)

    def force(self, kind: Kind, version: int) -> None:
        """Serve a version its gate rejected (`promote --force`): recorded in its meta, then CURRENT flips."""
        meta = self.meta(kind, version)
        if not meta:
            raise RegistryError(f"{kind} v{version} does not exist; have {self.versions(kind)}")
        if "gate" in meta:
            meta["gate"] = {**meta["gate"], "forced": True, "forced_at": time.time()}
            self._home(kind, version)._save_meta(kind, version, meta)
        self.set_current(kind, version)

    def set_current(self, kind: Kind, version: int) -> None:
        """Point CURRENT at an existing version (promotion and rollback); a rejected one only through force()."""
        if not self.exists(kind, version):
            raise RegistryError(f"{kind} v{version} does not exist; have {self.versions(kind)}")
        if rejected(self.meta(kind, version)):
            raise RegistryError(f"{kind} v{version} was rejected by its gate: serve it with `promote --force`")
        self._point(kind, version)

    def prune(self, kind: Kind) -> None:
        """Delete old versions beyond `keep`, never v0 (the SFT reference) nor the current one."""
        current = self.current(kind)
        old = [v for v in self.versions(kind) if v not in (0, current)]
        for version in old[: max(len(old) - self.keep, 0)]:
            self._delete(kind, version)


class Registries(ABC):
    """MODEL_DIR: the shared base policy (`policy/v0`) and one registry per lineage (`lineages/<name>/`)."""

    base: Registry

    @abstractmethod
    def lineage(self, name: str) -> Registry: ...

    @abstractmethod
    def lineages(self) -> list[str]: ...

    def all(self) -> list[Registry]:
        """The base and every lineage's registry."""
        return [self.base, *(self.lineage(name) for name in self.lineages())]

    def discard_abandoned(self) -> list[str]:
        """Remove uploads that will never finish (the reconciler's job where several hosts share the
        registry); returns what it removed. Nothing to do on a disk, where a worker cleans its own staging."""
        return []
