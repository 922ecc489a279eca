"""What each `python -m backend` command does (cli.py parses the command line and reports failures): serve,
connect, import, generate, train, resync, status, cancel, rollback/promote, report, export."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from backend import labelstudio
from backend.admin.prompts_file import parse_prompts, read_prompts
from backend.admin.status import format_status, status_report
from backend.background.watcher import ModelWatcher
from backend.core.settings import Settings
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
            f"({safe_url(settings.sqlalchemy_url)}); import, generate and resync will need --url and --api-key",
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


def safe_url(url: str) -> str:
    """A URL without its password, for printing."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{credentials.split(':')[0] + ':***' if ':' in credentials else credentials}{at}{host}"
