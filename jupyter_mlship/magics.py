"""The `%%ship` / `%ship` magics: the notebook's front door to the export pipeline."""

from __future__ import annotations

import ast
import html
import json
import linecache
import os
import sys
import time
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display, update_display

from .capture.code import CellHistory
from .errors import ShipError
from .history import current_notebook
from .spec import ShipSpec

EVENT_MIME = "application/vnd.mlship.event+json"
OUT_OVERRIDE_ENV = "MLSHIP_OUT_OVERRIDE"  # set by `mlship export --out DIR`
RESULTS_ENV = "MLSHIP_RESULTS"  # headless runs collect one JSON line per ship cell here
PROGRESS_ENV = "MLSHIP_PROGRESS"  # "stderr": also print each step to the kernel process's stderr


class TextReporter:
    """Plain lines, for terminals and logs."""

    def __init__(self, verbose_log: bool = False, stream: Any = None) -> None:
        self.verbose_log = verbose_log
        self.stream = stream  # None: the cell's stdout

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def step(self, step: str, status: str, seconds: float | None = None, detail: str = "") -> None:
        timing = f" ({seconds:.1f} s)" if seconds is not None else ""
        self._print(f"[mlship] {step}: {status}{timing}{' - ' + detail if detail and status != 'done' else ''}")

    def log(self, line: str) -> None:
        if self.verbose_log:
            self._print(f"    {line}")

    def review(self, spec: ShipSpec, markdown: str) -> None:
        self._print(markdown)


class TeeReporter:
    """The notebook's display, and progress lines on the kernel process's own stderr.

    `mlship export` runs the notebook in a kernel whose stderr is the terminal's, so the person
    at the shell sees each step as it happens (MLSHIP_PROGRESS=stderr)."""

    def __init__(self, *reporters: Any) -> None:
        self.reporters = reporters

    def step(self, step: str, status: str, seconds: float | None = None, detail: str = "") -> None:
        for reporter in self.reporters:
            reporter.step(step, status, seconds, detail)

    def log(self, line: str) -> None:
        for reporter in self.reporters:
            reporter.log(line)

    def review(self, spec: ShipSpec, markdown: str) -> None:
        for reporter in self.reporters:
            if not isinstance(reporter, TextReporter):
                reporter.review(spec, markdown)


class NotebookReporter:
    """One progress display updated in place, then the review as HTML (text/plain alongside)."""

    def __init__(self) -> None:
        self.display_id = f"mlship-progress-{time.monotonic_ns()}"
        self.steps: dict[str, tuple[str, float | None, str]] = {}
        self.started: dict[str, float] = {}
        self.last_line = ""
        self.shown = False

    def _bundle(self) -> dict[str, str]:
        rows, text = [], []
        for step, (status, seconds, detail) in self.steps.items():
            if seconds is None and status == "running":
                seconds = time.monotonic() - self.started.get(step, time.monotonic())
                timing = f"{seconds:.0f} s…"
            else:
                timing = f"{seconds:.1f} s" if seconds is not None else ""
            mark = {"done": "✔", "failed": "✘", "running": "…", "reused": "✔"}.get(status, "·")
            rows.append(
                f"<tr><td>{mark}</td><td>{html.escape(step)}</td><td>{html.escape(status)}</td>"
                f"<td>{timing}</td><td>{html.escape(detail)}</td></tr>"
            )
            text.append(f"{mark} {step}: {status} {timing} {detail}".rstrip())
        tail = f"<div><code>{html.escape(self.last_line)}</code></div>" if self.last_line else ""
        return {
            "text/plain": "\n".join(text),
            "text/html": f"<table class='mlship-progress'>{''.join(rows)}</table>{tail}",
        }

    def _show(self) -> None:
        if self.shown:
            update_display(self._bundle(), raw=True, display_id=self.display_id)
        else:
            display(self._bundle(), raw=True, display_id=self.display_id)
            self.shown = True

    def step(self, step: str, status: str, seconds: float | None = None, detail: str = "") -> None:
        if status == "running":
            self.started[step] = time.monotonic()
        self.steps[step] = (status, seconds, detail)
        self._show()

    def log(self, line: str) -> None:
        self.last_line = line[-200:]
        self._show()

    def review(self, spec: ShipSpec, markdown: str) -> None:
        from .review import review_html

        display({"text/html": review_html(spec, None), "text/markdown": markdown, "text/plain": markdown}, raw=True)


