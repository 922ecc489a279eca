"""Webhooks under faults, side by side in one run: latency and acked/stored/lost, healthy vs Redis down vs Redis
hung vs a gunicorn worker killed mid-burst; and `--fuzz N` hostile requests over HTTP with the workers' memory.

Label Studio waits 1 s for a webhook and never resends it, so under any single fault every annotation must
still be acknowledged within a second, and every acknowledged one must be in the store. The backend runs as it
ships (gunicorn with backend/http/gunicorn_conf.py) on SQLite (or --database-url), against a Redis of its own that
the bench stops (down) and freezes with SIGSTOP (hung).

Run from the repository root (bench/README.md has more):

    .venv/bin/python -m bench.faults -n 400 --fuzz 3000   # Redis hung, down, a worker killed; 3,000 hostile requests
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench import common, webhooks
from tests.support import services
from tests.support.fuzz import mutate, raw_bodies, seeds

GOAL_P99_MS = 1000.0


def start_redis(port: int) -> subprocess.Popen:
    """The bench's own Redis, which it stops and freezes (tests.support.services.start_redis, 5 s to answer)."""
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is needed on the PATH for the fault bench")
    return services.start_redis(port, timeout=5)


def workers_of(master: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def scenario(
    name: str, port: int, first_id: int, n: int, concurrency: int, url: str, during=None
) -> tuple[str, webhooks.Burst, int, int]:
    """One burst of n annotations; `during` runs in a thread while it goes (the fault)."""
    from backend.store import Store

    bodies = webhooks.annotation_bodies(first_id, n)
    fault = threading.Thread(target=during) if during else None
    if fault:
        fault.start()
    result = webhooks.burst(port, "/webhook", bodies, concurrency, 1)
    if fault:
        fault.join()
    acked = n - len(result.failures)
    store = Store(url)
    stored = len(store.annotation_results(range(first_id, first_id + n)))
    store.engine.dispose()
    return name, result, acked, stored


def fuzz(port: int, master: int, rounds: int) -> None:
    """Hostile requests over HTTP (the tests' fuzz, at size), counting 5xx, with the workers' RSS before and after."""
    rng, bodies, errors = random.Random(7), seeds(), 0
    before = rss_mb(workers_of(master))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    started = time.perf_counter()
    for i in range(rounds):
        path, body = rng.choice(bodies)
        data = json.dumps(mutate(body, rng)).encode() if i % 50 else rng.choice(raw_bodies())
        conn.request("POST", path, data, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        errors += response.status >= 500
    print(
        f"fuzz: {rounds} hostile requests in {time.perf_counter() - started:.1f} s, 5xx: {errors}, "
        f"workers' RSS {before:.0f} MB before, {rss_mb(workers_of(master)):.0f} MB after"
    )


def main(argv: list[str] | None = None) -> bool:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--annotations", type=int, default=500, help="webhooks per scenario")
    parser.add_argument("-c", "--concurrency", type=int, default=4)
    parser.add_argument("--database-url", default="", help="postgresql://... (default: SQLite in a temp dir)")
    parser.add_argument("--fuzz", type=int, default=0, metavar="N", help="also send N hostile requests")
    args = parser.parse_args(argv)
    common.header("webhooks under faults: latency, acked, stored, lost")
    tmp = Path(tempfile.mkdtemp(prefix="bench-faults-"))
    url = webhooks.store_url(args.database_url, tmp / "data")
    webhooks.reset_database(url)
    redis_port, port = common.free_port(), common.free_port()
    redis_proc = start_redis(redis_port)
    server = webhooks.start_backend(
        tmp,
        port,
        {
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "RECONCILE_SECONDS": "0",
            "DATABASE_URL": args.database_url,
            "RETRAIN_EVERY": "50",
        },
        ["-c", "python:backend.http.gunicorn_conf"],
    )  # as it ships: preloaded, 2 workers
    rows = []
    try:
        setup = common.payload("setup.pairwise.json") | {"hostname": "", "access_token": ""}
        webhooks.request_json(port, "POST", "/setup", setup)
        webhooks.burst(port, "/webhook", webhooks.annotation_bodies(1, 20), args.concurrency, 1)  # warm-up
        n, base = args.annotations, 1000
        rows.append(scenario("healthy", port, base, n, args.concurrency, url))
        redis_proc.send_signal(signal.SIGSTOP)
        rows.append(scenario("Redis hung (SIGSTOP)", port, base + n, n, args.concurrency, url))
        redis_proc.send_signal(signal.SIGCONT)
        redis_proc.terminate()
        redis_proc.wait(10)
        rows.append(scenario("Redis down", port, base + 2 * n, n, args.concurrency, url))
        redis_proc = start_redis(redis_port)

        def kill_a_worker() -> None:
            time.sleep(0.5)
            os.kill(workers_of(server.pid)[0], signal.SIGKILL)

        rows.append(scenario("gunicorn worker killed -9", port, base + 3 * n, n, args.concurrency, url, kill_a_worker))
        print(f"{'scenario':<28} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'acked':>6} {'stored':>6} {'lost':>5}")
        ok = True
        for name, result, acked, stored in rows:
            lost = max(0, acked - stored)
            print(
                f"{name:<28} {result.ms(50):>8.1f} {result.ms(99):>8.1f} {result.ms(100):>8.1f} {acked:>6} "
                f"{stored:>6} {lost:>5}"
            )
            ok &= result.ms(99) <= GOAL_P99_MS and lost == 0
        ok &= common.verdict(
            "p99 under every single fault, nothing acknowledged lost", f"<= {GOAL_P99_MS:g} ms, 0 lost", ok
        )
        if args.fuzz:
            fuzz(port, server.pid, args.fuzz)
        return ok
    finally:
        common.stop(server)
        redis_proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(0 if main() else 1)
