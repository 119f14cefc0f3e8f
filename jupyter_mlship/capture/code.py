"""Capture: follow the entry function's names through the notebook and classify what they reach.

Starting from the entry function, every global name it (transitively) uses is looked up in the
user's namespace and becomes one of: an import, a notebook function or class (shipped as source),
a constant (shipped as a literal), or an artifact (a model object, saved in a native format by
``artifacts.py``). Whatever the entry function does not reach stays behind.
"""

from __future__ import annotations

import ast
import builtins
import dis
import importlib
import importlib.util
import inspect
import io
import linecache
import pickle
import re
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import types
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import ShipError
from .cells import CellHistory, definition_source

MAX_CONSTANT_CHARS = 20_000  # larger literals make features.py unreadable: they become artifacts
LITERAL_TYPES = (type(None), bool, int, float, complex, str, bytes)


@dataclass
class Definition:
    """A notebook function or class, shipped as its source."""

    name: str
    kind: str  # "function" | "class"
    source: str
    cell: int | None
    order: tuple[int, int]  # (cell, line) so definitions keep the notebook's order


@dataclass
class CodeCapture:
    entry_name: str
    imports: dict[str, str] = field(default_factory=dict)  # name -> import statement
    constants: dict[str, str] = field(default_factory=dict)  # name -> literal source
    definitions: dict[str, Definition] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # name -> the definition it names
    artifacts: dict[str, Any] = field(default_factory=dict)  # name -> live object
    notebook_refs: dict[str, set[str]] = field(default_factory=dict)  # artifact -> notebook names it holds
    artifact_modules: dict[str, set[str]] = field(default_factory=dict)  # artifact -> modules its classes are from
    cells: dict[str, int | None] = field(default_factory=dict)  # name -> cell it came from
    unresolved: list[str] = field(default_factory=list)  # names used but not defined anywhere
    modules: set[str] = field(default_factory=set)  # top-level modules the code imports
    local_modules: dict[str, Path] = field(default_factory=dict)  # the notebook folder's own modules
    globals_written: dict[str, set[str]] = field(default_factory=dict)  # definition -> globals it assigns

    def features_source(self, entry_docstring: str, load_line: Callable[[str], str]) -> str:
        """The text of app/features.py: imports, constants, definitions, artifacts, entry."""
        parts = [f'"""{entry_docstring}"""\n']
        if self.local_modules:
            parts.append(
                "# The notebook's own modules are shipped in app/local/.\n"
                "import sys\nfrom pathlib import Path\n\n"
                'sys.path.insert(0, str(Path(__file__).resolve().parent / "local"))\n'
            )
        imports = sorted(set(self.imports.values()), key=lambda s: (s.startswith("from "), s))
        if imports:
            parts.append("\n".join(imports) + "\n")
        if self.artifacts:
            parts.append("from app.loaders import load_artifact\n")
        if self.constants:
            parts.append("\n".join(f"{name} = {src}" for name, src in self.constants.items()) + "\n")
        entry = self.definitions.get(self.entry_name)
        aliases = dict(self.aliases)
        previous = ""
        for kind, name in self._definition_order(entry):
            if kind == "definition":
                parts.append(_with_cell_comment(self.definitions[name]))
                named = sorted(alias for alias, target in aliases.items() if target == name)
                if named:
                    parts.append("\n".join(f"{alias} = {aliases.pop(alias)}" for alias in named) + "\n")
            elif previous == "artifact":  # one block for consecutive loads
                parts[-1] += load_line(name) + "\n"
            else:
                header = "" if any(part.startswith(LOAD_HEADER) for part in parts) else LOAD_HEADER
                parts.append(header + load_line(name) + "\n")
            previous = kind
        if aliases:
            parts.append("\n".join(f"{alias} = {target}" for alias, target in sorted(aliases.items())) + "\n")
        if entry is not None:
            parts.append(_with_cell_comment(entry))
        return "\n\n".join(part.rstrip("\n") for part in parts) + "\n"

    def changed_in_place(self) -> dict[str, set[str]]:
        """Definition -> the captured constants and objects it changes in place when it runs."""
        names = set(self.constants) | set(self.artifacts)
        found = {d.name: mutated_globals(d.source, names) for d in self.definitions.values()}
        return {name: changed for name, changed in found.items() if changed}

    def outside_inputs(self) -> list[str]:
        """Review warnings for shipped code that reads files or environment variables when it runs: what
        it reads is not part of the project, yet decides its answers."""
        warnings = []
        for definition in sorted(self.definitions.values(), key=lambda d: d.order):
            files, variables = outside_reads(definition.source)
            if files:
                warnings.append(
                    f"`{definition.name}` {READS_FILES} ({'; '.join(files[:3])}): the service has only "
                    "the project's files, and a relative path depends on where it is started; read the data in a "
                    "notebook cell into a variable that the code uses, and it is shipped as a model file"
                )
            if variables:
                warnings.append(
                    f"`{definition.name}` {READS_ENVIRONMENT} ({', '.join(variables[:5])}) when it runs: the "
                    "service's environment decides those values, while its golden test expects the notebook's"
                )
        return warnings

    def _definition_order(self, entry: Definition | None) -> list[tuple[str, str]]:
        """Definitions (in the notebook's order) then artifact loads, except where one needs the other first:
        a def or class needs the artifacts its defaults, decorators, base classes or class body read when it
        is executed (``def age(frame, cutoff=CUTOFF)`` with a Timestamp CUTOFF); an artifact needs the
        notebook functions and classes its pickle refers to."""
        definitions = [d.name for d in sorted(self.definitions.values(), key=lambda d: d.order) if d is not entry]
        items = [("definition", name) for name in definitions] + [("artifact", name) for name in self.artifacts]
        needs: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for name in definitions:
            used = {self.aliases.get(n, n) for n in _definition_time_names(self.definitions[name].source)} - {name}
            needs[("definition", name)] = ({("artifact", n) for n in used if n in self.artifacts}
                                           | {("definition", n) for n in used if n in definitions})
        for name in self.artifacts:
            refs = {ref.split(".")[0] for ref in self.notebook_refs.get(name, ())}
            needs[("artifact", name)] = {("definition", n) for n in refs if n in definitions}
        order: list[tuple[str, str]] = []
        placed: set[tuple[str, str]] = set()
        while len(order) < len(items):  # the first item, in the default order, whose needs are placed
            item = next((i for i in items if i not in placed and needs[i] <= placed), None)
            if item is None:
                stuck = ", ".join(f"`{name}`" for kind, name in items if (kind, name) not in placed)
                raise ShipError(
                    f"the notebook code and model objects {stuck} need each other when they are created (a "
                    "class or default that reads a model object that itself holds that code); create the object "
                    "inside the function that uses it"
                )
            order.append(item)
            placed.add(item)
        return order


