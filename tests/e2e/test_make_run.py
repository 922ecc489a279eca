"""`make run` as a newcomer runs it: the workers get the Makefile's environment and thread budget, the backend
listens on loopback only (no credentials set), and one Ctrl-C stops everything cleanly (no signal storm, no
segmentation fault, no process left behind)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import requests
from rq import Worker

from backend.queue import JobQueue
from tests.support.labelstudio_server import free_port
from tests.support.settings import ROOT, TEST_REDIS_URL, make_settings
from tests.support.wait import wait_for


def environ(pid: int) -> dict[str, str]:
    raw = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    return dict(item.decode(errors="replace").split("=", 1) for item in raw if b"=" in item)


def test_make_run_starts_the_loop_and_one_ctrl_c_stops_it(tmp_path, tiny_model, redis) -> None:
    settings = make_settings(tmp_path, tiny_model, port=free_port())
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "MAKEFLAGS", "MFLAGS", "MAKELEVEL", "HOST", "BASIC_AUTH_USER", "BASIC_AUTH_PASS")
    }
    env.update(
        {
            k: v
            for k, v in settings.as_env().items()
            if k in ("MODEL_DIR", "DATA_DIR", "POLICY_MODEL", "QUEUE_PREFIX", "PORT")
        },
        REDIS_URL=TEST_REDIS_URL,
        WORKER_THREADS="0",
    )
    proc = subprocess.Popen(
        ["make", "run"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
    )
    try:
        queue = JobQueue(settings)

        def up() -> bool:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            return len(Worker.all(connection=queue.redis)) >= 2 and _up(settings.port)

        wait_for(up, 120, 0.5, "`make run`'s two workers and its backend")
        for worker in Worker.all(connection=queue.redis):
            seen = environ(worker.pid)
            assert seen["HF_HUB_OFFLINE"] == "1" and seen["LOCAL_WORKERS"] == "2"
        assert listening(settings.port) == {"127.0.0.1"}  # no auth: never all interfaces
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "AUTHENTICATION IS OFF" not in output
    assert "Segmentation fault" not in output and "core dumped" not in output, output[-3000:]
    threads = max(1, len(os.sched_getaffinity(0)) // 2)  # two workers share the CPUs
    assert output.count(f"torch threads per job: {threads};") == 2, output[-3000:]
    time.sleep(0.5)
    try:
        os.killpg(proc.pid, 0)
        leftover = subprocess.run(["ps", "-o", "pid,args", "-g", str(proc.pid)], capture_output=True, text=True).stdout
        raise AssertionError(f"processes left behind:\n{leftover}")
    except ProcessLookupError:
        pass


def listening(port: int) -> set[str]:
    """The IPv4 addresses with a socket listening on port (the kernel's own table, /proc/net/tcp)."""
    found = set()
    for line in open("/proc/net/tcp").read().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(".".join(str(b) for b in reversed(bytes.fromhex(address))))
    return found


def _up(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok
    except requests.RequestException:
        return False
