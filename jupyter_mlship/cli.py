"""`mlship`: export, verify, build and serve from a shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .build.cli import add_build_parser, build_main
from .errors import ShipError
from .imports import without_modules


def _export(args: argparse.Namespace) -> int:
    # nbformat imports jsonschema, whose format checkers import rfc3987_syntax where it is installed, and
    # that builds its IRI grammar at import: 1.1 s of every export. The notebook schema has no IRI formats.
    with without_modules("rfc3987_syntax"):
        from .headless import export_notebook, read_notebook

    path = Path(args.notebook)
    try:
        nb = read_notebook(path)
        result = export_notebook(nb, path, Path(args.out) if args.out else None,
                                 timeout=args.timeout, kernel_name=args.kernel)
    except ShipError as exc:
        if exc.output:
            print(exc.output.rstrip(), file=sys.stderr)
        print(f"mlship export: {exc}", file=sys.stderr)
        return 1
    for export in result.exports:
        print(f"{'ok' if export.ok else 'FAILED'}  {export.name}: {export.message}")
    return 0 if result.ok else 1


def _verify(args: argparse.Namespace) -> int:
    from .verify import main_verify

    return main_verify(args.project)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    try:
        project = _project_or_ref(args.project, args.registry)
    except ShipError as exc:
        print(f"mlship serve: {exc}", file=sys.stderr)
        return 1
    if not (project / "app" / "main.py").is_file():
        print(f"mlship serve: {project} is not a generated service project (no app/main.py)", file=sys.stderr)
        return 2
    uvicorn.run("app.main:app", host=args.host, port=args.port, app_dir=str(project))
    return 0


# --- registry -------------------------------------------------------------------------------------


def _project_or_ref(value: str | Path, registry: str | None) -> Path:
    """A project folder as given, or a registry reference pulled (sha256-checked) into the cache once."""
    from .registry.refs import looks_like_ref

    text = str(value)
    if Path(text).expanduser().is_dir() or not looks_like_ref(text):
        return Path(text).expanduser().resolve()
    from .registry import open_registry
    from .registry.store import pull_cached

    return pull_cached(open_registry(registry), text)


def _registry_command(func):  # one error channel: RegistryError → one line on stderr, exit 1
    def run(args: argparse.Namespace) -> int:
        try:
            return func(args)
        except ShipError as exc:
            print(f"mlship {args.command}: {exc}", file=sys.stderr)
            return 1
    return run


def _short_time(iso: str) -> str:
    return iso.replace("T", " ").replace("+00:00", "Z")


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def _alias_lines(name: str, aliases: dict) -> list[str]:
    lines = []
    for alias, state in sorted(aliases.items()):
        lines.append(f"{name}@{alias} → {state.version}")
        for event in reversed(state.history):
            previous = f" (was {event.previous})" if event.previous else ""
            lines.append(f"    {_short_time(event.time)}  {event.action:<8} → {event.version}{previous}  by {event.by}")
    return lines


@_registry_command
def _push(args: argparse.Namespace) -> int:
    from .registry import open_registry

    registry = open_registry(args.registry)
    record = registry.push(Path(args.project), version=args.version)
    if record.created:
        print(f"pushed {record.name} version {record.version} to {registry.uri}"
              + (f" (parent {record.parent})" if record.parent else "") + f"; {record.verify_result}")
    else:
        print(f"{record.name} version {record.version} in {registry.uri} already holds this project (its export time and verification time aside): nothing pushed")
    return 0


@_registry_command
def _models(args: argparse.Namespace) -> int:
    import json

    from .registry import open_registry
    from .review import _size

    registry = open_registry(args.registry)
    if not args.name:
        names = registry.models()
        if args.json:
            print(json.dumps({"registry": registry.uri, "models": names}))
        elif not names:
            print(f"no models in {registry.uri}")
        else:
            rows = []
            for name in names:
                versions, aliases = registry.versions(name), registry.aliases(name)
                rows.append([name, versions[-1].version if versions else "-", str(len(versions)),
                             ", ".join(f"{a}→{s.version}" for a, s in sorted(aliases.items())) or "-"])
            print(_table(["name", "latest", "versions", "aliases"], rows))
        return 0
    versions, aliases = registry.versions(args.name), registry.aliases(args.name)
    if not versions:
        print(f"mlship models: no model {args.name!r} in the registry {registry.uri}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"registry": registry.uri, "name": args.name,
                          "versions": [v.to_json(with_files=False) for v in versions],
                          "aliases": {a: s.to_json() for a, s in aliases.items()}}, indent=2))
        return 0
    rows = []
    for v in versions:
        source = f"{Path(v.notebook).name if v.notebook else '-'}" + (f" In[{v.cell}]" if v.cell else "")
        shas = " ".join(f"{n}:{sha[:8]}" for n, sha in sorted(v.sha256s.items())) or "-"
        rows.append([v.version, _short_time(v.pushed_at), source, (v.git_commit or "-")[:12], shas,
                     v.verify_result, _size(v.size_bytes), v.pushed_by])
    print(f"{args.name} in {registry.uri}")
    print(_table(["version", "pushed", "notebook", "git", "artifacts sha256", "verify", "size", "by"], rows))
    if aliases:
        print("\naliases:")
        print("\n".join(_alias_lines(args.name, aliases)))
    return 0


def _print_alias(registry, name: str, alias: str, event) -> None:
    if event.action == "unchanged":
        print(f"{name}@{alias} already points at {event.version}: nothing changed")
        return
    print(f"{name}@{alias} → {event.version}" + (f" (was {event.previous})" if event.previous else ""))
    print("\n".join(_alias_lines(name, {alias: registry.aliases(name)[alias]})[1:]))


@_registry_command
def _promote(args: argparse.Namespace) -> int:
    from .registry import open_registry

    registry = open_registry(args.registry)
    event = registry.promote(args.name, args.version, args.alias)
    _print_alias(registry, args.name, args.alias, event)
    return 0


@_registry_command
def _rollback(args: argparse.Namespace) -> int:
    from .registry import open_registry

    registry = open_registry(args.registry)
    event = registry.rollback(args.name, args.alias)
    _print_alias(registry, args.name, args.alias, event)
    return 0


@_registry_command
def _pull(args: argparse.Namespace) -> int:
    from .registry import open_registry

    registry = open_registry(args.registry)
    record = registry.resolve(args.ref)
    out = registry.pull(f"{record.name}@{record.version}", Path(args.out))
    print(f"pulled {record.name} version {record.version} into {out} ({len(record.files)} files, sha256 checked)")
    return 0


@_registry_command
def _diff(args: argparse.Namespace) -> int:
    from .registry import open_registry
    from .registry.diff import diff_refs

    registry = open_registry(args.registry)
    print(diff_refs(registry, args.a, args.b).to_text(), end="")
    return 0


@_registry_command
def _gc(args: argparse.Namespace) -> int:
    from .registry import open_registry

    registry = open_registry(args.registry)
    removed = registry.gc(args.name, older_than=args.older_than)
    for path in removed:
        print(f"removed uncommitted {path}")
    print(f"{len(removed)} leftover(s) removed from {registry.uri}")
    return 0


def _add_registry_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--registry", metavar="URI", default=None,
                        help="Registry: a folder or fsspec URL such as s3://bucket/prefix (default: $MLSHIP_REGISTRY, "
                             "else ~/.local/share/jupyter-mlship/registry).")


def _add_registry_parsers(sub) -> None:
    push = sub.add_parser("push", help="Publish an exported project to the registry as an immutable version.")
    push.add_argument("project")
    push.add_argument("--version", metavar="V", help="Version number (default: the next integer).")
    push.set_defaults(func=_push)
    models = sub.add_parser("models", help="List models, or one model's versions and aliases.")
    models.add_argument("name", nargs="?")
    models.add_argument("--json", action="store_true", help="Machine-readable output.")
    models.set_defaults(func=_models)
    promote = sub.add_parser("promote", help="Point an alias (e.g. production) at a version.")
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument("--alias", required=True, metavar="A")
    promote.set_defaults(func=_promote)
    rollback = sub.add_parser("rollback", help="Move an alias back to the version it pointed at before.")
    rollback.add_argument("name")
    rollback.add_argument("--alias", required=True, metavar="A")
    rollback.set_defaults(func=_rollback)
    pull = sub.add_parser("pull", help="Write a version's project to DIR, every file checked against its sha256.")
    pull.add_argument("ref", metavar="REF", help="NAME@VERSION, NAME@ALIAS or NAME (the latest).")
    pull.add_argument("--out", required=True, metavar="DIR", help="New folder for the project.")
    pull.set_defaults(func=_pull)
    diff = sub.add_parser("diff", help="What changed between two versions: code, pins, schema, artifacts, golden outputs.")
    diff.add_argument("a", metavar="REF")
    diff.add_argument("b", metavar="REF")
    diff.set_defaults(func=_diff)
    registry = sub.add_parser("registry", help="Registry maintenance.")
    registry_sub = registry.add_subparsers(dest="registry_command", required=True)
    gc = registry_sub.add_parser("gc", help="Remove uploads that were never committed (interrupted pushes).")
    gc.add_argument("name", nargs="?")
    gc.add_argument("--older-than", type=float, default=3600.0, metavar="SECONDS",
                    help="Keep uncommitted uploads younger than this: they may be pushes still running (default 3600).")
    gc.set_defaults(func=_gc)
    for parser in (push, models, promote, rollback, pull, diff, gc):
        _add_registry_option(parser)


# --- router ---------------------------------------------------------------------------------------


def _router_versions(args: argparse.Namespace, registry) -> list[str]:
    """--versions as given; else the alias's current and previous version; else the two latest versions."""
    if args.versions:
        versions = [v.strip() for v in args.versions.split(",") if v.strip()]
        if len(set(versions)) != len(versions):
            raise ShipError(f"--versions: {args.versions!r} names a version twice")
        return versions
    if registry is None:
        raise ShipError("name the versions (--versions 1,2) or a registry to read them from (--registry URI)")
    if args.alias:
        state = registry.aliases(args.name).get(args.alias)
        if state is None or state.version is None:
            raise ShipError(f"{args.name} has no alias {args.alias!r} in {registry.uri}: promote a version first")
        stack = state.live_stack()
        versions = [v for v in dict.fromkeys(reversed(stack))][:2][::-1]
        latest = registry.versions(args.name)[-1].version
        return versions if latest in versions else [*versions, latest]
    records = registry.versions(args.name)
    if not records:
        raise ShipError(f"no versions of {args.name} in {registry.uri}")
    return [record.version for record in records[-2:]]