LOAD_HEADER = "# Model artifacts: loaded once at start-up from model/, sha256-checked.\n"


# Methods that change a list, dict or set in place.
MUTATING_METHODS = {"append", "extend", "insert", "pop", "popitem", "remove", "clear", "update", "setdefault",
                    "add", "discard", "sort", "reverse", "__setitem__", "__delitem__"}


def mutated_globals(source: str, module_names: set[str]) -> set[str]:
    """Which of ``module_names`` (the captured constants and objects) ``source`` changes in place when it
    runs: ``CACHE[key] = v``, ``SEEN.add(x)``, ``model.calls += 1``; names bound locally are not globals."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return set()
    declared = {n for node in ast.walk(tree) if isinstance(node, ast.Global) for n in node.names}
    local = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    local |= {a.arg for node in ast.walk(tree) if isinstance(node, ast.arguments)
              for a in node.posonlyargs + node.args + node.kwonlyargs + [x for x in (node.vararg, node.kwarg) if x]}
    candidates = (module_names - local) | (module_names & declared)
    changed = set()
    for node in ast.walk(tree):
        target = None
        if isinstance(node, (ast.Subscript, ast.Attribute)) and isinstance(node.ctx, (ast.Store, ast.Del)):
            target = node.value
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATING_METHODS:
            target = node.func.value
        if isinstance(target, ast.Name) and target.id in candidates:
            changed.add(target.id)
    return changed


# How the review's warnings about outside reads begin (pipeline.verify names them when verify fails).
READS_FILES, READS_ENVIRONMENT = "reads files when it runs", "reads the environment"

# Calls that read a file: pandas' read_*, numpy's and pathlib's readers, and load() of these modules.
FILE_READERS = {"loadtxt", "genfromtxt", "fromfile", "read_text", "read_bytes"}
LOADING_MODULES = {"np", "numpy", "joblib", "pickle", "torch", "json", "yaml", "pd", "pandas"}


def outside_reads(source: str) -> tuple[list[str], list[str]]:
    """What ``source`` reads from outside the project when it runs: file reads (as written) and the
    names of environment variables (or the expressions that name them)."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return [], []
    files: list[str] = []
    variables: list[str] = []

    def is_environ(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
            isinstance(node, ast.Name) and node.id == "environ")

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            base = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            if name == "open" or name.startswith("read_") or name in FILE_READERS or (
                    name == "load" and base in LOADING_MODULES):
                files.append(f"`{ast.unparse(node)[:80]}`")
            elif name == "getenv" or (name == "get" and isinstance(func, ast.Attribute) and is_environ(func.value)):
                variables.append(ast.unparse(node.args[0]) if node.args else "?")
        elif isinstance(node, ast.Subscript) and is_environ(node.value):
            variables.append(ast.unparse(node.slice))
    return list(dict.fromkeys(files)), list(dict.fromkeys(variables))


