"""A registry on object storage (MODEL_DIR=s3://bucket/prefix, or any fsspec URL): hosts that share no disk
share it. The objects of a version are written once, under a prefix of their own upload
(`<kind>/vN-<upload>/`, files first, `.manifest.json` last); what can change, the version's state and meta and
which version is served, lives in the SQL store (backend.store.versions), where every change is one conditional
statement. A version is reserved before its first object is written and becomes visible only when its upload
finishes, so a reader never sees half of one; a killed upload is abandoned by the reconciler after
MODEL_UPLOAD_TIMEOUT and its objects removed. Readers use a checked local copy (cache.py)."""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from backend.store.registry.base import (
    KINDS,
    STALE_STAGING_SECONDS,
    VERSION_NAME,
    Kind,
    Make,
    Registries,
    Registry,
    RegistryError,
    valid_lineage,
)
from backend.store.registry.cache import MANIFEST, ModelCache, manifest, manifest_files
from backend.store.versions import READY, UPLOADING, VersionQueries, naive_utc

log = logging.getLogger(__name__)
WAIT_SECONDS = 2.0  # how often a process waiting for another's upload (policy v0) looks again


@dataclass
class ObjectHome:
    """What every registry of one MODEL_DIR URL shares: the URL, the store that keeps its state, this host's
    cache and staging, and how long an upload may take before it counts as abandoned."""

    url: str
    store: VersionQueries
    cache: ModelCache
    upload_timeout: float

    @property
    def fs(self) -> Any:
        """This process's filesystem for the URL (fsspec keeps one per process: a forked child gets its own)."""
        import fsspec

        return fsspec.core.url_to_fs(self.url)[0]

    @cached_property
    def root(self) -> str:
        """The URL's path inside its filesystem (`bucket/prefix`): a string, the same in every process."""
        import fsspec

        return fsspec.core.url_to_fs(self.url)[1].rstrip("/")

    @property
    def staging_root(self) -> Path:
        return self.cache.root / ".staging"

    def stale_before(self) -> Any:
        return naive_utc() - timedelta(seconds=self.upload_timeout)


class ObjectRegistry(Registry):
    """One lineage's versions ("" is the shared base) on object storage."""

    def __init__(self, home: ObjectHome, lineage: str, keep: int = 5, base: Registry | None = None) -> None:
        super().__init__(keep, base)
        self.home, self.lineage = home, lineage
        self._part = f"lineages/{lineage}/" if lineage else ""

    @property
    def location(self) -> str:
        return f"{self.home.url}/{self._part}".rstrip("/")

    def _key(self, kind: Kind) -> tuple[str, str, str]:
        return self.home.url, self.lineage, kind

    def prefix(self, kind: Kind, version: int, upload: str) -> str:
        """Where one upload of a version keeps its objects."""
        return f"{self.home.root}/{self._part}{kind}/v{version}-{upload}"

    def _ready(self, kind: Kind, version: int) -> Any:
        row = self.home.store.model_version_row(*self._key(kind), version)
        return row if row is not None and row.state == READY else None

    def _versions(self, kind: Kind) -> set[int]:
        return {v for v, row in self.home.store.model_versions(*self._key(kind)).items() if row.state == READY}

    def _pointer(self, kind: Kind) -> int | None:
        return self.home.store.current_model(*self._key(kind))

    def _meta(self, kind: Kind, version: int) -> dict[str, Any]:
        row = self._ready(kind, version)
        return dict(row.meta or {}) if row is not None else {}

    def _path(self, kind: Kind, version: int) -> Path:
        row = self._ready(kind, version)
        if row is None:
            raise RegistryError(f"{kind} v{version} does not exist; have {self.versions(kind)}")
        return self.home.cache.get(self.home.fs, self.prefix(kind, version, row.upload), row.digest)

    def staging(self, kind: Kind) -> Path:
        self.home.staging_root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=self.home.staging_root))

    def _publish(self, kind: Kind, staging: Path, meta: dict[str, Any], version: int | None) -> int:
        first = self.next_free(kind)
        reserved = self.home.store.reserve_version(*self._key(kind), version, first, self.home.stale_before())
        if reserved is None:
            raise RegistryError(f"{kind} v{version} exists already or is being uploaded")
        self._upload(kind, *reserved, staging, meta)
        return reserved[0]

    def _upload(self, kind: Kind, version: int, upload: str, staging: Path, meta: dict[str, Any]) -> None:
        """Files, then the manifest, then the store marks the version ready; on failure it is abandoned and its
        objects removed (a killed process leaves that to the reconciler). The staging directory becomes this
        host's cached copy."""
        started = time.monotonic()
        data = manifest(staging, leave_out=("meta.json",))
        files, prefix, fs = manifest_files(data), self.prefix(kind, version, upload), self.home.fs
        digest = hashlib.sha256(data).hexdigest()
        try:
            fs.put([str(staging / name) for name in files], [f"{prefix}/{name}" for name in files])
            fs.pipe_file(f"{prefix}/{MANIFEST}", data)
            if not self.home.store.finish_upload(
                *self._key(kind), version, upload, digest, {**meta, "version": version}
            ):
                raise RegistryError(f"the upload of {kind} v{version} took longer than MODEL_UPLOAD_TIMEOUT: abandoned")
        except BaseException:
            if self.home.store.abandon_upload(*self._key(kind), version, upload):
                _remove(fs, prefix)  # only what never became ready: a commit whose reply was lost stays
            raise
        size = sum(f["size"] for f in files.values())
        log.info(
            "uploaded %s v%d (%.0f MB) to %s in %.1f s", kind, version, size / 1e6, prefix, time.monotonic() - started
        )
        try:
            self.home.cache.adopt(staging, digest, data)
        except OSError as exc:  # a cache is a convenience: the version is published either way
            log.warning("could not keep %s as the cached copy of %s v%d: %s", staging, kind, version, exc)

    def _save_meta(self, kind: Kind, version: int, meta: dict[str, Any]) -> None:
        self.home.store.set_model_meta(*self._key(kind), version, meta)

    def _point(self, kind: Kind, version: int) -> None:
        owner = self._home(kind, version)
        if not self.home.store.set_current_model(*self._key(kind), version, owner.lineage):  # type: ignore[attr-defined]
            raise RegistryError(f"{kind} v{version} is no longer there; have {self.versions(kind)}")

    def _delete(self, kind: Kind, version: int) -> None:
        row = self._ready(kind, version)
        if row is not None and self.home.store.prune_model(*self._key(kind), version):
            _remove(self.home.fs, self.prefix(kind, version, row.upload))

    def discard_stale_staging(self, older_than_s: float = STALE_STAGING_SECONDS) -> None:
        for tmp in self.home.staging_root.iterdir() if self.home.staging_root.is_dir() else ():
            if time.time() - tmp.stat().st_mtime > older_than_s:
                shutil.rmtree(tmp, ignore_errors=True)

    def create_once(self, kind: Kind, version: int, make: Make) -> bool:
        """Reserve the version first: the process (on any host) that gets it creates and uploads it; the others
        wait until it is ready, or take over a reservation older than MODEL_UPLOAD_TIMEOUT."""
        waiting = False
        while not self.exists(kind, version):
            reserved = self.home.store.reserve_version(*self._key(kind), version, version, self.home.stale_before())
            if reserved is None:
                if not waiting:
                    log.info("%s v%d is being made by another process: waiting for it", kind, version)
                    waiting = True
                time.sleep(WAIT_SECONDS)
                continue
            staging = self.staging(kind)
            try:
                meta = self._stamped(kind, make(staging))
                self._upload(kind, version, reserved[1], staging, meta)
            except BaseException:
                self.home.store.abandon_upload(*self._key(kind), version, reserved[1])
                raise
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            self._promoted(kind, version)
            return True
        return False


