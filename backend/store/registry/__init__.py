"""The model registry: numbered policy and reward versions per lineage, one served per kind, on a disk
(disk.py) or on object storage (objects.py, with its state in the SQL store and a local cache, cache.py). What
both share is in base.py. May import backend.core and backend.store.versions."""

from __future__ import annotations

from backend.core.settings import Settings, is_url
from backend.store.registry.base import (
    KINDS,
    STALE_STAGING_SECONDS,
    Kind,
    Registries,
    Registry,
    RegistryError,
    rejected,
    valid_lineage,
)
from backend.store.registry.cache import ModelCache
from backend.store.registry.disk import LEGACY_LINEAGE, DiskRegistries, DiskRegistry
from backend.store.registry.objects import ObjectHome, ObjectRegistries, ObjectRegistry
from backend.store.versions import VersionQueries

__all__ = [
    "KINDS",
    "LEGACY_LINEAGE",
    "STALE_STAGING_SECONDS",
    "DiskRegistries",
    "DiskRegistry",
    "Kind",
    "ModelCache",
    "ObjectRegistries",
    "ObjectRegistry",
    "Registries",
    "Registry",
    "RegistryError",
    "open_registries",
    "rejected",
    "valid_lineage",
]


def open_registries(settings: Settings, store: VersionQueries | None) -> Registries:
    """MODEL_DIR's registries: a directory, or a URL whose state the store keeps and whose files this host
    caches under MODEL_CACHE_DIR."""
    if is_url(settings.model_dir):
        if store is None:
            raise RegistryError(f"MODEL_DIR={settings.model_dir} keeps its state in the store: open one")
        cache = ModelCache(settings.model_cache_path, settings.model_cache_bytes)
        home = ObjectHome(settings.model_dir, store, cache, settings.model_upload_timeout)
        return ObjectRegistries(home, settings.keep_versions)
    return DiskRegistries(settings.model_dir, settings.keep_versions)