def _with_cell_comment(definition: Definition) -> str:
    where = f"In[{definition.cell}]" if definition.cell else "the notebook"
    return f"# from {where}\n{definition.source.rstrip()}\n"


# --- refusals ------------------------------------------------------------------------------

_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()), threading.Condition, threading.Semaphore)


def refusal_reason(value: Any) -> str | None:
    """Why a live object cannot travel into a service, or None."""
    if isinstance(value, io.IOBase) or (hasattr(value, "fileno") and hasattr(value, "readline")):
        return "is an open file handle"
    if isinstance(value, socket.socket):
        return "is an open network socket"
    if isinstance(value, sqlite3.Connection) or (
        callable(getattr(value, "cursor", None)) and callable(getattr(value, "commit", None))
    ):
        return "is an open database connection"
    if isinstance(value, _LOCK_TYPES) or type(value).__name__ in {"lock", "RLock"}:
        return "is a lock"
    if isinstance(value, threading.Thread):
        return "is a thread"
    if isinstance(value, (types.GeneratorType, types.AsyncGeneratorType, types.CoroutineType)):
        return "is a generator (its position cannot be saved)"
    if isinstance(value, subprocess.Popen):
        return "is a running process"
    if isinstance(value, (types.FrameType, types.TracebackType)):
        return "is an interpreter frame"
    return None


REFUSAL_ADVICE = "a service cannot carry it; create it inside the entry function, or load what it holds into a variable"


# --- the walk -----------------------------------------------------------------------------


def _instructions(code: types.CodeType) -> Iterable[dis.Instruction]:
    """The bytecode of a code object and of the code nested in it (inner functions, comprehensions)."""
    yield from dis.get_instructions(code)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _instructions(const)


def global_names(code: types.CodeType) -> set[str]:
    """Global names a code object (and the code nested in it) reads or writes."""
    return {i.argval for i in _instructions(code) if i.opname in {"LOAD_GLOBAL", "LOAD_NAME", "STORE_GLOBAL",
                                                                  "DELETE_GLOBAL"}}


def stored_globals(code: types.CodeType) -> set[str]:
    """Global names a code object (and the code nested in it) assigns or deletes (``global n; n += 1``)."""
    return {i.argval for i in _instructions(code) if i.opname in {"STORE_GLOBAL", "DELETE_GLOBAL"}}


def _importable(module: str) -> bool:
    """Is ``module`` installed or importable here (not an optional import that would fail anyway)?"""
    if module in sys.modules:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _definition_time_names(source: str) -> set[str]:
    """Names a def/class needs when it is executed: decorators, defaults, bases, class body."""
    try:
        tree = ast.parse(textwrap.dedent(source))
    except SyntaxError:
        return set()
    names: set[str] = set()
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        roots: list[ast.AST] = list(node.decorator_list)
        assigned: set[str] = set()  # class-body names are the class's own, not globals
        if isinstance(node, ast.ClassDef):
            roots += node.bases + [k.value for k in node.keywords]
            for stmt in node.body:
                if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    roots += stmt.decorator_list + stmt.args.defaults + [d for d in stmt.args.kw_defaults if d]
                    roots += _annotations(stmt.args)
                    if stmt.returns:
                        roots.append(stmt.returns)
                elif not isinstance(stmt, ast.ClassDef):
                    for target in ast.walk(stmt):
                        if isinstance(target, ast.Name) and isinstance(target.ctx, ast.Store):
                            assigned.add(target.id)
                    roots.append(stmt)
        else:
            roots += node.args.defaults + [d for d in node.args.kw_defaults if d]
            roots += _annotations(node.args)
            if node.returns:
                roots.append(node.returns)
        for root in roots:
            for sub in ast.walk(root):
                if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load) and sub.id not in assigned:
                    names.add(sub.id)
    return names


