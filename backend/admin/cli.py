"""`python -m backend <command>`: serve, connect, import, generate, train, resync, status, cancel, rollback, promote,
report, export."""

from __future__ import annotations

import argparse
import sys

import httpx
from label_studio_sdk.core.api_error import ApiError
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from backend import labelstudio
from backend.admin.commands import (
    cmd_cancel,
    cmd_connect,
    cmd_export,
    cmd_generate,
    cmd_import,
    cmd_report,
    cmd_resync,
    cmd_serve,
    cmd_serve_version,
    cmd_status,
    cmd_train,
    safe_url,
)
from backend.core.algorithms import POLICY_ALGORITHMS
from backend.core.settings import get_settings


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m backend", description="Label Studio ML backend for RLHF")
    sub = p.add_subparsers(dest="command")
    s = sub.add_parser("serve", help="serve the ML backend with gunicorn (the default)")
    s.add_argument("--host", help="address to bind (default HOST, else 0.0.0.0 with basic auth, 127.0.0.1 without)")
    s.add_argument("--workers", type=int, help="gunicorn workers (default: backend/http/gunicorn_conf.py, 2)")
    s.add_argument("--threads", type=int, help="threads per worker (default 1: no SQLite lock waits between threads)")
    s.set_defaults(func=cmd_serve)
    c = sub.add_parser("connect", help="create/find a Label Studio project and connect this backend to it")
    c.add_argument("--url", help="Label Studio URL (default LABEL_STUDIO_URL)")
    c.add_argument("--api-key", help="Label Studio token (default LABEL_STUDIO_API_KEY)")
    c.add_argument("--project", type=int)
    c.add_argument("--title", default="RLHF preferences")
    c.add_argument("--label-config", help="label config XML file (default label_config.xml)")
    c.add_argument("--backend-url", default="http://localhost:9090", help="URL Label Studio reaches this backend at")
    c.set_defaults(func=cmd_connect)
    for name, func, text in (
        ("import", cmd_import, "import prompts (JSON, JSONL, CSV, lines) with empty candidates"),
        ("generate", cmd_generate, "queue candidate generation for a project's tasks"),
        ("resync", cmd_resync, "rebuild a project's store from Label Studio's export"),
    ):
        q = sub.add_parser(name, help=text)
        q.add_argument("--project", type=int, required=True)
        q.add_argument("--url")
        q.add_argument("--api-key")
        if name == "import":
            q.add_argument("file", help="prompts file (JSON, JSONL, CSV, lines), or - for lines on stdin")
        q.set_defaults(func=func)
    t = sub.add_parser("train", help="retrain now: reward + policy (ppo/dpo/grpo/rloo), or sft --data FILE.jsonl")
    t.add_argument("recipe", nargs="?", choices=[*POLICY_ALGORITHMS, "sft"])
    t.add_argument("--project", type=int)
    t.add_argument("--lineage", help="for sft: the lineage whose policy to fine-tune (default: --project's)")
    t.add_argument("--data", help="JSONL of {prompt, response} for sft")
    t.add_argument("--url", help="Label Studio URL, for sft --project")
    t.add_argument("--api-key", help="Label Studio token, for sft --project")
    t.set_defaults(func=cmd_train)
    st = sub.add_parser("status", help="versions, counts and jobs (of one project and its lineage with --project)")
    st.add_argument("--json", action="store_true")
    st.add_argument("--project", type=int)
    st.set_defaults(func=cmd_status)
    k = sub.add_parser("cancel", help="stop a running job or cancel a queued one")
    k.add_argument("job")
    k.set_defaults(func=cmd_cancel)
    r = sub.add_parser("rollback", help="serve an older version of a project's lineage: rollback --project 3 policy v2")
    pr = sub.add_parser("promote", help="serve a version: promote --project 3 policy v4 [--force for a rejected one]")
    pr.add_argument("--force", action="store_true", help="serve it even though its promotion gate rejected it")
    for command in (r, pr):
        command.add_argument("kind", choices=["policy", "reward"])
        command.add_argument("version")
    rep = sub.add_parser("report", help="PNG plot + table of metrics across a lineage's versions")
    rep.add_argument("--out", default="report.png")
    for command, func in ((r, cmd_serve_version), (pr, cmd_serve_version), (rep, cmd_report)):
        command.add_argument("--project", type=int)
        command.add_argument("--lineage", help="the lineage itself, instead of --project's")
        command.set_defaults(func=func)
    rep.set_defaults(func=cmd_report)
    ex = sub.add_parser("export", help="a project's pairs (JSONL + HF dataset) and a model with its card")
    ex.add_argument("--project", type=int, required=True)
    ex.add_argument("--out", help="directory to write into (default export/project-N)")
    which = ex.add_mutually_exclusive_group()
    which.add_argument("--model", help="version to export, e.g. policy-v3 or reward-v2 (default: the served policy)")
    which.add_argument("--no-model", action="store_true", help="export the pairs only")
    ex.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> None:
    from backend.core.logs import configure_logging

    configure_logging()
    args = parser().parse_args(argv)
    settings = get_settings()
    if args.command is None:
        args = parser().parse_args(["serve", *(argv or [])])
    print(
        f"using Redis {safe_url(settings.redis_url)}, store {safe_url(settings.sqlalchemy_url)}, registry "
        f"{settings.model_dir}",
        file=sys.stderr,
    )
    try:
        args.func(settings, args)
    except RedisError as exc:
        _fail(f"Redis at {settings.redis_url} is unreachable ({exc}); start it, or set REDIS_URL")
    except (httpx.HTTPError, ApiError) as exc:
        _fail(
            f"Label Studio did not answer as expected ({type(exc).__name__}: {str(exc)[:300]}); check --url "
            "and --api-key (or LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY)"
        )
    except SQLAlchemyError as exc:
        _fail(f"the store at {settings.sqlalchemy_url.split('@')[-1]} failed: {str(exc).splitlines()[0]}")
    except (ValueError, LookupError, labelstudio.LabelStudioError, OSError) as exc:
        _fail(str(exc))


def _fail(message: str) -> None:
    """One line on stderr and exit status 2, not a traceback: the admin fixes the setting and runs again."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)
