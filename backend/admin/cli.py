"""`python -m backend <command>`: serve, connect, import, generate, train, resync, status, cancel, rollback, promote,
report, export."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import httpx
from label_studio_sdk.core.api_error import ApiError
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from backend import labelstudio
from backend.admin.prompts_file import parse_prompts, read_prompts
from backend.admin.status import format_status, status_report
from backend.background.watcher import ModelWatcher
from backend.core.algorithms import POLICY_ALGORITHMS
from backend.core.settings import Settings, get_settings
from backend.http.adapter import RLHFBackend
from backend.labels.inputs import InvalidRequest
from backend.labels.preferences import demonstrations, parse_layout
from backend.services import Services, build
from backend.store import Store

ROOT = Path(__file__).resolve().parents[2]


def _services(settings: Settings) -> Services:
    return build(settings)


def _model(settings: Settings) -> RLHFBackend:
    """The same domain object the HTTP layer uses, without the HTTP layer."""
    services = _services(settings)
    watcher = ModelWatcher(
        services.registries, services.queue.redis, services.queue.models_channel, settings.model_poll_seconds
    )
    return RLHFBackend(settings, services.store, services.queue, watcher)


def _client(settings: Settings, args: argparse.Namespace, store: Store) -> Any:
    """Label Studio for --project N, by the workers' rule (labelstudio.access): the environment when set, else
    the address and token Label Studio sent to /setup when `connect` registered the backend; --url and
    --api-key, given on the command line, come first."""
    url, key = getattr(args, "url", None), getattr(args, "api_key", None)
    if url or key:
        url, key = url or settings.label_studio_url, key or settings.label_studio_api_key
        if not (url and key):
            raise SystemExit("--url and --api-key go together (or set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY)")
        return labelstudio.client(url, key)
    project = store.project(args.project)
    found = labelstudio.access(
        project and project.ls_url,
        project and project.ls_token,
        settings.label_studio_url,
        settings.label_studio_api_key,
        settings.allowed_label_studio_hosts,
    )
    if found is None:
        raise SystemExit(
            f"no Label Studio address for project {args.project}: run `connect` for it first (Label "
            "Studio then sends the backend its address and token), or pass --url and --api-key"
        )
    return labelstudio.client(*found)


def _project_config(model: RLHFBackend, client: Any, project_id: int) -> str:
    """The project's label config, fetched from Label Studio and stored when /setup has not run yet."""
    project = model.store.project(project_id)
    if project is None or not project.label_config:
        model.store.save_project(project_id, label_config=labelstudio.label_config_of(client, project_id))
        project = model.store.project(project_id)
    return project.label_config


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:backend.http.gunicorn_conf",
        "backend.http.wsgi:app",
        "--bind",
        f"{args.host or settings.bind_host}:{settings.port}",
        *(["--workers", str(args.workers)] if args.workers else []),
        *(["--threads", str(args.threads)] if args.threads else []),
    ]
    os.execv(sys.executable, argv)


def cmd_connect(settings: Settings, args: argparse.Namespace) -> None:
    config = Path(args.label_config).read_text() if args.label_config else (ROOT / "label_config.xml").read_text()
    parse_layout(config)
    result = labelstudio.connect(
        args.url or settings.label_studio_url,
        args.api_key or settings.label_studio_api_key,
        args.backend_url,
        project_id=args.project,
        title=args.title,
        label_config=config,
        auth_user=settings.basic_auth_user,
        auth_pass=settings.basic_auth_pass,
    )
    for line in result.actions:
        print(line)
    print(f"project {result.project_id} is connected to {labelstudio.project_url(args.backend_url, result.project_id)}")
    print(f"Label Studio serves model version {result.model_version!r} (Settings -> Predictions lists the versions)")
    project = _services(settings).store.project(result.project_id)
    if project is not None and project.ls_url and project.ls_token:
        print(
            f"the backend reaches this Label Studio at {project.ls_url}: import, generate and resync --project "
            f"{result.project_id} need no --url"
        )
    else:
        print(
            f"warning: the backend at {args.backend_url} did not record Label Studio's /setup in this store "
            f"({_safe(settings.sqlalchemy_url)}); import, generate and resync will need --url and --api-key",
            file=sys.stderr,
        )


def _generate(model: RLHFBackend, client: Any, project_id: int, reason: str) -> None:
    _project_config(model, client, project_id)
    tasks = labelstudio.list_tasks(client, project_id)
    model.store.save_tasks(project_id, [(t["id"], t["data"]) for t in tasks])
    job = model.queue.enqueue_generation(project_id, None, reason=reason)
    print(f"{len(tasks)} tasks; generation {'queued as ' + job.id if job else 'already queued'}")


def cmd_import(settings: Settings, args: argparse.Namespace) -> None:
    model = _model(settings)
    client = _client(settings, args, model.store)
    layout = parse_layout(_project_config(model, client, args.project))
    prompts = read_prompts(Path(args.file)) if args.file != "-" else parse_prompts(sys.stdin.read(), "stdin")
    count = labelstudio.import_prompts(client, args.project, prompts, layout.empty_candidates(), layout.prompt_key)
    print(f"imported {count} prompts into project {args.project}")
    _generate(model, client, args.project, "import")


def cmd_generate(settings: Settings, args: argparse.Namespace) -> None:
    model = _model(settings)
    _generate(model, _client(settings, args, model.store), args.project, "cli")