def _annotations(args: ast.arguments) -> list[ast.AST]:
    """The annotations of every parameter: positional-only, plain, *args, keyword-only and **kwargs."""
    every = args.posonlyargs + args.args + args.kwonlyargs + [a for a in (args.vararg, args.kwarg) if a]
    return [a.annotation for a in every if a.annotation]


def imported_modules_of(code: types.CodeType) -> set[str]:
    """Top-level modules that a code object (and the code nested in it) imports when it runs, e.g. an
    ``import scipy.special`` inside a function body."""
    return {i.argval.split(".")[0] for i in _instructions(code) if i.opname == "IMPORT_NAME" and i.argval}


def _code_objects_of_class(cls: type) -> Iterable[types.CodeType]:
    for value in vars(cls).values():
        for candidate in (value, getattr(value, "__func__", None), getattr(value, "fget", None),
                          getattr(value, "fset", None), getattr(value, "fdel", None)):
            code = getattr(inspect.unwrap(candidate), "__code__", None) if candidate is not None else None
            if isinstance(code, types.CodeType):
                yield code


def is_notebook_object(value: Any) -> bool:
    """Defined by the notebook itself (its module is __main__ in a kernel)."""
    return getattr(value, "__module__", None) == "__main__" and isinstance(value, (type, types.FunctionType))


def decorated_notebook_function(name: str, value: Any) -> types.FunctionType | None:
    """The notebook function that ``@decorator`` syntax bound to ``name`` as a decorator's object, not a
    function (``functools.lru_cache``, ``numpy.vectorize``, numba's ``jit``): shipped as its source, decorator
    included. None for anything else."""
    if isinstance(value, (type, types.FunctionType, types.ModuleType)):
        return None
    for attribute in ("__wrapped__", "pyfunc", "py_func"):  # functools' wrappers, numpy.vectorize, numba
        inner = getattr(value, attribute, None)
        if isinstance(inner, types.FunctionType):
            inner = inspect.unwrap(inner)
            if is_notebook_object(inner) and inner.__name__ == name:
                return inner
    return None


def is_constant(value: Any, depth: int = 0) -> bool:
    if depth > 20:
        return False
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    if type(value) in LITERAL_TYPES:
        return True
    if type(value) in (list, tuple, set, frozenset):
        return all(is_constant(item, depth + 1) for item in value)
    if type(value) is dict:
        return all(is_constant(k, depth + 1) and is_constant(v, depth + 1) for k, v in value.items())
    return False


def constant_source(value: Any) -> str | None:
    """A Python literal that recreates the value, or None when it is not a plain constant."""
    if isinstance(value, re.Pattern):
        return f"re.compile({value.pattern!r}, {int(value.flags)})"
    if not is_constant(value):
        return None
    text = repr(value)
    checked = text  # what ast.literal_eval must read back as the value
    if isinstance(value, (set, frozenset)):
        try:  # set order changes between runs; a sorted literal keeps re-exports diff-free
            items = ", ".join(repr(v) for v in sorted(value))
        except TypeError:
            items = ", ".join(repr(v) for v in value)
        checked = f"{{{items}}}" if value else "set()"
        # literal_eval reads {...} but not set() nor frozenset(...): those two are checked through their items
        text = checked if isinstance(value, set) else f"frozenset({{{items}}})" if value else "frozenset()"
        if not value:
            return text
    if len(text) > MAX_CONSTANT_CHARS:
        return None
    try:
        if ast.literal_eval(checked) != value:
            return None
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return text


