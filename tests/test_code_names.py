"""global_names: the globals a piece of notebook code needs, read from its bytecode (nested code included)."""

from __future__ import annotations

from jupyter_mlship.capture.code import global_names


def names_of(source: str, function: str | None = None) -> set[str]:
    """global_names of a cell's code, or of the function ``function`` that the cell defines."""
    code = compile(source, "<cell>", "exec")
    if function is None:
        return global_names(code)
    namespace: dict = {}
    exec(code, {"__builtins__": __builtins__}, namespace)
    return global_names(namespace[function].__code__)


def test_globals_and_builtins_but_not_parameters_locals_or_attributes():
    names = names_of("def f(x):\n    y = np.linalg.norm(x)\n    return len(x) + y * scale\n", "f")
    assert names == {"np", "len", "scale"}  # not x, y, nor the attributes linalg and norm


def test_nested_functions_lambdas_comprehensions_and_generators():
    source = (
        "def f(rows):\n"
        "    def inner(v):\n        return OFFSET + v\n"
        "    key = lambda r: r[COLUMN]\n"
        "    picked = [inner(r) for r in sorted(rows, key=key) if r > LIMIT]\n"
        "    return sum(v * WEIGHT for v in picked)\n"
    )
    assert names_of(source, "f") == {"OFFSET", "COLUMN", "sorted", "LIMIT", "sum", "WEIGHT"}


def test_closure_variables_are_not_globals():
    source = "def outer():\n    k = 1\n    def inner():\n        return k + G\n    return inner\n"
    assert names_of(source, "outer") == {"G"}


def test_declared_globals_that_are_written_or_deleted():
    source = "def f():\n    global counter, cache\n    counter = counter + 1\n    del cache\n"
    assert names_of(source, "f") == {"counter", "cache"}


def test_methods_of_a_class_defined_in_a_cell():
    source = ("class Scaler:\n    factor = DEFAULT\n"
              "    def apply(self, x):\n        return helper(x) * self.factor\n")
    assert {"DEFAULT", "helper"} <= names_of(source)


def test_module_level_cell_code_reads_names():
    assert {"model", "X", "print"} <= names_of("prediction = model.predict(X)\nprint(prediction)\n")