def _check_same_requests(registry: Any, records: list) -> None:
    """A router sends any request to any of its versions: they must take the same requests. Versions whose
    requests differ in kind or fields are refused; smaller differences (a new category, a field that may
    now be null) are printed for the reviewer."""
    import json

    from .registry.diff import schema_side_changes

    inputs = [json.loads(registry.version_file(r, "ship.json"))["input"] for r in records]
    first = inputs[0]
    for record, other in zip(records[1:], inputs[1:]):
        shape = [(s.get("kind"), s.get("width"), [c.get("name") for c in s.get("columns") or []]) for s in (first, other)]
        changes = schema_side_changes("request", first, other)
        if shape[0] != shape[1]:
            raise ShipError(
                f"versions {records[0].version} and {record.version} of {record.name} take different requests "
                f"({'; '.join(changes[:3])}): a router sends every request to any of its versions; route "
                "between versions with the same request fields"
            )
        for line in changes:
            print(f"mlship router: note, version {record.version} against {records[0].version}: {line}", file=sys.stderr)


def _router(args: argparse.Namespace) -> int:
    from .router import default_routes, render_router

    try:
        if Path(args.out).exists():  # before asking a registry anything
            raise ShipError(f"{Path(args.out).absolute()} already exists; choose another --out or remove it first")
        registry = None
        if args.registry or args.alias or args.serve or not args.versions:
            from .registry import open_registry

            registry = open_registry(args.registry)
        versions = _router_versions(args, registry)
        if registry is not None and (args.serve or args.alias or args.registry):
            records = [registry.resolve(f"{args.name}@{v}") for v in versions]  # unknown: refused before writing
            _check_same_requests(registry, records)
        if args.alias:
            state = registry.aliases(args.name).get(args.alias)
            current = state.version if state else None
            if current is None:
                raise ShipError(f"{args.name} has no alias {args.alias!r} in {registry.uri}: promote a version first")
            if current not in versions:
                raise ShipError(f"--versions: {args.alias} points at version {current}, which is not among "
                                f"{', '.join(versions)}; add it so the router can follow the alias")
        backends = {v: f"http://127.0.0.1:{args.port + 1 + i}" for i, v in enumerate(versions)}
        follow = {"registry": registry.uri, "name": args.name, "alias": args.alias} if args.alias else None
        routes = default_routes(args.name, backends, args.policy, follow=follow, redis=args.redis)
        project = render_router(args.name, routes, Path(args.out))
    except (ShipError, ValueError, FileExistsError) as exc:
        print(f"mlship router: {exc}", file=sys.stderr)
        return 1
    print(f"router for {args.name} ({args.policy} over versions {', '.join(versions)}) written to {project}")
    if not args.serve:
        print(f"  run it: cd {project} && uvicorn app.main:app --port {args.port}   (or mlship router ... --serve)")
        return 0
    from .router_serve import serve_router

    try:
        return serve_router(project, routes, registry, f"http://127.0.0.1:{args.port}", env=args.env)
    except ShipError as exc:
        print(f"mlship router: {exc}", file=sys.stderr)
        return 1


