"""Which notebook cell (In[n]) defined a name: for the review and for messages.

Code objects carry their cell: IPython compiles each cell under a file name of its own and keeps the
map from that name to the execution count (``shell.compile._filename_map``, the map behind "Cell In[n]"
in tracebacks). Redefinitions and cells run out of order are therefore attributed to the cell that made
the live object. Values without code (constants, model objects) are attributed to the last cell whose
top-level statements bind the name, read with ``ast`` from the input history.
"""

from __future__ import annotations

import ast
import textwrap
import types
from typing import Any, Callable


class CellHistory:
    """The kernel's input history and its cell-file map, as capture needs them."""

    def __init__(self, cells: list[str], current: int | None = None, current_source: str = "",
                 filenames: dict[str, int] | None = None,
                 transform: Callable[[str], str] | None = None) -> None:
        self.cells = list(cells)  # In[0] is empty, In[n] the raw source of cell n
        self.current = current  # the running %%ship cell's number, when it has one
        self.current_source = current_source
        self.filenames = dict(filenames or {})  # code file name -> execution count
        self.transform = transform or strip_magics  # IPython syntax -> Python, for ast
        self._parsed: dict[str, ast.Module | None] = {}

    @classmethod
    def from_shell(cls, shell: Any, current_source: str = "", current_filename: str | None = None) -> "CellHistory":
        hm = getattr(shell, "history_manager", None)
        cells = list(getattr(hm, "input_hist_raw", None) or shell.user_ns.get("In", []) or [])
        # The running cell is stored before it runs, so its In[n] is the last index; execution_count
        # is not reliable for that (IPython 9 increments it before the cell runs). A cell run without
        # history (the lab panel) has no number.
        current = (len(cells) - 1 if current_source.strip() and cells and current_source.strip() in cells[-1]
                   and "ship" in cells[-1] else None)
        filenames = dict(getattr(getattr(shell, "compile", None), "_filename_map", None) or {})
        if current_filename:
            filenames[current_filename] = current  # type: ignore[assignment]
        return cls(cells, current, current_source, filenames, _shell_transform(shell))

    # --- code objects ---------------------------------------------------------------------------

    def cell_of_code(self, code: types.CodeType | None) -> int | None:
        """The cell a function or method was compiled in (None: not compiled from a cell)."""
        return self.filenames.get(code.co_filename) if code is not None else None

    def knows_code(self, code: types.CodeType | None) -> bool:
        return code is not None and code.co_filename in self.filenames

    # --- sources ----------------------------------------------------------------------------------

    def _sources(self) -> list[tuple[int | None, str]]:
        """Newest first: the running cell, then the history."""
        running = [(self.current, self.current_source)] if self.current_source.strip() else []
        return running + [(n, self.cells[n]) for n in range(len(self.cells) - 1, 0, -1)]

    def _tree(self, source: str) -> ast.Module | None:
        if source not in self._parsed:
            try:
                self._parsed[source] = ast.parse(self.transform(source))
            except (SyntaxError, ValueError):
                self._parsed[source] = None
        return self._parsed[source]

    def definition_in_history(self, name: str) -> tuple[str, int | None] | None:
        """The last top-level `def`/`class` of ``name`` in the cells run so far, with its cell."""
        for number, source in self._sources():
            tree = self._tree(source)
            found = _definition_text(tree, self.transform(source), name) if tree else None
            if found:
                return found, number
        return None

    def assignment_cell(self, name: str) -> int | None:
        """The last cell whose top-level statements bind ``name`` (assignment, import, for, with...)."""
        for number, source in self._sources():
            tree = self._tree(source)
            if tree is not None and name in bound_names(tree):
                return number
        return None


def bound_names(tree: ast.Module) -> set[str]:
    """Names a cell binds at module level (not inside functions or classes)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            return  # their bodies bind local names
        if isinstance(node, ast.Lambda):
            return
        if isinstance(node, ast.comprehension):  # its target is the comprehension's own variable
            for child in (node.iter, *node.ifs):
                visit(child)
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def definition_source(source: str, name: str, line: int | None = None) -> str | None:
    """The text of the last top-level `def`/`class` of ``name`` in Python ``source``, decorators included."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    return _definition_text(tree, source, name, line)


def _definition_text(tree: ast.Module, source: str, name: str, line: int | None = None) -> str | None:
    """The definition of ``name`` at module level, also inside a module-level ``if``, ``try`` or ``with``
    block (``if USE_LOG: class Scaler: ...``), dedented, decorators included: the one holding ``line``
    (where the live object's code starts), else the last one."""
    lines = source.splitlines(keepends=True)
    found = None
    for node in _module_level(tree.body):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            text = textwrap.dedent("".join(lines[start - 1 : node.end_lineno]))
            if line is not None and start <= line <= (node.end_lineno or start):
                return text
            found = text
    return found


def _module_level(body: list[ast.stmt]) -> list[ast.stmt]:
    """Statements that run at module level, in source order: the body, and the blocks of its if/try/with."""
    found: list[ast.stmt] = []
    for node in body:
        found.append(node)
        if isinstance(node, ast.If):
            found += _module_level(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            found += _module_level(node.body + [s for h in node.handlers for s in h.body] + node.orelse
                                   + node.finalbody)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            found += _module_level(node.body)
    return sorted(found, key=lambda n: n.lineno)


def strip_magics(source: str) -> str:
    """Cell text without IPython-only lines, so `ast` can read it (line numbers kept)."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line
                     for line in python_of_magics(source).splitlines())


# Cell magics whose body is Python run in the notebook's namespace (what a `%%time` cell defines is the
# notebook's; a ship cell's body is its entry function), and line magics whose rest is a statement.
PYTHON_CELL_MAGICS = {"%%ship", "%%time", "%%capture", "%%prun"}
PYTHON_LINE_MAGICS = {"%time", "%prun"}


def python_of_magics(source: str) -> str:
    """Such cells as their body and such lines (``%time model = fit()``) as their statement, line numbers
    kept; anything else unchanged."""
    lines = source.splitlines()
    first = lines[0].strip().split() if lines else []
    if first and first[0] in PYTHON_CELL_MAGICS:
        lines[0] = ""
    for index, line in enumerate(lines):
        stripped = line.lstrip()
        word, _, rest = stripped.partition(" ")
        if word in PYTHON_LINE_MAGICS and rest.strip():
            lines[index] = line[: len(line) - len(stripped)] + rest.lstrip()
    return "\n".join(lines)


def _shell_transform(shell: Any) -> Callable[[str], str]:
    """IPython's own transformation (magics, `!`, `?`) keeps line numbers; fall back to stripping."""
    transform_cell = getattr(shell, "transform_cell", None)
    if transform_cell is None:
        return strip_magics

    def transform(source: str) -> str:
        source = python_of_magics(source)
        try:
            return transform_cell(source)
        except Exception:
            return strip_magics(source)

    return transform