def import_statement(name: str, value: Any) -> str | None:
    """How to import ``value`` under ``name`` in the service, or None if it is not importable."""
    if isinstance(value, types.ModuleType):
        module = value.__name__
        if module == "__main__":
            return None
        if name == module:
            return f"import {module}"
        if "." not in module or module.rsplit(".", 1)[1] != name:
            return f"import {module} as {name}"
        parent, leaf = module.rsplit(".", 1)
        return f"from {parent} import {leaf}"
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or module == "__main__":
        return None
    for candidate in _import_candidates(module):
        try:
            found = getattr(importlib.import_module(candidate), qualname.split(".")[0])
            for part in qualname.split(".")[1:]:
                found = getattr(found, part)
        except (ImportError, AttributeError):
            continue
        if found is value and "." not in qualname:
            return f"from {candidate} import {qualname}" + ("" if qualname == name else f" as {name}")
    return None


def _import_candidates(module: str) -> list[str]:
    """The public module first (numpy before numpy._core.umath), then the defining one."""
    parts = module.split(".")
    public = [".".join(parts[: i + 1]) for i in range(len(parts)) if not any(p.startswith("_") for p in parts[: i + 1])]
    return public + [module]


class MainReferenceScanner(pickle.Pickler):
    """Pickles into nothing to find what an object needs: notebook names and library modules."""

    def __init__(self) -> None:
        super().__init__(_NullWriter(), protocol=pickle.HIGHEST_PROTOCOL)
        self.main_objects: dict[str, Any] = {}
        self.modules: set[str] = set()

    def reducer_override(self, obj: Any) -> Any:
        target = obj if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)) else type(obj)
        if getattr(obj, "__module__", None) == "__main__" and isinstance(getattr(obj, "__qualname__", None), str):
            target = obj  # saved by name, like a function: e.g. a notebook function under functools.lru_cache
        module = getattr(target, "__module__", None)
        if module == "__main__":
            self.main_objects[getattr(target, "__qualname__", repr(target))] = target
        elif isinstance(module, str):
            self.modules.add(module.split(".")[0])
        # Base classes count too: xgboost's XGBClassifier cannot be imported without scikit-learn.
        for base in getattr(target, "__mro__", ())[1:]:
            base_module = getattr(base, "__module__", None)
            if isinstance(base_module, str) and base_module != "__main__":
                self.modules.add(base_module.split(".")[0])
        if module == "__main__" and target is obj:
            # Found: nothing to follow inside a name, and pickle's own check that the name still finds it
            # would fail for code the notebook deleted since (`del add_ctr`), which is shipped all the same.
            return (str, ("",))
        return NotImplemented


class _NullWriter:
    def write(self, data: bytes) -> int:
        return len(data)


def scan_object(name: str, value: Any, user_ns: dict[str, Any], cell: int | None) -> MainReferenceScanner:
    """What an artifact refers to; refuses what cannot be saved or would load differently."""
    scanner = MainReferenceScanner()
    where = _cell_text(cell)
    if is_torchscript(value):  # saved as TorchScript (its own code, no pickled Python objects): torch only
        scanner.modules.add("torch")
        return scanner
    try:
        scanner.dump(value)
    except Exception as exc:  # whatever pickling raises, the user needs the variable and reason
        _refuse_notebook_code(name, where, scanner, user_ns)
        raise ShipError(_cannot_save_message(name, cell, exc, value)) from exc
    _refuse_notebook_code(name, where, scanner, user_ns)
    return scanner


def _refuse_notebook_code(name: str, where: str, scanner: MainReferenceScanner, user_ns: dict[str, Any]) -> None:
    """Notebook code an artifact holds must be shippable as source, and be the live definition."""
    for qualname, obj in scanner.main_objects.items():
        if "<lambda>" in qualname or "<locals>" in qualname:
            raise ShipError(
                f"`{name}`{where} holds {qualname!r}, a lambda or nested function from the notebook; "
                "define it with `def` at the top level of a cell so it can be shipped as source"
            )
        if qualname.isidentifier() and qualname not in user_ns:  # deleted since (`del add_ctr`): shipped
            continue
        live = user_ns.get(qualname)
        if live is not obj and decorated_notebook_function(qualname, live) is obj:
            raise ShipError(
                f"`{name}`{where} holds the function inside the decorated `{qualname}` (its name in the "
                f"notebook is bound to what the decorator returned, which is what the service would give "
                f"`{name}`); hand `{name}` a plain `def` instead"
            )
        if live is not obj:
            raise ShipError(
                f"`{name}`{where} holds an older definition of `{qualname}` (it was redefined after "
                f"`{name}` was built); re-run the cell that builds `{name}`"
            )


