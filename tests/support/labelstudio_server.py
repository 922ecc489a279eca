"""Start a real Label Studio on loopback for tests (see DESIGN.md §8).

Label Studio lives in its own venv (it pins an old redis/rq), found at $LS_VENV or
<repo>/.cache/ls-venv and created there on first use. A data dir with a preset admin and
legacy token is initialised once into <repo>/.cache/ls-data-template (about 30 s of
migrations) and copied for every server start (about 3 s).

    python -m tests.support.labelstudio_server --install   # venv + data template, ahead of time (make ls-venv)
    python -m tests.support.labelstudio_server --serve     # run one, print url and token

Run from the repository root. The tests get one server per session from the `label_studio` fixture
(tests/e2e/conftest.py); bench/loop.py starts its own. Standard library only: --install runs before the test
extras are needed.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tests.support.wait import TimedOut, wait_for

logger = logging.getLogger(__name__)

LS_VERSION = "1.23.2"
REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache"
TEMPLATE_DIR = CACHE / "ls-data-template"
CREDENTIALS_FILE = "rlhf-test-credentials.json"
ADMIN_EMAIL = "admin@example.com"
START_TIMEOUT_S = 120.0
_BOUND_RE = re.compile(r"Starting development server at http://[^:/]+:(\d+)/")

# Without the two "false" settings Label Studio refuses ML backends and webhooks on 127.0.0.1.
_SERVER_ENV = {
    "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
    "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
    "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
    "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
    "COLLECT_ANALYTICS": "false",
    "SENTRY_DSN": "",
    "FRONTEND_SENTRY_DSN": "",
    "PYTHONUNBUFFERED": "1",
}


class LabelStudioUnavailable(RuntimeError):
    """Label Studio cannot be installed or started here."""


@dataclass
class LabelStudioServer:
    """A running Label Studio: its url, the admin's legacy token, and how to stop it."""

    url: str
    token: str
    email: str
    password: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen
    timings: dict[str, float] = field(default_factory=dict)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s); safe to call twice."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        logger.info("Label Studio at %s stopped", self.url)

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the server's log, for error messages."""
        return _tail(self.log_path, chars)

    def __enter__(self) -> "LabelStudioServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def venv_dir() -> Path:
    """The Label Studio venv: $LS_VENV (relative to the repo root), else <repo>/.cache/ls-venv."""
    return REPO / os.environ.get("LS_VENV", "") if os.environ.get("LS_VENV") else CACHE / "ls-venv"


def ensure_venv(venv: Path | None = None) -> Path:
    """Return the label-studio executable, creating the venv (pinned version) if it is missing."""
    venv = venv or venv_dir()
    exe = venv / "bin" / "label-studio"
    if exe.exists():
        return exe
    if os.environ.get("LS_INSTALL", "1") == "0":
        raise LabelStudioUnavailable(f"no Label Studio venv at {venv} and LS_INSTALL=0")
    logger.info("installing label-studio==%s into %s (about 90 s, 1 GB)", LS_VERSION, venv)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", f"label-studio=={LS_VERSION}"],
            check=True,
        )
    except (OSError, subprocess.CalledProcessError) as e:
        raise LabelStudioUnavailable(f"could not install label-studio=={LS_VERSION} into {venv}: {e}") from e
    return exe


def installed_version(exe: Path) -> str:
    """The Label Studio version in the venv of exe, read from its dist-info (no import)."""
    found = sorted(exe.parent.parent.glob("lib/python*/site-packages/label_studio-*.dist-info"))
    return found[-1].name[len("label_studio-") : -len(".dist-info")] if found else "unknown"


def _tail(path: Path, chars: int) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def _base_env(home: Path, data_dir: Path) -> dict[str, str]:
    """A clean environment: Label Studio reads bare HOST, PORT, USERNAME... too, so inherit little."""
    home.mkdir(parents=True, exist_ok=True)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
    }
    env.update(_SERVER_ENV)
    return env


def _read_credentials(template: Path) -> dict | None:
    try:
        return json.loads((template / CREDENTIALS_FILE).read_text())
    except (OSError, ValueError):
        return None


def _init_template(exe: Path, target: Path) -> None:
    """Run `label-studio init` into a fresh dir and move it to target when complete."""
    version = installed_version(exe)
    creds = {
        "version": version,
        "email": ADMIN_EMAIL,
        "password": secrets.token_hex(8),
        "token": secrets.token_hex(20),  # 40 hex digits, the legacy token format
    }
    build = Path(tempfile.mkdtemp(prefix=target.name + ".build-", dir=target.parent))
    data = build / "data"
    env = _base_env(build / "home", data)
    env.update(
        LABEL_STUDIO_USERNAME=creds["email"],
        LABEL_STUDIO_PASSWORD=creds["password"],
        LABEL_STUDIO_USER_TOKEN=creds["token"],
    )
    cmd = [
        str(exe),
        "init",
        "--data-dir",
        str(data),
        "--username",
        creds["email"],
        "--password",
        creds["password"],
        "--user-token",
        creds["token"],
        "--enable-legacy-api-token",
        "-q",
    ]
    log_path = build / "init.log"
    logger.info("initialising Label Studio %s data template in %s", version, target)
    with open(log_path, "wb") as log:
        done = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise LabelStudioUnavailable(f"label-studio init failed ({done.returncode}):\n{_tail(log_path, 3000)}")
    (data / CREDENTIALS_FILE).write_text(json.dumps(creds, indent=1))
    if target.exists():
        shutil.rmtree(target)
    data.rename(target)
    shutil.rmtree(build, ignore_errors=True)


