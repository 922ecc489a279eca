"""This host's copies of versions kept on object storage (MODEL_CACHE_DIR): each filled once, named by its
manifest's digest (so a copy is never stale), checked against the manifest's checksums before a process uses
it, and pruned, least recently used first, to MODEL_CACHE_BYTES. Everything here is deletable."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from backend.core.locks import file_lock, try_file_lock

log = logging.getLogger(__name__)
MANIFEST = ".manifest.json"  # beside a version's files, on the store and in the cache: what each file holds
_CHUNK = 8 << 20
IN_USE_SECONDS = 600  # an entry used this recently may be being loaded by another process: pruning skips it


class CacheError(RuntimeError):
    """The store's copy of a version does not match its manifest: refetching would not help."""


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def manifest(folder: Path, leave_out: tuple[str, ...] = ()) -> bytes:
    """Every file under `folder` (but the manifest and `leave_out`) with its size and sha256, as JSON bytes."""
    files = {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": file_digest(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST and str(p.relative_to(folder)) not in leave_out
    }
    return json.dumps({"files": files}, indent=1, sort_keys=True).encode()


def manifest_files(data: bytes) -> dict[str, dict[str, Any]]:
    return json.loads(data)["files"]


def intact(folder: Path, files: dict[str, dict[str, Any]]) -> str | None:
    """None when every file listed is there with its size and checksum, else what is wrong."""
    for name, want in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != want["size"]:
            return f"{name}: missing or of the wrong size"
        if file_digest(path) != want["sha256"]:
            return f"{name}: checksum differs"
    return None


class ModelCache:
    """Content-addressed local copies: `<root>/<digest>/` holds one version's files and its manifest."""

    def __init__(self, root: Path, limit_bytes: int) -> None:
        self.root, self.limit_bytes = Path(root), limit_bytes
        self._pid, self._used = os.getpid(), set[Path]()

    @property
    def _checked(self) -> set[Path]:
        """Entries this process checked and uses: a forked RQ work-horse starts with none, checks again."""
        if self._pid != os.getpid():
            self._pid, self._used = os.getpid(), set()
        return self._used

    def get(self, fs: Any, remote: str, digest: str) -> Path:
        """The local copy of the version at `remote` whose manifest hashes to `digest`: fetched when missing
        or damaged (a warning says which), checked before first use in this process."""
        entry = self.root / digest
        with file_lock(self.root / f".{digest}.lock"):  # one fill per host, the others wait for it
            if entry.is_dir() and (entry in self._checked or self._check(entry, digest)):
                os.utime(entry)  # recently used: pruned last
                return entry
            self._fill(fs, remote, digest, entry)
        self._checked.add(entry)
        self.prune(keep=entry)
        return entry

    def adopt(self, folder: Path, digest: str, data: bytes) -> None:
        """Keep a folder just uploaded (its manifest `data`) as the cached copy: no download of what is here."""
        entry = self.root / digest
        with file_lock(self.root / f".{digest}.lock"):
            if not entry.is_dir():
                (folder / MANIFEST).write_bytes(data)
                os.rename(folder, entry)
        self._checked.add(entry)
        self.prune(keep=entry)

    def _check(self, entry: Path, digest: str) -> bool:
        try:
            data = (entry / MANIFEST).read_bytes()
            problem = "manifest differs" if hashlib.sha256(data).hexdigest() != digest else None
            problem = problem or intact(entry, manifest_files(data))
        except (OSError, ValueError, KeyError) as exc:
            problem = f"manifest unreadable ({exc})"
        if problem is None:
            self._checked.add(entry)
            return True
        log.warning("cached model %s is damaged (%s): fetching it again", entry, problem)
        shutil.rmtree(entry, ignore_errors=True)
        return False

    def _fill(self, fs: Any, remote: str, digest: str, entry: Path) -> None:
        started = time.monotonic()
        data = fs.cat_file(f"{remote}/{MANIFEST}")
        if hashlib.sha256(data).hexdigest() != digest:
            raise CacheError(f"{remote}: its manifest does not match the digest the store recorded")
        files = manifest_files(data)
        part = self.root / f".part-{digest}-{os.getpid()}"
        shutil.rmtree(part, ignore_errors=True)
        try:
            targets = [part / name for name in files]
            for target in targets:
                target.parent.mkdir(parents=True, exist_ok=True)
            fs.get([f"{remote}/{name}" for name in files], [str(t) for t in targets])
            problem = intact(part, files)
            if problem is not None:
                raise CacheError(f"{remote}: the store's copy is damaged ({problem})")
            (part / MANIFEST).write_bytes(data)
            os.rename(part, entry)
        finally:
            shutil.rmtree(part, ignore_errors=True)
        size = sum(f["size"] for f in files.values())
        log.info("fetched %s (%.0f MB) into %s in %.1f s", remote, size / 1e6, entry, time.monotonic() - started)

    def prune(self, keep: Path | None = None, in_use_s: float = IN_USE_SECONDS) -> list[Path]:
        """Delete least recently used entries until the cache holds at most `limit_bytes`: never `keep`, one this
        process uses, one used in the last `in_use_s` seconds or one being filled; and fills that a killed
        process left half done. Housekeeping: it never fails the caller."""
        try:
            return self._prune(keep, in_use_s)
        except OSError as exc:  # another process removed or renamed something meanwhile: next time
            log.warning("model cache housekeeping skipped: %s", exc)
            return []

    def _prune(self, keep: Path | None, in_use_s: float) -> list[Path]:
        if not self.root.is_dir():
            return []
        for part in self.root.glob(".part-*"):  # .part-<digest>-<pid>: its filler holds the digest's lock
            with try_file_lock(self.root / f".{part.name.split('-')[1]}.lock") as free:
                if free:
                    shutil.rmtree(part, ignore_errors=True)
        entries = [p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")]
        used = {p: p.stat().st_mtime for p in entries}
        sizes = {p: sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in entries}
        total, removed = sum(sizes.values()), []
        for entry in sorted(entries, key=used.__getitem__):
            if total <= self.limit_bytes:
                break
            if entry == keep or entry in self._checked:
                continue
            with try_file_lock(self.root / f".{entry.name}.lock") as free:
                if not free or time.time() - entry.stat().st_mtime < in_use_s:
                    continue  # being filled or checked, or used recently: perhaps being loaded
                shutil.rmtree(entry, ignore_errors=True)
            total -= sizes[entry]
            removed.append(entry)
            log.info("model cache over %d bytes: removed %s", self.limit_bytes, entry)
        return removed