def is_torchscript(value: Any) -> bool:
    """A scripted or traced torch module (torch.jit.script / trace), which torch.jit.save writes whole."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.jit.ScriptModule)


def _cannot_save_message(name: str, cell: int | None, exc: BaseException, value: Any = None) -> str:
    if type(value).__module__.startswith("torch.jit"):  # a scripted function: torch.jit.save takes modules
        return (f"`{name}`{_cell_text(cell)} is a TorchScript function, which cannot be saved: script a module "
                "that calls it (torch.jit.script(nn.Module)), or ship the Python function")
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"`{name}`{_cell_text(cell)} cannot be saved: {text}"


def _cell_text(cell: int | None) -> str:
    return f" (In[{cell}])" if cell else ""


class CodeWalker:
    """Follows names from the entry function through the user namespace."""

    def __init__(self, user_ns: dict[str, Any], history: CellHistory) -> None:
        self.user_ns = user_ns
        self.history = history
        self._assignment_cells: dict[str, int | None] = {}
        # Notebook functions and classes that captured objects hold but the namespace no longer names.
        self.held: dict[str, Any] = {}

    def capture(self, entry_name: str, entry: Any | None, start_names: Iterable[str] = ()) -> CodeCapture:
        captured = CodeCapture(entry_name=entry_name)
        queue: list[str] = list(start_names)
        if entry is not None:
            self._add_definition(captured, entry_name, entry, queue)
        seen: set[str] = set(captured.definitions)
        while queue:
            name = queue.pop(0)
            if name in seen:
                continue
            seen.add(name)
            self._classify(captured, name, queue)
        return captured

    def _classify(self, captured: CodeCapture, name: str, queue: list[str]) -> None:
        if name not in self.user_ns and name not in self.held:
            if not hasattr(builtins, name):
                captured.unresolved.append(name)
            return
        value = self.user_ns[name] if name in self.user_ns else self.held[name]
        statement = import_statement(name, value)
        if statement is not None:
            captured.imports[name] = statement
            module = value.__name__ if isinstance(value, types.ModuleType) else value.__module__
            self._add_modules(captured, {module.split(".")[0]})
            return
        decorated = decorated_notebook_function(name, value)
        if decorated is not None:
            self._add_definition(captured, name, decorated, queue)
            return
        if isinstance(value, (types.FunctionType, type)) and is_notebook_object(value):
            self._refuse_inner_function(name, value)
            own_name = value.__name__
            if own_name != name and own_name.isidentifier():
                if own_name not in self.user_ns and own_name not in self.held:  # `del build` after `make_X = build`
                    self.held[own_name] = value
                if self.user_ns.get(own_name, self.held.get(own_name)) is not value:
                    raise ShipError(
                        f"`{name}`{_cell_text(self.assignment_cell(name))} holds an older definition of "
                        f"`{own_name}`, which a later cell redefined; re-run the cell that assigns `{name}` "
                        f"(or use `{own_name}` itself) so that the service runs what the notebook runs"
                    )
                captured.aliases[name] = own_name
                queue.append(own_name)
                return
            self._add_definition(captured, name, value, queue)
            return
        literal = constant_source(value)
        if literal is not None:
            if literal.startswith("re.compile("):
                captured.imports["re"] = "import re"
            captured.constants[name] = literal
            captured.cells[name] = self.assignment_cell(name)
            return
        reason = refusal_reason(value)
        cell = self.assignment_cell(name)
        if reason:
            raise ShipError(f"`{name}`{_cell_text(cell)} {reason}: {REFUSAL_ADVICE}")
        if isinstance(value, (types.FunctionType, types.BuiltinFunctionType, type)):
            raise ShipError(
                f"`{name}`{_cell_text(cell)} is {value!r}, which the service cannot import; "
                "define it in the notebook or import it from an installed package"
            )
        scanner = scan_object(name, value, self.user_ns, cell)
        captured.artifacts[name] = value
        captured.cells[name] = cell
        captured.notebook_refs[name] = set(scanner.main_objects)
        for qualname, obj in scanner.main_objects.items():  # notebook code deleted since: shipped all the same
            if qualname.isidentifier() and qualname not in self.user_ns:
                self.held.setdefault(qualname, obj)
        captured.artifact_modules[name] = set(scanner.modules)
        self._add_modules(captured, scanner.modules)
        queue.extend(scanner.main_objects)

    def _refuse_inner_function(self, name: str, value: Any) -> None:
        """A function made by calling another (a closure, a factory's inner def) has no top-level source."""
        if not isinstance(value, types.FunctionType) or hasattr(value, "__wrapped__"):  # decorators: see unwrap
            return
        if value.__closure__ or "<locals>" in value.__qualname__:
            held = f", and holds that call's variables ({', '.join(value.__code__.co_freevars)})" \
                if value.__code__.co_freevars else ""
            raise ShipError(
                f"`{name}`{_cell_text(self.assignment_cell(name))} is `{value.__qualname__}`, a function made "
                f"inside a call of another function{held}; the service ships top-level code as source: write "
                "it as a top-level `def` (its values as constants or default arguments), or as a "
                "functools.partial of one"
            )

    @staticmethod
    def _add_modules(captured: CodeCapture, modules: Iterable[str]) -> None:
        """Record modules; the notebook folder's own ones are shipped, with what they import."""
        pending = list(modules)
        while pending:
            module = pending.pop()
            if module in captured.modules:
                continue
            captured.modules.add(module)
            path = local_module_path(module)
            if path is not None:
                captured.local_modules[module] = path
                pending.extend(imported_modules(path))

    def _add_definition(self, captured: CodeCapture, name: str, value: Any, queue: list[str]) -> None:
        kind = "class" if isinstance(value, type) else "function"
        source, cell = self._source_of(name, value, kind)
        lineno = self._first_line(value)
        captured.definitions[name] = Definition(name, kind, source, cell, (cell or 0, lineno))
        captured.cells[name] = cell
        needed = _definition_time_names(source)
        codes = [inspect.unwrap(value).__code__] if kind == "function" else list(_code_objects_of_class(value))
        imported: set[str] = set()
        for code in codes:
            needed |= global_names(code)
            imported |= imported_modules_of(code)
            written = stored_globals(code)
            if written:
                captured.globals_written.setdefault(name, set()).update(written)
        # Imports inside bodies run in the service too: their modules are pinned, or shipped when local.
        self._add_modules(captured, {m for m in imported if _importable(m)})
        needed.discard(name)
        queue.extend(sorted(needed))

    def _source_of(self, name: str, value: Any, kind: str) -> tuple[str, int | None]:
        source = None
        if kind == "function":
            try:
                source = textwrap.dedent(inspect.getsource(value))
            except (OSError, TypeError):
                source = None
            if source is not None and not _defines(source, name):
                source = None
        if source is None:
            code = self._code_of(value)
            if code is not None:
                source = _definition_in_file(code.co_filename, name, code.co_firstlineno)
        code = self._code_of(value)
        if source is None:
            found = self.history.definition_in_history(name)
            if found:
                return found[0], self.history.cell_of_code(code) if self.history.knows_code(code) else found[1]
            if getattr(value, "__name__", "") == "<lambda>":
                raise ShipError(
                    f"`{name}` is a lambda that is not alone on its line as `{name} = lambda ...`, so its "
                    "source cannot be told apart; define it with `def` (or on a line of its own)"
                )
            raise ShipError(
                f"the source of {kind} `{name}` cannot be found in this notebook's history; "
                "run the cell that defines it again"
            )
        if self.history.knows_code(code):
            return source, self.history.cell_of_code(code)
        found = self.history.definition_in_history(name)  # e.g. a class whose methods came from elsewhere
        return source, found[1] if found and found[0].strip() == source.strip() else None

    @staticmethod
    def _code_of(value: Any) -> types.CodeType | None:
        """The code object that says where a function or class was compiled."""
        if isinstance(value, types.FunctionType):
            return inspect.unwrap(value).__code__
        return next(iter(_code_objects_of_class(value)), None)

    @staticmethod
    def _first_line(value: Any) -> int:
        if isinstance(value, types.FunctionType):
            return inspect.unwrap(value).__code__.co_firstlineno
        return min((code.co_firstlineno for code in _code_objects_of_class(value)), default=0)

    def assignment_cell(self, name: str) -> int | None:
        """The last cell that binds ``name`` at top level (for the review and messages)."""
        if name not in self._assignment_cells:
            self._assignment_cells[name] = self.history.assignment_cell(name)
        return self._assignment_cells[name]


def _defines(source: str, name: str) -> bool:
    """Does ``source`` define ``name`` at top level: a def or class, or ``name = lambda ...`` alone?"""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return False
    if (len(tree.body) == 1 and isinstance(tree.body[0], ast.Assign) and isinstance(tree.body[0].value, ast.Lambda)
            and [getattr(t, "id", None) for t in tree.body[0].targets] == [name]):
        return True
    return any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name
               for node in tree.body)