def _remove(fs: Any, prefix: str) -> None:
    try:
        fs.rm(prefix, recursive=True)
    except FileNotFoundError:
        pass
    except Exception as exc:  # the reconciler's sweep tries again
        log.warning("could not remove %s: %s", prefix, exc)


class ObjectRegistries(Registries):
    """MODEL_DIR as a URL: `policy/v0-*` at the top, each lineage under `lineages/<name>/`."""

    def __init__(self, home: ObjectHome, keep: int = 5) -> None:
        self.home, self.keep = home, keep
        self.base = ObjectRegistry(home, "", keep)
        _ensure_bucket(home)

    def lineage(self, name: str) -> ObjectRegistry:
        return ObjectRegistry(self.home, valid_lineage(name), self.keep, base=self.base)

    def lineages(self) -> list[str]:
        return self.home.store.model_lineages(self.home.url)

    def discard_abandoned(self) -> list[str]:
        """Uploads unfinished after MODEL_UPLOAD_TIMEOUT become tombstones, then every object prefix that no
        ready or uploading version owns is removed (abandoned, pruned, or never recorded). Prefixes are listed
        before the store is read, and a version is reserved before its first object: a live upload is never
        taken for garbage."""
        store, fs, removed = self.home.store, self.home.fs, []
        for row in store.stale_uploads(self.home.url, self.home.stale_before()):
            if store.abandon_upload(row.url, row.lineage, row.kind, row.version, row.upload):
                log.warning(
                    "%s %s v%d: upload unfinished after %gs, abandoned",
                    row.lineage or "base",
                    row.kind,
                    row.version,
                    self.home.upload_timeout,
                )
        fs.invalidate_cache()
        for registry in self.all():
            for kind in KINDS:
                found = _listing(fs, f"{self.home.root}/{registry._part}{kind}")
                rows = store.model_versions(*registry._key(kind))
                live = {
                    registry.prefix(kind, v, row.upload) for v, row in rows.items() if row.state in (READY, UPLOADING)
                }
                for prefix in found:
                    if VERSION_NAME.match(prefix.rsplit("/", 1)[-1].split("-", 1)[0]) and prefix not in live:
                        _remove(fs, prefix)
                        removed.append(prefix)
        if removed:
            log.info("removed %d abandoned or pruned uploads: %s", len(removed), removed)
        return removed


def _listing(fs: Any, folder: str) -> list[str]:
    try:
        return [p.rstrip("/") for p in fs.ls(folder, detail=False)]
    except FileNotFoundError:
        return []


def _ensure_bucket(home: ObjectHome) -> None:
    """Create the bucket (container) when it is missing, as MinIO and test servers start empty. A store that
    cannot be reached or refuses is logged, not fatal: the backend serves what the SQL store holds meanwhile,
    and uploads and fetches say why they fail."""
    bucket = home.root.split("/", 1)[0]
    try:
        fs = home.fs
        if not fs.exists(bucket):
            fs.mkdir(bucket)
            log.info("created bucket %s for MODEL_DIR=%s", bucket, home.url)
    except Exception as exc:
        log.error("MODEL_DIR=%s: bucket %s is not reachable or could not be made: %s", home.url, bucket, exc)