def _add_router_parser(sub) -> None:
    router = sub.add_parser("router", help="Render a router in front of a model's versions (split, shadow, bandit).")
    router.add_argument("name")
    router.add_argument("--out", required=True, metavar="DIR", help="New folder for the router project.")
    router.add_argument("--versions", metavar="V1,V2", help="Versions to route to (default: from the registry: "
                        "the alias's current and previous version, else the two latest).")
    router.add_argument("--policy", choices=("split", "shadow", "bandit"), default="split",
                        help="split: 90/10 canary (edit routes.yaml); shadow: the first answers, the rest shadow; "
                             "bandit: Thompson sampling over all.")
    router.add_argument("--alias", metavar="A", help="Follow this registry alias: promote/rollback move live traffic.")
    router.add_argument("--redis", metavar="URL", help="Shared router state (bandit) for more than one replica.")
    router.add_argument("--port", type=int, default=8080,
                        help="The router's port; versions get the next ports (default 8080, 8081, ...).")
    router.add_argument("--serve", action="store_true",
                        help="Also start the versions (pulled from the registry) and the router here; Ctrl-C stops all.")
    router.add_argument("--env", choices=("clean", "here"), default="clean",
                        help="With --serve: each version in its cached clean environment (default) or in this one.")
    _add_registry_option(router)
    router.set_defaults(func=_router)


