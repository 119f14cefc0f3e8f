"""`mlship`: export, verify, build and serve from a shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import ShipError


def _export(args: argparse.Namespace) -> int:
    from .headless import export_notebook, read_notebook

    path = Path(args.notebook)
    try:
        nb = read_notebook(path)
        result = export_notebook(nb, path, Path(args.out) if args.out else None,
                                 timeout=args.timeout, kernel_name=args.kernel)
    except ShipError as exc:
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

    project = Path(args.project).resolve()
    if not (project / "app" / "main.py").is_file():
        print(f"mlship serve: {project} is not a generated service project (no app/main.py)", file=sys.stderr)
        return 2
    uvicorn.run("app.main:app", host=args.host, port=args.port, app_dir=str(project))
    return 0


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

        print(f"report: {write_html(report, Path(args.html))}")
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
    serve.add_argument("project")
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
    try:
        from .build import add_build_parser, build_main
    except ImportError:
        pass
    else:
        add_build_parser(sub)
        if sub.choices["build"].get_default("func") is None:
            sub.choices["build"].set_defaults(func=build_main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
