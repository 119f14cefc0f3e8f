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
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display, update_display

from .capture.code import CellHistory
from .errors import ShipError
from .events import EVENT_MIME, Event, Events, Log, Result, Review, Step, to_json
from .history import current_notebook, record_result
from .options import OUT_OVERRIDE_ENV, PROGRESS_ENV, ShipOptions
from .magic_args import split_magic_line



def _summary(result: Result) -> str:
    summary = result.message + (f" in {result.seconds:.1f} s" if result.seconds is not None else "")
    if result.tests:
        summary += f"; tests: {result.tests.passed} passed, {result.tests.failed} failed"
    if result.image:
        summary += f"; image {result.image}"
    return summary


class TextSink:
    """Plain lines, for terminals and logs (``review=False``: progress only, e.g. on stderr)."""

    def __init__(self, stream: Any = None, *, review: bool = True, verbose_log: bool = False) -> None:
        self.stream, self.show_review, self.verbose_log = stream, review, verbose_log

    def _print(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def __call__(self, event: Event) -> None:
        if isinstance(event, Step):
            timing = f" ({event.seconds:.1f} s)" if event.seconds is not None else ""
            detail = f" - {event.detail}" if event.detail and event.status != "done" else ""
            self._print(f"[mlship] {event.step}: {event.status}{timing}{detail}")
        elif isinstance(event, Log) and self.verbose_log:
            self._print(f"    {event.line}")
        elif isinstance(event, Review) and self.show_review:
            self._print(event.markdown)
        elif isinstance(event, Result) and event.ok and self.show_review:
            self._print(_summary(event))


class NotebookSink:
    """One progress display updated in place, the review as HTML, then the result.

    The result's display also carries the event itself (EVENT_MIME), which JupyterLab does not render:
    that is how `mlship export` reads each ship cell's result back from the executed notebook."""

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

    def __call__(self, event: Event) -> None:
        if isinstance(event, Step):
            if event.status == "running":
                self.started[event.step] = time.monotonic()
            self.steps[event.step] = (event.status, event.seconds, event.detail)
            self._show()
        elif isinstance(event, Log):
            self.last_line = event.line[-200:]
            self._show()
        elif isinstance(event, Review):
            display({"text/html": event.html, "text/markdown": event.markdown, "text/plain": event.markdown}, raw=True)
        elif isinstance(event, Result) and event.ok:
            summary = _summary(event)
            display({"text/plain": summary, "text/html": f"<b>mlship</b>: {html.escape(summary)}",
                     EVENT_MIME: to_json(event)}, raw=True)


def panel_sink(event: Event) -> None:
    """Structured events for the lab panel (docs/panel-protocol.md)."""
    data = to_json(event)
    display({EVENT_MIME: data, "text/plain": json.dumps(data)[:200]}, raw=True)


def history_sink(event: Event) -> None:
    """Every result, failures included, so the panel can list what happened to each export."""
    if isinstance(event, Result):
        record_result(event)


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
    _cell_filename: str | None = None  # the file name the running %%ship cell's body was compiled under

    # The line is read as typed: --sample and --reference are Python expressions already, and IPython's
    # $x / {x} expansion would rewrite them (a set literal {'a', 'b'} arrives as a tuple).
    @no_var_expand
    @magic_arguments()
    @argument("name", help="Service name: lowercase letters, digits, '-' or '_' (becomes a folder and an image name).")
    @argument("--sample", required=True, metavar="EXPR",
              help="Expression for the request sample (DataFrame, 2-D array, list of str, list of dicts). "
                   "It fixes the request schema and becomes the golden test.")
    @argument("--out", default="services", metavar="DIR", help="Folder that receives DIR/NAME (default: services).")
    @argument("--version", default="1", metavar="V", help="Model version reported by the service (default: 1).")
    @argument("--entry", metavar="FUNC", help="%%%%ship: the entry function, when the cell defines several or none.")
    @argument("--model", metavar="VAR", help="%%ship: the model variable; the entry is VAR.<method>.")
    @argument("--method", default="predict", metavar="METHOD", help="%%ship: method called on --model (default: predict).")
    @argument("--reference", metavar="EXPR", help="The training data (e.g. X_train): which fields may be null, and "
              "the profile that drift and the skew guard compare requests with (default: the sample).")
    @argument("--log-exclude", metavar="COLS",
              help="Monitoring: request fields kept out of the inference log, comma-separated; NAME:hash logs a "
                   "salted hash instead (e.g. --log-exclude email,user_id:hash).")
    @argument("--guard", choices=("flag", "reject"),
              help="Monitoring: values outside the training data are counted and flagged (default), or the "
                   "request is refused with 422 (reject).")
    @argument("--dry-run", action="store_true", help="Show the review; write nothing.")
    @argument("--no-verify", action="store_true", help="Skip running the project's tests in a clean environment.")
    @argument("--build", action="store_true", help="Build the container image after a verified export.")
    @argument("--push", action="store_true", help="Push the export to the model registry as its next version.")
    @argument("--registry", metavar="URI", help="Registry for --push: a folder or fsspec URL (default: $MLSHIP_REGISTRY, "
                                                "else ~/.local/share/jupyter-mlship/registry).")
    @argument("--allow-secrets", action="store_true", help="Export even though possible secrets were found (listed in the review).")
    @argument("--allow-cpu-fallback", action="store_true",
              help="A model that ran on a GPU may run on the CPU where the service finds none (the entry must not name 'cuda').")
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

        Expressions are written as in Python, unquoted: ``--sample df[['a', 'b']]``,
        ``--sample X[:20, :3]``; quotes are still accepted. The line is not $/{} expanded.
        """
        try:
            # Brackets, parentheses and strings keep an expression whole: --sample rows[:2, :1].
            args = self.ship.parser.parse_args(split_magic_line(line))
        except UsageError as exc:
            if "unrecognized arguments" in str(exc):
                raise UsageError(
                    f"%ship: {exc}; quote an expression that has spaces outside brackets, e.g. --sample \"a + b\""
                ) from None
            raise
        shell = self.shell
        front: Any = panel_sink if args.events else NotebookSink() if _in_notebook(shell) else TextSink()
        channel = Events(front, history_sink)
        if os.environ.get(PROGRESS_ENV) == "stderr":
            channel.sinks.append(TextSink(sys.__stderr__, review=False))
        self._cell_filename = None
        options = self._options(args, cell)
        from .pipeline import ship

        try:
            ship(options, shell.user_ns, CellHistory.from_shell(shell, cell or "", self._cell_filename), channel)
        except ShipError as exc:
            if exc.output:
                print(exc.output[-6000:])
            raise UsageError(str(exc)) from None

    def _options(self, args: Any, cell: str | None) -> ShipOptions:
        out = Path(os.environ.get(OUT_OVERRIDE_ENV) or _unquote(args.out)).expanduser()
        common = dict(name=_unquote(args.name), sample_expr=_unquote(args.sample), out=out,
                      version=_unquote(args.version), reference_expr=_unquote(args.reference), dry_run=args.dry_run, verify=not args.no_verify,
                      build=args.build, allow_secrets=args.allow_secrets, notebook=current_notebook(),
                      push=args.push, registry=_unquote(args.registry),
                      log_exclude=_unquote(args.log_exclude), guard=args.guard,  # monitoring (issue 10)
                      allow_cpu_fallback=args.allow_cpu_fallback)
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
        self._cell_filename = filename  # its functions belong to the running cell (see capture/cells.py)
        linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
        try:
            compiled = compile(code, filename, "exec")
        except SyntaxError as exc:
            raise UsageError(f"the %%ship cell is not valid Python: {exc.msg} (line {exc.lineno})") from None
        try:
            exec(compiled, shell.user_ns)
        except Exception as exc:
            raise UsageError(f"the %%ship cell's code raised {type(exc).__name__}: {exc}") from None