def _build_ref(build_main):
    """`mlship build REF`: pull the version into the cache, then build that folder as before."""
    def run(args: argparse.Namespace) -> int:
        try:
            args.project = _project_or_ref(args.project, args.registry)
        except ShipError as exc:
            print(f"mlship build: {exc}", file=sys.stderr)
            return 1
        return build_main(args)
    return run


def _monitor(args: argparse.Namespace) -> int:
    import json

    from .monitor import MonitorError, build_report, terminal_table

    try:
        options = json.loads(args.storage_options) if args.storage_options else None
        report = build_report(args.logs, Path(args.project) if args.project else None, args.since, options)
    except (MonitorError, json.JSONDecodeError) as exc:
        print(f"mlship monitor: {exc}", file=sys.stderr)
        return 2
    print(terminal_table(report))
    if args.html:
        from .monitor.html import write_html

        try:
            print(f"report: {write_html(report, Path(args.html))}")
        except OSError as exc:
            print(f"mlship monitor: cannot write {args.html}: {exc.strerror or exc}", file=sys.stderr)
            return 2
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlship", description="Ship a notebook's model as a tested service.")
    sub = parser.add_subparsers(dest="command", required=True)
    export = sub.add_parser("export", help="Run a notebook in a fresh kernel; every ship cell exports to DIR/NAME.")
    export.add_argument("notebook")
    export.add_argument("--out", metavar="DIR", help="Folder for the projects (overrides the cells' own --out).")
    export.add_argument("--timeout", type=int, default=None, help="Seconds a cell may run (default: no limit).")
    export.add_argument("--kernel", default=None, help="Kernel name (default: the notebook's).")
    export.set_defaults(func=_export)
    verify = sub.add_parser("verify", help="Run a project's tests in a clean environment built from its pins.")
    verify.add_argument("project")
    verify.set_defaults(func=_verify)
    serve = sub.add_parser("serve", help="Serve a project with uvicorn in this environment.")
    serve.add_argument("project", help="A project folder or a registry reference (NAME@VERSION, NAME@ALIAS).")
    _add_registry_option(serve)
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--host", default="127.0.0.1")
    serve.set_defaults(func=_serve)
    monitor = sub.add_parser("monitor", help="Read a service's inference log (a folder or fsspec URL): volume, "
                             "latency, outcome metrics, drift; optionally an HTML report.")
    monitor.add_argument("logs", metavar="LOG_DIR_OR_URL")
    monitor.add_argument("--project", metavar="P", help="The service project (ship.json, model/reference.json): "
                         "the task's metric and drift against the training data.")
    monitor.add_argument("--since", metavar="WHEN", help="Only predictions since a date, a date-time, or a span (36h, 7d).")
    monitor.add_argument("--html", metavar="FILE", help="Also write a self-contained HTML report.")
    monitor.add_argument("--storage-options", metavar="JSON", help="fsspec options for the log's URL, as JSON.")
    monitor.set_defaults(func=_monitor)
    add_build_parser(sub)
    build = sub.choices["build"]
    _add_registry_option(build)
    build.set_defaults(func=_build_ref(build_main))
    _add_registry_parsers(sub)
    _add_router_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