def ensure_template(exe: Path, template: Path = TEMPLATE_DIR) -> dict:
    """Return the template's credentials, initialising it first if missing or of another version."""
    template.parent.mkdir(parents=True, exist_ok=True)
    with open(template.parent / (template.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel sessions wait for one init
        creds = _read_credentials(template)
        if creds is None or creds.get("version") != installed_version(exe):
            _init_template(exe, template)
            creds = _read_credentials(template)
    assert creds is not None
    return creds


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str | None = None, timeout: float = 2.0) -> int:
    """GET url and return the status code (0 when nothing answers)."""
    req = urllib.request.Request(url, headers={"Authorization": f"Token {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def _wait_ready(proc: subprocess.Popen, log_path: Path, port: int, timeout: float) -> int:
    """Wait until the log names the bound port and /health answers there; return that port."""
    bound: list[int] = []

    def ready() -> int | None:
        if proc.poll() is not None:
            raise LabelStudioUnavailable(f"Label Studio exited with {proc.returncode}:\n{_tail(log_path, 3000)}")
        if not bound and (m := _BOUND_RE.search(_tail(log_path, 200_000))):
            bound.append(int(m.group(1)))
        return bound[0] if bound and _get(f"http://127.0.0.1:{bound[0]}/health") == 200 else None

    try:
        return wait_for(ready, timeout, 0.2, f"Label Studio on port {port}")
    except TimedOut as e:
        raise LabelStudioUnavailable(f"{e}:\n{_tail(log_path, 3000)}") from None


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the test process dies, so a crash leaves no server behind."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _launch(exe: Path, data_dir: Path, home: Path, log_path: Path, port: int) -> subprocess.Popen:
    url = f"http://127.0.0.1:{port}"
    cmd = [
        str(exe),
        "start",
        "--no-browser",
        "--internal-host",
        "127.0.0.1",
        "--port",
        str(port),
        "--host",
        url,
        "--data-dir",
        str(data_dir),
        "--enable-legacy-api-token",
    ]
    with open(log_path, "wb") as log:  # one log per attempt: the bound-port line must be this one
        return subprocess.Popen(
            cmd,
            env=_base_env(home, data_dir),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )


def start_label_studio(tmp_dir: Path, *, timeout: float = START_TIMEOUT_S) -> LabelStudioServer:
    """Copy the data template into tmp_dir and start Label Studio on a free loopback port."""
    t0 = time.monotonic()
    exe = ensure_venv()
    creds = ensure_template(exe)
    t1 = time.monotonic()
    tmp_dir = Path(tmp_dir)
    data_dir = tmp_dir / "ls-data"
    shutil.copytree(TEMPLATE_DIR, data_dir, symlinks=True)
    log_path = tmp_dir / "label-studio.log"
    for _attempt in range(3):
        port = free_port()
        proc = _launch(exe, data_dir, tmp_dir / "home", log_path, port)
        server = LabelStudioServer(
            f"http://127.0.0.1:{port}", creds["token"], creds["email"], creds["password"], data_dir, log_path, proc
        )
        atexit.register(server.stop)  # a no-op once stopped
        try:
            bound = _wait_ready(proc, log_path, port, timeout)
        except BaseException:
            server.stop()
            raise
        if bound == port:
            break
        # Label Studio silently moved to another port: its --host would be wrong, so retry.
        logger.warning("Label Studio bound %s instead of %s; restarting", bound, port)
        server.stop()
    else:
        raise LabelStudioUnavailable("Label Studio kept binding another port than asked")
    if _get(f"{server.url}/api/current-user/whoami", server.token) != 200:
        server.stop()
        raise LabelStudioUnavailable(f"the template's legacy token is refused; delete {TEMPLATE_DIR}")
    server.timings = {"prepare_s": t1 - t0, "start_s": time.monotonic() - t1}
    logger.info(
        "Label Studio %s ready at %s (prepare %.1f s, start %.1f s)",
        creds["version"],
        server.url,
        server.timings["prepare_s"],
        server.timings["start_s"],
    )
    return server


def stop(server: LabelStudioServer) -> None:
    """Stop a server started by start_label_studio."""
    server.stop()


@contextlib.contextmanager
def running_label_studio(tmp_dir: Path) -> Iterator[LabelStudioServer]:
    """Context manager around start_label_studio / stop."""
    server = start_label_studio(tmp_dir)
    try:
        yield server
    finally:
        server.stop()


# --- what a running server says (through the SDK client) -------------------------------------------------------


def ml_backend_id(client: Any, project_id: int, url: str) -> int | None:
    """The id of the project's ML backend registered at url (through the SDK), or None."""
    return next((ml.id for ml in client.ml.list(project=project_id) if ml.url.rstrip("/") == url.rstrip("/")), None)


def listed_versions(client: Any, ml_backend: int) -> list[str]:
    """What Label Studio's Model page lists: the backend's GET /versions, relayed by Label Studio."""
    return list(client.ml.list_model_versions(ml_backend).versions or [])


def main(argv: list[str] | None = None) -> int:
    """CLI: --install prepares the venv and data template; --serve runs a server until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--install", action="store_true", help="create the venv and the data template")
    group.add_argument("--serve", action="store_true", help="start a server, print url and token, wait")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.install:
        exe = ensure_venv()
        ensure_template(exe)
        print(f"Label Studio {installed_version(exe)} ready: {exe}, template {TEMPLATE_DIR}")
        return 0
    with tempfile.TemporaryDirectory(prefix="ls-serve-") as tmp, running_label_studio(Path(tmp)) as server:
        print(f"url={server.url} token={server.token} login={server.email} password={server.password}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.process.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
