"""Webhook ingestion under a burst: latency and persisted annotations/s of the real backend under gunicorn.

Label Studio waits 1 s for a webhook and never retries, so each ANNOTATION_CREATED must be persisted and
acknowledged in milliseconds even while many arrive at once. The backend runs as it ships (gunicorn, sync
workers), with its store in SQLite (default) or PostgreSQL (--database-url) and Redis database 14. GET /health,
which touches neither store nor queue, is measured the same way as the floor (the baseline) that the server and
the client alone impose; the ratio shows what persisting adds on top.

Run from the repository root (bench/README.md has more):

    .venv/bin/python -m bench.webhooks                    # 2,000 webhooks, 16 connections, SQLite store: ~20 s
    .venv/bin/python -m bench.webhooks -c 4 -n 4000       # the figures in the README
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import common

GOAL_P99_MS = 25.0
GOAL_RATE = 300.0
GOAL_RATIO = {"sqlite": 4.0, "postgresql": 8.0}  # webhook p99 over /health p99, at 4 connections
PROJECT = 1
WARMUP = 20  # annotations sent before measuring (connection set-up, first-request imports); counted in the total


@dataclass
class Burst:
    """What one burst measured: per-request latencies (s), failures and its wall-clock span."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    started: float = float("inf")
    ended: float = 0.0

    def merge(self, other: "Burst") -> None:
        self.latencies += other.latencies
        self.failures += other.failures
        self.started, self.ended = min(self.started, other.started), max(self.ended, other.ended)

    @classmethod
    def sequence(cls, blocks: list["Burst"]) -> "Burst":
        """Blocks run one after another (interleaved with other blocks): their times add, the gaps do not."""
        return cls(
            [x for b in blocks for x in b.latencies],
            [f for b in blocks for f in b.failures],
            0.0,
            sum(b.seconds for b in blocks),
        )

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    def ms(self, q: float) -> float:
        """The q-th percentile latency in milliseconds."""
        return common.percentile([x * 1000 for x in self.latencies], q)

    def summary(self) -> str:
        n = len(self.latencies)
        return (
            f"{n} requests in {self.seconds:.2f} s = {n / self.seconds:,.0f}/s | p50 {self.ms(50):.1f} ms, "
            f"p90 {self.ms(90):.1f} ms, p99 {self.ms(99):.1f} ms, max {self.ms(100):.1f} ms | "
            f"failures {len(self.failures)}"
        )


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--annotations", type=int, default=2000, help="ANNOTATION_CREATED webhooks in the burst")
    parser.add_argument("-c", "--concurrency", type=int, default=16, help="concurrent client connections")
    parser.add_argument(
        "--client-processes",
        type=int,
        default=2,
        help="client processes the connections are spread over (one GIL would skew latencies)",
    )
    parser.add_argument(
        "--blocks",
        type=int,
        default=4,
        help="the /health and /webhook bursts are split into this "
        "many blocks and interleaved, so that both see the machine as it is during the run",
    )
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=1, help="gunicorn threads per worker (1 as shipped: sync)")
    parser.add_argument(
        "--database-url",
        default="",
        help="store URL (postgresql://...); its tables are dropped and recreated. Default: SQLite in a temp dir",
    )
    parser.add_argument(
        "--retrain-every", type=int, default=50, help="RETRAIN_EVERY (the trigger path runs; jobs only queue)"
    )
    parser.add_argument(
        "--py-spy",
        metavar="OUT",
        help="record the gunicorn workers with py-spy during the burst (raw "
        "collapsed stacks to OUT); needs the py-spy binary on PATH",
    )
    return parser


# --- client ------------------------------------------------------------------------------------------------------