class EventReporter:
    """Structured events for the lab panel (see docs/panel-protocol.md)."""

    @staticmethod
    def emit(event: dict[str, Any]) -> None:
        display({EVENT_MIME: event, "text/plain": json.dumps(event)[:200]}, raw=True)

    def step(self, step: str, status: str, seconds: float | None = None, detail: str = "") -> None:
        self.emit({"event": "step", "step": step, "status": status, "seconds": seconds, "detail": detail})

    def log(self, line: str) -> None:
        self.emit({"event": "log", "line": line})

    def review(self, spec: ShipSpec, markdown: str) -> None:
        from .review import review_tables

        tables = [{"title": t, "header": h, "rows": r} for t, h, r in review_tables(spec, None)]
        self.emit({"event": "review", "review": {"name": spec.name, "version": spec.version, "sections": tables},
                   "markdown": markdown})


def _unquote(value: str | None) -> str | None:
    """IPython's argument splitter keeps quotes; `--sample "df[['a', 'b']]"` means the expression inside."""
    if value and len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _in_notebook(shell: Any) -> bool:
    return type(shell).__name__ == "ZMQInteractiveShell"


def _entry_from_cell(body: str, entry: str | None) -> str:
    try:
        tree = ast.parse(body)
    except SyntaxError as exc:
        raise UsageError(f"the %%ship cell is not valid Python: {exc.msg} (line {exc.lineno})") from None
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if entry:
        return entry
    if len(defined) == 1:
        return defined[0]
    if not defined:
        raise UsageError("the %%ship cell defines no function: define the entry function in the cell, or name one with --entry")
    raise UsageError(f"the %%ship cell defines several functions ({', '.join(defined)}): name the entry with --entry")


