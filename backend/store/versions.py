"""The state of a model registry on object storage: which versions exist, in which state, and which one each
lineage serves. Every change is one conditional statement, so hosts that share only the database agree on it."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import exists, func, select, update
from sqlalchemy.exc import IntegrityError

from backend.store.database import Database
from backend.store.tables import ModelCurrent, ModelVersion

UPLOADING, READY, ABANDONED, PRUNED = "uploading", "ready", "abandoned", "pruned"


def json_safe(value: Any) -> Any:
    """What a JSON column keeps on every database: non-finite floats (a diverged metric) become None, as
    PostgreSQL's json refuses NaN; other objects their str, as meta.json on a disk had them."""
    return json.loads(json.dumps(value, default=str), parse_constant=lambda _: None)


def naive_utc(moment: datetime | None = None) -> datetime:
    """The store keeps naive UTC (SQLite has no time zones)."""
    return (moment or datetime.now(timezone.utc)).astimezone(timezone.utc).replace(tzinfo=None)


class VersionQueries(Database):
    """Reservations, uploads finished, tombstones and the current pointer of object-store registries."""

    def reserve_version(
        self, url: str, lineage: str, kind: str, version: int | None, first: int, stale_before: datetime
    ) -> tuple[int, str] | None:
        """Reserve a version number for an upload: the next one from `first` (None), or exactly `version`,
        which is taken over when an earlier upload of it was abandoned or started before `stale_before`.
        Returns (number, upload id), or None when `version` is ready or being uploaded by someone alive."""
        upload = uuid.uuid4().hex
        while True:
            number = version if version is not None else max(first, self._next_number(url, lineage, kind))
            row = ModelVersion(
                url=url,
                lineage=lineage,
                kind=kind,
                version=number,
                state=UPLOADING,
                upload=upload,
                started_at=naive_utc(),
            )
            try:
                with self._write_session() as s:
                    s.add(row)
                return number, upload
            except IntegrityError:
                if version is None:
                    continue  # another upload took this number meanwhile: the next one
            with self._write_session() as s:
                taken = s.execute(
                    update(ModelVersion)
                    .where(*_key(url, lineage, kind, number))
                    .where(
                        (ModelVersion.state == ABANDONED)
                        | ((ModelVersion.state == UPLOADING) & (ModelVersion.started_at < stale_before))
                    )
                    .values(state=UPLOADING, upload=upload, started_at=naive_utc(), digest=None, meta=None)
                )
            return (number, upload) if taken.rowcount == 1 else None

    def _next_number(self, url: str, lineage: str, kind: str) -> int:
        with self.session() as s:
            found = s.scalar(select(func.max(ModelVersion.version)).where(*_key(url, lineage, kind)))
        return 0 if found is None else found + 1

    def finish_upload(
        self, url: str, lineage: str, kind: str, version: int, upload: str, digest: str, meta: dict[str, Any]
    ) -> bool:
        """Mark a reserved version ready, only if this upload still holds it (not abandoned meanwhile)."""
        with self._write_session() as s:
            done = s.execute(
                update(ModelVersion)
                .where(*_key(url, lineage, kind, version))
                .where(ModelVersion.upload == upload, ModelVersion.state == UPLOADING)
                .values(state=READY, digest=digest, meta=json_safe(meta))
            )
        return done.rowcount == 1

    def abandon_upload(self, url: str, lineage: str, kind: str, version: int, upload: str) -> bool:
        """Turn an unfinished upload into a tombstone; False if it was no longer that upload's (finished, or
        taken over)."""
        with self._write_session() as s:
            done = s.execute(
                update(ModelVersion)
                .where(*_key(url, lineage, kind, version), ModelVersion.state == UPLOADING)
                .where(ModelVersion.upload == upload)
                .values(state=ABANDONED)
            )
        return done.rowcount == 1

    def model_versions(self, url: str, lineage: str, kind: str) -> dict[int, ModelVersion]:
        """Every version row of one lineage and kind, by number, tombstones included."""
        with self.session() as s:
            rows = s.scalars(select(ModelVersion).where(*_key(url, lineage, kind))).all()
        return {row.version: row for row in rows}

    def model_version_row(self, url: str, lineage: str, kind: str, version: int) -> ModelVersion | None:
        with self.session() as s:
            return s.get(ModelVersion, (url, lineage, kind, version))

    def set_model_meta(self, url: str, lineage: str, kind: str, version: int, meta: dict[str, Any]) -> None:
        with self._write_session() as s:
            s.execute(update(ModelVersion).where(*_key(url, lineage, kind, version)).values(meta=json_safe(meta)))

    def stale_uploads(self, url: str, before: datetime) -> list[ModelVersion]:
        """Uploads reserved before `before` and never finished: their job died or hangs."""
        with self.session() as s:
            return list(
                s.scalars(
                    select(ModelVersion).where(
                        ModelVersion.url == url,
                        ModelVersion.state == UPLOADING,
                        ModelVersion.started_at < before,
                    )
                ).all()
            )

    def model_lineages(self, url: str) -> list[str]:
        """Lineages with a version or a pointer in this registry (the shared base "" left out)."""
        with self.session() as s:
            names = set(s.scalars(select(ModelVersion.lineage).where(ModelVersion.url == url).distinct()))
            names |= set(s.scalars(select(ModelCurrent.lineage).where(ModelCurrent.url == url).distinct()))
        return sorted(names - {""})

    def current_model(self, url: str, lineage: str, kind: str) -> int | None:
        with self.session() as s:
            row = s.get(ModelCurrent, (url, lineage, kind))
            return None if row is None else row.version

    def prune_model(self, url: str, lineage: str, kind: str, version: int) -> bool:
        """Mark a ready version pruned unless a pointer names it (a rollback may have, since it was chosen)."""
        served = exists().where(
            ModelCurrent.url == url,
            ModelCurrent.lineage == lineage,
            ModelCurrent.kind == kind,
            ModelCurrent.version == ModelVersion.version,
        )
        with self._write_session() as s:
            done = s.execute(
                update(ModelVersion)
                .where(*_key(url, lineage, kind, version), ModelVersion.state == READY, ~served)
                .values(state=PRUNED)
            )
        return done.rowcount == 1

    def set_current_model(self, url: str, lineage: str, kind: str, version: int, owner: str) -> bool:
        """Point a lineage's kind at a version, only while that version (a row of lineage `owner`: the base's
        for policy v0) is ready, holding its row meanwhile so that no prune slips in. False if it is not."""
        for _ in range(2):
            try:
                with self._write_session() as s:
                    target = s.get(ModelVersion, (url, owner, kind, version), with_for_update=True)
                    if target is None or target.state != READY:
                        return False
                    row = s.get(ModelCurrent, (url, lineage, kind))
                    if row is None:
                        s.add(ModelCurrent(url=url, lineage=lineage, kind=kind, version=version))
                    else:
                        row.version = version
                return True
            except IntegrityError:  # another process made the first pointer meanwhile: update it
                continue
        raise RuntimeError(f"could not point {url} {lineage or 'base'} {kind} at v{version}")


def _key(url: str, lineage: str, kind: str, version: int | None = None) -> list[Any]:
    where = [ModelVersion.url == url, ModelVersion.lineage == lineage, ModelVersion.kind == kind]
    return where if version is None else [*where, ModelVersion.version == version]