def _definition_in_file(filename: str, name: str, line: int | None = None) -> str | None:
    """The last top-level definition of ``name`` in a compiled file that linecache still holds."""
    return definition_source("".join(linecache.getlines(filename)), name, line)


# --- the notebook folder's own modules ----------------------------------------------------------


@cache
def _site_dirs() -> tuple[str, ...]:
    import site
    import sysconfig

    dirs = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs |= set(site.getsitepackages()) | {site.getusersitepackages()}
    return tuple(str(Path(d).resolve()) for d in dirs if d)


def local_module_path(module: str) -> Path | None:
    """The file or package folder of an imported module that no installed distribution provides."""
    if module in sys.stdlib_module_names or module in sys.builtin_module_names:
        return None
    loaded = sys.modules.get(module)
    if loaded is None:  # imported only when a function body runs: where it would be found, not importing it
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        loaded = types.SimpleNamespace(__file__=spec.origin if spec.has_location else None,
                                       __path__=spec.submodule_search_locations)
    file = getattr(loaded, "__file__", None)
    if file is None:  # a namespace package (a folder without __init__.py): its one folder
        folders = list(getattr(loaded, "__path__", None) or [])
        if len(folders) != 1 or not Path(folders[0]).is_dir():
            return None
        file = str(Path(folders[0]) / "__init__.py")
    if not file.endswith(".py"):
        return None
    path = Path(file).resolve()
    if any(str(path).startswith(d + "/") for d in _site_dirs()):
        return None
    from importlib import metadata

    if module in metadata.packages_distributions():
        return None  # an editable install of a real distribution: pinned, not copied
    return path.parent if path.name == "__init__.py" else path


