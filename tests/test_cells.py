"""Cell attribution: each captured name is credited to the cell (In[n]) that made the live object."""

from __future__ import annotations

import ast

from support.notebooks import ok_cell

from jupyter_mlship.capture.cells import CellHistory, bound_names
from jupyter_mlship.capture.code import CodeWalker


def history(shell) -> CellHistory:
    return CellHistory.from_shell(shell)


def cell_numbers(shell) -> dict[str, int]:
    """Execution count of each cell run so far, read from the shell's own input history."""
    return {source: n for n, source in enumerate(shell.history_manager.input_hist_raw)}


def test_a_redefinition_is_credited_to_the_cell_that_made_the_live_function(ipython):
    ok_cell(ipython, "def scale(v):\n    return v * 10")
    ok_cell(ipython, "def other(v):\n    return v")
    ok_cell(ipython, "def scale(v):\n    return v * 100")
    redefined = ipython.execution_count - 1
    cells = history(ipython)
    assert cells.cell_of_code(ipython.user_ns["scale"].__code__) == redefined
    assert cells.cell_of_code(ipython.user_ns["other"].__code__) == redefined - 1


def test_cells_with_magics_and_shell_lines_still_attribute_their_definitions(ipython):
    ok_cell(ipython, "%time warm = 1\n!true\ndef helper(x):\n    return x + 1\nTHRESHOLD = 0.5")
    cell = ipython.execution_count - 1
    cells = history(ipython)
    assert cells.cell_of_code(ipython.user_ns["helper"].__code__) == cell
    assert cells.definition_in_history("helper") == ("def helper(x):\n    return x + 1\n", cell)
    assert cells.assignment_cell("THRESHOLD") == cell


def test_cells_run_out_of_order_credit_the_last_run(ipython):
    ok_cell(ipython, "RATE = 1")
    ok_cell(ipython, "def price(x):\n    return x * RATE")
    ok_cell(ipython, "RATE = 2  # the first cell edited and run again, after the second")
    last = ipython.execution_count - 1
    walker = CodeWalker(ipython.user_ns, history(ipython))
    captured = walker.capture("price", ipython.user_ns["price"])
    assert captured.constants["RATE"] == "2"
    assert captured.cells["RATE"] == last
    assert captured.cells["price"] == last - 1


def test_a_ship_cells_own_functions_belong_to_the_ship_cell(ipython):
    ok_cell(ipython, """
        import numpy as np
        def double(x):
            return np.asarray(x) * 2
        X = np.ones((3, 2))
    """)
    ok_cell(ipython, """
        %%ship twice --sample X --dry-run
        def predict(x):
            return double(x).sum(axis=1)
    """)
    ship_cell = ipython.execution_count - 1
    cells = history(ipython)
    assert cells.cell_of_code(ipython.user_ns["double"].__code__) == ship_cell - 1
    assert cells.definition_in_history("predict")[1] == ship_cell


def test_bound_names_reads_only_module_level_bindings():
    tree = ast.parse(
        "import os.path\nfrom a import b as c\nfor i in range(3): pass\nwith open('f') as fh: pass\n"
        "squares = [k * k for k in range(3)]\n(walrus := 1)\ndef f():\n    local = 1\nclass K:\n    attr = 1\n"
    )
    assert bound_names(tree) == {"os", "c", "i", "fh", "squares", "walrus", "f", "K"}