@magics_class
class ShipMagics(Magics):
    @magic_arguments()
    @argument("name", help="Service name: lowercase letters, digits, '-' or '_' (becomes a folder and an image name).")
    @argument("--sample", required=True, metavar="EXPR",
              help="Expression for the request sample (DataFrame, 2-D array, list of str, list of dicts). "
                   "It fixes the request schema and becomes the golden test.")
    @argument("--out", default="services", metavar="DIR", help="Folder that receives DIR/NAME (default: services).")
    @argument("--version", default="1", metavar="V", help="Model version reported by the service (default: 1).")
    @argument("--entry", metavar="FUNC", help="%%ship: the entry function, when the cell defines several or none.")
    @argument("--model", metavar="VAR", help="%ship: the model variable; the entry is VAR.<method>.")
    @argument("--method", default="predict", metavar="METHOD", help="%ship: method called on --model (default: predict).")
    @argument("--reference", metavar="EXPR", help="Wider data (e.g. the training frame) to learn which fields may be null.")
    @argument("--dry-run", action="store_true", help="Show the review; write nothing.")
    @argument("--no-verify", action="store_true", help="Skip running the project's tests in a clean environment.")
    @argument("--build", action="store_true", help="Build the container image after a verified export.")
    @argument("--push", action="store_true", help="Push the export to the model registry as its next version.")
    @argument("--registry", metavar="URI", help="Registry for --push: a folder or fsspec URL (default: $MLSHIP_REGISTRY, "
                                                "else ~/.local/share/jupyter-mlship/registry).")
    @argument("--allow-secrets", action="store_true", help="Export even though possible secrets were found (listed in the review).")
    @argument("--events", action="store_true", help="Emit structured events (used by the JupyterLab panel).")
    @line_cell_magic
    def ship(self, line: str, cell: str | None = None) -> None:
        """Capture the model, the code it needs and the environment into a tested service project.

        Cell form: the cell defines the entry function, called with the request instances
        converted back to the sample's type::

            %%ship churn --sample X_test.head(20)
            def predict(x):
                return model.predict_proba(add_features(x))

        Line form: the entry is a method of a model variable::

            %ship churn --model clf --sample X_test[:20] --method predict_proba
        """
        try:
            args = parse_argstring(self.ship, line)
        except UsageError as exc:
            if "unrecognized arguments" in str(exc):
                raise UsageError(
                    f"%ship: {exc}; quote an expression that contains spaces, e.g. --sample \"df[['a', 'b']]\""
                ) from None
            raise
        shell = self.shell
        events = args.events
        reporter: Any = EventReporter() if events else NotebookReporter() if _in_notebook(shell) else TextReporter()
        if os.environ.get(PROGRESS_ENV) == "stderr":
            reporter = TeeReporter(reporter, TextReporter(stream=sys.__stderr__))
        options = self._options(args, cell)
        started = time.monotonic()
        try:
            from .export import export

            outcome = export(options, shell.user_ns, CellHistory.from_shell(shell, cell or ""), reporter)
        except ShipError as exc:
            message = str(exc)
            self._record(options, False, message, None)
            if events:
                EventReporter.emit({"event": "result", "ok": False, "name": options.name, "version": options.version,
                                    "project": None, "verified": False, "tests": None, "message": message})
            if exc.output:
                print(exc.output[-6000:])
            raise UsageError(message) from None
        self._record(options, True, outcome.message, outcome.project)
        tests = None
        if outcome.tests_passed is not None:
            tests = {"passed": outcome.tests_passed, "failed": outcome.tests_failed, "output": outcome.test_output[-4000:]}
        if events:
            EventReporter.emit({"event": "result", "ok": True, "name": outcome.name, "version": outcome.version,
                                "project": str(outcome.project) if outcome.project else None,
                                "verified": outcome.verified, "tests": tests, "message": outcome.message,
                                "pushed": outcome.pushed})
        else:
            seconds = time.monotonic() - started
            summary = f"{outcome.message} in {seconds:.1f} s"
            if tests:
                summary += f"; tests: {tests['passed']} passed, {tests['failed']} failed"
            if outcome.image:
                summary += f"; image {outcome.image}"
            if _in_notebook(shell):
                display({"text/plain": summary, "text/html": f"<b>mlship</b>: {html.escape(summary)}"}, raw=True)
            else:
                print(summary)

    def _options(self, args: Any, cell: str | None) -> Any:
        from .export import ShipOptions

        out = Path(os.environ.get(OUT_OVERRIDE_ENV) or _unquote(args.out)).expanduser()
        common = dict(name=_unquote(args.name), sample_expr=_unquote(args.sample), out=out,
                      version=_unquote(args.version), reference_expr=_unquote(args.reference), dry_run=args.dry_run, verify=not args.no_verify,
                      build=args.build, allow_secrets=args.allow_secrets, notebook=current_notebook(),
                      push=args.push, registry=_unquote(args.registry))
        if cell is None:
            if not args.model:
                raise UsageError("%ship needs --model VAR (or use %%ship with the entry function in the cell)")
            if args.entry:
                raise UsageError("--entry goes with %%ship; %ship takes --model VAR and --method")
            return ShipOptions(model_var=args.model, method=args.method, **common)
        if args.model:
            raise UsageError("--model goes with the line form %ship; in %%ship, define the entry function in the cell")
        if cell.strip():
            self._run_cell_body(cell)
        if not cell.strip() and not args.entry:
            raise UsageError("the %%ship cell is empty: define the entry function in it, or name one with --entry")
        entry = _entry_from_cell(self.shell.transform_cell(cell), args.entry) if cell.strip() else args.entry
        return ShipOptions(entry=entry, **common)

    def _run_cell_body(self, body: str) -> None:
        """Define the cell's functions in the user's namespace, with their source findable."""
        shell = self.shell
        code = shell.transform_cell(body)
        filename = f"<mlship-cell-{shell.execution_count}-{abs(hash(body))}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
        try:
            compiled = compile(code, filename, "exec")
        except SyntaxError as exc:
            raise UsageError(f"the %%ship cell is not valid Python: {exc.msg} (line {exc.lineno})") from None
        try:
            exec(compiled, shell.user_ns)
        except Exception as exc:
            raise UsageError(f"the %%ship cell's code raised {type(exc).__name__}: {exc}") from None

    @staticmethod
    def _record(options: Any, ok: bool, message: str, project: Path | None) -> None:
        path = os.environ.get(RESULTS_ENV)
        if not path:
            return
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"name": options.name, "ok": ok, "message": message,
                                 "project": str(project) if project else None}) + "\n")