def cmd_train(settings: Settings, args: argparse.Namespace) -> None:
    model = _model(settings)
    if args.recipe == "sft":
        rows = _sft_rows(settings, args, model.store)
        if args.lineage is None and args.project is None:
            raise SystemExit("train sft needs the lineage to improve: --lineage NAME or --project N")
        lineage = args.lineage or model.lineage(args.project)
        job = model.queue.enqueue_sft(rows, lineage, model.store.lineage_projects(lineage))
        print(f"queued SFT job {job.id} on {len(rows)} rows for lineage {lineage}")
        return
    if args.project is None:
        raise SystemExit("train needs --project N")
    if args.recipe:
        model.store.save_project(args.project, algorithm=args.recipe)
    print(
        json.dumps(model.fit("START_TRAINING", {"action": "START_TRAINING", "project": {"id": args.project}}), indent=2)
    )


def _sft_rows(settings: Settings, args: argparse.Namespace, store: Store) -> list[dict[str, str]]:
    """{prompt, response} rows from --data FILE.jsonl, or from the written answers of --project N."""
    if args.data:
        rows = [json.loads(line) for line in Path(args.data).read_text().splitlines() if line.strip()]
    elif args.project is not None:
        client = _client(settings, args, store)
        rows = demonstrations(
            labelstudio.label_config_of(client, args.project), labelstudio.export_annotations(client, args.project)
        )
    else:
        raise SystemExit("train sft needs --data FILE.jsonl of {prompt, response}, or --project N")
    bad = [
        i
        for i, r in enumerate(rows)
        if not (isinstance(r, dict) and isinstance(r.get("prompt"), str) and isinstance(r.get("response"), str))
    ]
    if bad or not rows:
        raise SystemExit(f"no usable rows: rows {bad[:5]} lack string 'prompt' and 'response'")
    return rows


def cmd_resync(settings: Settings, args: argparse.Namespace) -> None:
    model = _model(settings)
    client = _client(settings, args, model.store)
    config = _project_config(model, client, args.project)
    exported = labelstudio.export_annotations(client, args.project)
    model.store.clear_project(args.project)
    model.store.save_tasks(args.project, [(t["id"], t["data"]) for t in exported])
    counts = _record_export(model, args.project, config, exported)
    print(
        f"project {args.project}: {counts['annotations']} annotations, {counts['pairs']} pairs, "
        f"{counts['rejected']} rejected"
    )


def _record_export(model: RLHFBackend, project_id: int, config: str, exported: list[dict[str, Any]]) -> dict[str, int]:
    """Store every annotation of a Label Studio JSON export; mismatching ones are counted, not stored."""
    counts = {"annotations": 0, "pairs": 0, "rejected": 0}
    for task in exported:
        for annotation in task.get("annotations") or []:
            try:
                counts["pairs"] += model.annotations.save(project_id, config, annotation, task)[0]
                counts["annotations"] += 1
            except InvalidRequest as exc:
                print(f"resync: {exc}", file=sys.stderr)
                counts["rejected"] += 1
    return counts


def cmd_status(settings: Settings, args: argparse.Namespace) -> None:
    services = _services(settings)
    report = status_report(services.store, services.queue, services.registries, settings, args.project)
    print(json.dumps(report, indent=2, default=str) if args.json else format_status(report))


def cmd_cancel(settings: Settings, args: argparse.Namespace) -> None:
    print(f"{args.job}: {_services(settings).queue.cancel(args.job)}")


def _lineage(services: Services, args: argparse.Namespace) -> str:
    """The lineage a command acts on: --lineage NAME, or the lineage of --project N."""
    if args.lineage:
        return args.lineage
    if args.project is None:
        raise SystemExit(f"{args.command} needs --project N (or --lineage NAME)")
    return services.store.lineage_of(args.project)


def cmd_serve_version(settings: Settings, args: argparse.Namespace) -> None:
    """rollback and promote: serve a version already in the registry; `promote --force` also a rejected one."""
    services = _services(settings)
    lineage = _lineage(services, args)
    registry = services.registries.lineage(lineage)
    version = int(args.version.lstrip("v"))
    if getattr(args, "force", False):
        registry.force(args.kind, version)
    else:
        registry.set_current(args.kind, version)
    services.announce(lineage, args.kind, version)
    print(f"lineage {lineage} now serves {args.kind} v{version}: {registry.model_version()}")


def cmd_report(settings: Settings, args: argparse.Namespace) -> None:
    from backend.admin.report import write_report

    services = _services(settings)
    lineage = _lineage(services, args)
    status = status_report(services.store, services.queue, services.registries, settings)["lineages"].get(lineage)
    table = write_report(services.registries.lineage(lineage), lineage, Path(args.out), status)
    print(table)
    print(f"plot written to {args.out}")


def cmd_export(settings: Settings, args: argparse.Namespace) -> None:
    from backend.admin.export import export_project

    services = _services(settings)
    out = Path(args.out or f"export/project-{args.project}")
    for line in export_project(
        services.store, services.registries, args.project, out, model=args.model, with_model=not args.no_model
    ).lines():
        print(line)


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
        f"using Redis {_safe(settings.redis_url)}, store {_safe(settings.sqlalchemy_url)}, registry "
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


def _safe(url: str) -> str:
    """A URL without its password, for printing."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{credentials.split(':')[0] + ':***' if ':' in credentials else credentials}{at}{host}"


def _fail(message: str) -> None:
    """One line on stderr and exit status 2, not a traceback: the admin fixes the setting and runs again."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)
