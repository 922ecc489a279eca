"""Publishing and fetching a SmolLM2-sized version through an object-store registry (MODEL_DIR=s3://..., against
moto's S3 server on this machine) beside a local disk: the promotion a worker does after training, and the
first load of a version on a host that does not have it.

publish (ours): `ObjectRegistry.promote` of a staged fp32 policy: manifest (sha256 of every file), upload, the
               store marks it ready; the staging directory becomes the worker's cached copy.
publish (disk): `DiskRegistry.promote` (a rename inside MODEL_DIR), and a copy of the same files to another
               directory (what a registry on a shared disk costs at best when the staging is elsewhere).
fetch (ours):   `path()` from a host with an empty cache: download, check every checksum, keep.
check (ours):   `path()` of a cached copy in a new process: the checksums again, no download.
fetch (disk):   a copy of the version's directory (page cache warm, as on a local disk).
transport:      s3fs put/get of the same files alone: the floor this S3 server sets (moto: one Python process).

The version is the embedded SmolLM2-135M-Instruct as policy v0 (fp32, converted once into the bench cache).
No goal: the figures are for sizing (docs/deployment.md, "Several hosts").
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench import common


def timed(repeats: int, prepare: Callable[[int], object], run: Callable[[object], object]) -> list[float]:
    """Seconds of `run(prepare(i))` for each repeat, the preparation untimed."""
    seconds = []
    for i in range(repeats):
        ready = prepare(i)
        started = time.perf_counter()
        run(ready)
        seconds.append(time.perf_counter() - started)
    return seconds


def line(label: str, seconds: list[float], size: int) -> None:
    median = statistics.median(seconds)
    print(
        f"{label:<44} median {median:6.2f} s  (min {min(seconds):.2f}, max {max(seconds):.2f}, n={len(seconds)})"
        f"  {size / 1e6 / median:7.0f} MB/s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="embedded", help="embedded, tiny, or a model directory")
    args = parser.parse_args()

    from backend.core.settings import Settings
    from backend.store import Store
    from backend.store.registry import DiskRegistry, ObjectRegistries, open_registries
    from tests.support.objectstore import bucket_url, s3_server

    source = common.embedded_policy() if args.model == "embedded" else Path(common.resolve_model(args.model))
    files = [p for p in source.rglob("*") if p.is_file() and p.name != "meta.json"]
    size = sum(p.stat().st_size for p in files)
    common.header(f"registry transfer: {source} ({size / 1e6:.0f} MB in {len(files)} files)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    try:
        with s3_server(tmp) as endpoint:
            settings = Settings(model_dir=bucket_url(), data_dir=tmp / "data", _env_file=None)
            store = Store(settings.sqlalchemy_url)

            def host(name: str) -> ObjectRegistries:
                found = open_registries(settings.model_copy(update={"model_cache_dir": str(tmp / name)}), store)
                assert isinstance(found, ObjectRegistries)
                return found

            print(f"object store: moto's S3 server at {endpoint}; store: SQLite; {common.load()}")
            trainer = host("trainer").lineage("bench")

            def staged(registry: object) -> Callable[[int], Path]:
                def prepare(_: int) -> Path:
                    staging = registry.staging("policy")  # type: ignore[attr-defined]
                    shutil.copytree(source, staging, dirs_exist_ok=True, ignore=shutil.ignore_patterns("meta.json"))
                    return staging

                return prepare

            publish = timed(args.repeats, staged(trainer), lambda s: trainer.promote("policy", s, {}))
            disk = DiskRegistry(tmp / "disk-registry", keep=args.repeats + 1)
            rename = timed(args.repeats, staged(disk), lambda s: disk.promote("policy", s, {}))
            copy = timed(args.repeats, lambda i: tmp / f"copy-{i}", lambda d: shutil.copytree(source, d))
            version = trainer.current("policy")

            def load(reader: object) -> Path:
                return reader.lineage("bench").path("policy", version)  # type: ignore[attr-defined]

            fetch = timed(args.repeats, lambda i: host(f"reader-{i}"), load)
            check = timed(args.repeats, lambda i: host(f"reader-{i}"), load)  # the same caches, new processes' view
            copy_again = timed(args.repeats, lambda i: tmp / f"again-{i}", lambda d: shutil.copytree(source, d))
            fs, root = trainer.home.fs, trainer.home.root
            names = [str(p.relative_to(source)) for p in files]
            put = timed(
                args.repeats,
                lambda i: f"{root}/raw-{i}",
                lambda r: fs.put([str(source / n) for n in names], [f"{r}/{n}" for n in names]),
            )

            def get_into(i: int) -> Path:
                (tmp / f"raw-{i}").mkdir()
                return tmp / f"raw-{i}"

            remote = [f"{root}/raw-0/{n}" for n in names]
            get = timed(args.repeats, get_into, lambda d: fs.get(remote, [str(d / n) for n in names]))
            print("-- publish a trained version")
            line("object store: promote (hash, upload, ready)", publish, size)
            line("local disk: promote (a rename)", rename, size)
            line("local disk: copy of the version", copy, size)
            line("transport alone: s3fs put of the same files", put, size)
            print("-- first load on a host without it")
            line("object store: fetch into an empty cache", fetch, size)
            line("object store: cached copy checked (new process)", check, size)
            line("local disk: copy of the version", copy_again, size)
            line("transport alone: s3fs get of the same files", get, size)
            print(
                f"object store / disk copy: publish {statistics.median(publish) / statistics.median(copy):.1f}x, "
                f"fetch {statistics.median(fetch) / statistics.median(copy_again):.1f}x | {common.load()}"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