def post_all(port: int, path: str, bodies: list[bytes | None], threads: int, start_at: float) -> Burst:
    """Send the requests from `threads` keep-alive connections, starting at wall time start_at."""
    result, lock = Burst(), threading.Lock()
    chunks = [bodies[i::threads] for i in range(threads)]

    def run(chunk: list[bytes | None]) -> None:
        mine = Burst()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        time.sleep(max(0.0, start_at - time.time()))
        mine.started = time.time()
        for body in chunk:
            began = time.perf_counter()
            try:
                if body is None:
                    conn.request("GET", path)
                else:
                    conn.request("POST", path, body, {"Content-Type": "application/json"})
                response = conn.getresponse()
                answer = response.read()
                if response.status != 200:
                    mine.failures.append(f"{response.status}: {answer[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                mine.failures.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.latencies.append(time.perf_counter() - began)
        mine.ended = time.time()
        conn.close()
        with lock:
            result.merge(mine)

    workers = [threading.Thread(target=run, args=(c,)) for c in chunks if c]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return result


def _client_process(args: tuple[int, str, list[bytes | None], int, float]) -> Burst:
    return post_all(*args)


def burst(port: int, path: str, bodies: list[bytes | None], concurrency: int, processes: int) -> Burst:
    """Spread the requests over client processes x threads, all starting at the same instant."""
    processes = max(1, min(processes, concurrency))
    start_at = time.time() + 1.0  # every process has forked and connected by then
    jobs = [
        (port, path, bodies[p::processes], concurrency // processes + (p < concurrency % processes), start_at)
        for p in range(processes)
    ]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        parts = pool.map(_client_process, jobs)
    total = Burst()
    for part in parts:
        total.merge(part)
    return total


def annotation_bodies(first_id: int, count: int) -> list[bytes]:
    """ANNOTATION_CREATED bodies as Label Studio sends them, each with its own annotation and task id."""
    template = common.payload("webhook-annotation-created.pairwise.json")
    bodies = []
    for i in range(first_id, first_id + count):
        template["annotation"].update(
            id=i,
            task=i,
            result=[
                {
                    "from_name": "pw",
                    "to_name": "a",
                    "type": "pairwise",
                    "value": {"selected": "left" if i % 2 else "right"},
                }
            ],
        )
        template["task"].update(
            id=i, data={"prompt": f"Question {i}?", "answer1": f"answer A{i}", "answer2": f"answer B{i}"}
        )
        bodies.append(json.dumps(template).encode())
    return bodies


# --- server ------------------------------------------------------------------------------------------------------


def store_url(database_url: str, data_dir: Path) -> str:
    """The SQLAlchemy URL the backend will use (Settings.sqlalchemy_url's rule)."""
    from backend.core.settings import Settings

    return Settings(database_url=database_url, data_dir=data_dir).sqlalchemy_url


def reset_database(url: str) -> None:
    """Drop and recreate the backend's tables, so counts start from zero; created here, before gunicorn starts,
    because two workers creating them at once race (one dies with "table projects already exists")."""
    from sqlalchemy import text

    from backend.store import Base, Store, make_engine

    engine = make_engine(url)
    Base.metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))  # the migrations then build it all again
    engine.dispose()
    Store(url).engine.dispose()