def changed_module_constants(modules: dict[str, Path]) -> list[str]:
    """Constants of the notebook folder's own modules that the notebook changed after importing them
    (``feats.SCALE = 6.0``): the service imports the module's file, so it would run with the file's value.
    Each as "module.NAME is X in the notebook but Y in its file". Single-file modules only."""
    found = []
    for module, path in sorted(modules.items()):
        live = sys.modules.get(module)
        if live is None or not path.is_file():
            continue
        fresh = types.ModuleType(module)
        fresh.__file__ = str(path)
        try:
            exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), fresh.__dict__)
        except Exception:  # noqa: BLE001 - a module that cannot run again here is left to verify
            continue
        for name, value in vars(fresh).items():
            literal = None if name.startswith("__") else constant_source(value)
            if literal is None or not hasattr(live, name):
                continue
            now = constant_source(getattr(live, name)) or f"a {type(getattr(live, name)).__name__}"
            if now != literal:
                found.append(f"{module}.{name} is {now} in the notebook but {literal} in {path.name}")
    return found


def local_module_files(module: str, path: Path) -> dict[str, str]:
    """Relative path under app/local/ -> source, for a module file or a package folder."""
    if path.is_file():
        return {f"{module}.py": path.read_text(encoding="utf-8")}
    return {
        str(Path(module) / file.relative_to(path)): file.read_text(encoding="utf-8")
        for file in sorted(path.rglob("*.py"))
        if "__pycache__" not in file.parts
    }


def imported_modules(path: Path) -> set[str]:
    """Top-level modules a local module or package imports (absolute imports only)."""
    files = [path] if path.is_file() else list(path.rglob("*.py"))
    found: set[str] = set()
    for file in files:
        try:
            tree = ast.parse(file.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module.split(".")[0])
    return found
