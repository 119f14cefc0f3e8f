"""`mlship`: export, verify, build and serve from a shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .build.cli import add_build_parser, build_main
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
    add_build_parser(sub)
    sub.choices["build"].set_defaults(func=build_main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