def start_backend(tmp: Path, port: int, env: dict[str, str], gunicorn_args: list[str]) -> subprocess.Popen:
    """gunicorn over backend.http.wsgi:app with these settings in the environment; waits until /health answers."""
    env = dict(
        os.environ,
        QUEUE_PREFIX="bench",
        DATA_DIR=str(tmp / "data"),
        MODEL_DIR=str(tmp / "models"),
        PYTHONPATH=str(common.ROOT),
        **env,
    )
    log = open(tmp / "gunicorn.log", "w")  # closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", *gunicorn_args, "backend.http.wsgi:app", "-b", f"127.0.0.1:{port}"],
        cwd=common.ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited: {(tmp / 'gunicorn.log').read_text()[-3000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("gunicorn did not answer /health within 90 s")


def request_json(port: int, method: str, path: str, body: Any = None) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request(method, path, json.dumps(body) if body is not None else None, {"Content-Type": "application/json"})
    response = conn.getresponse()
    answer = json.loads(response.read() or b"{}")
    if response.status != 200:
        raise RuntimeError(f"{method} {path}: {response.status} {answer}")
    return answer


def record_profile(pid: int, out: str) -> subprocess.Popen:
    """py-spy on the gunicorn master and its workers while the burst runs (stopped afterwards)."""
    return subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--subprocesses",
            "--format",
            "raw",
            "--rate",
            "200",
            "--output",
            out,
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


# --- main --------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> bool:
    args = make_parser().parse_args(argv)
    common.header("webhook burst: latency and persisted annotations/s")
    tmp = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    url = store_url(args.database_url, tmp / "data")
    common.flush_bench_redis()
    reset_database(url)
    port = common.free_port()
    server = start_backend(
        tmp,
        port,
        {
            "REDIS_URL": common.BENCH_REDIS_URL,
            "DATABASE_URL": args.database_url,
            "RETRAIN_EVERY": str(args.retrain_every),
            "RECONCILE_SECONDS": "0",
        },
        ["-w", str(args.workers), "--threads", str(args.threads)],
    )
    profiler = None
    try:
        setup = common.payload("setup.pairwise.json") | {"hostname": "", "access_token": ""}
        request_json(port, "POST", "/setup", setup)
        print(
            f"backend: gunicorn -w {args.workers} --threads {args.threads}, store {url.split('://')[0]}, "
            f"RETRAIN_EVERY {args.retrain_every} | client: {args.concurrency} keep-alive connections over "
            f"{args.client_processes} processes"
        )
        burst(port, "/webhook", annotation_bodies(1, WARMUP), args.concurrency, args.client_processes)
        burst(port, "/health", [None] * WARMUP, args.concurrency, args.client_processes)
        if args.py_spy:
            profiler = record_profile(server.pid, args.py_spy)
            time.sleep(1.0)
        bodies, blocks = annotation_bodies(WARMUP + 1, args.annotations), max(1, args.blocks)
        healths, hooks_blocks = [], []
        for block in range(blocks):
            healths.append(
                burst(port, "/health", [None] * len(bodies[block::blocks]), args.concurrency, args.client_processes)
            )
            hooks_blocks.append(burst(port, "/webhook", bodies[block::blocks], args.concurrency, args.client_processes))
        health, hooks = Burst.sequence(healths), Burst.sequence(hooks_blocks)
        if profiler is not None:
            os.killpg(profiler.pid, 2)
            profiler.wait(30)
        print(f"baseline GET /health:          {health.summary()}")
        print(f"ours POST /webhook (persist):  {hooks.summary()}")
        for failure in hooks.failures[:5]:
            print(f"  failure: {failure}")
        return report(args, url, health, hooks)
    finally:
        common.stop(server)
        if profiler is not None:
            common.stop(profiler)
        shutil.rmtree(tmp, ignore_errors=True)


def report(args: argparse.Namespace, url: str, health: Burst, hooks: Burst) -> bool:
    """Check persistence in the store, then print the ratio and the goals."""
    from backend.store import Store

    store = Store(url)
    counts = store.counts().get(PROJECT, {})
    store.engine.dispose()
    expected = args.annotations + WARMUP
    persisted = counts.get("annotations", 0)
    print(
        f"store: {persisted} annotations, {counts.get('pairs', 0)} pairs for project {PROJECT} "
        f"(expected {expected} = {WARMUP} warm-up + {args.annotations})"
    )
    p99_hooks, rate = hooks.ms(99), (persisted - WARMUP) / hooks.seconds
    ratio, database = p99_hooks / health.ms(99), url.split(":")[0].split("+")[0]
    print(f"p99 /webhook / p99 /health = {ratio:.2f}x (the cost of persisting over the server floor)")
    print(
        f"note: with {args.concurrency} requests always in flight, mean latency = {args.concurrency} / throughput "
        f"(Little's law): p50 <= {GOAL_P99_MS:g} ms needs >= {args.concurrency / GOAL_P99_MS * 1000:,.0f} requests/s"
    )
    ok = common.verdict(f"webhook p99 {p99_hooks:.1f} ms", f"<= {GOAL_P99_MS:g} ms", p99_hooks <= GOAL_P99_MS)
    if args.concurrency == 4 and database in GOAL_RATIO:
        ok &= common.verdict(
            f"p99 ratio {ratio:.2f}x on {database}", f"<= {GOAL_RATIO[database]:g}x", ratio <= GOAL_RATIO[database]
        )
    ok &= common.verdict(f"persisted {rate:,.0f} annotations/s", f">= {GOAL_RATE:g}/s", rate >= GOAL_RATE)
    ok &= common.verdict(
        f"all persisted ({persisted}/{expected}), no failures ({len(hooks.failures)})",
        "every webhook stored",
        persisted == expected and not hooks.failures,
    )
    return ok


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
