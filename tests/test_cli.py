"""The shell side: `jupyter nbconvert --to mlship`, `mlship verify`, `mlship serve`."""

from __future__ import annotations

import json
import subprocess
import sys

from nbconvert.exporters import get_export_names

from support.notebooks import Service, mlship, write_notebook

CELLS = [
    "%load_ext jupyter_mlship",
    "import numpy as np\nfrom sklearn.linear_model import LinearRegression\n"
    "X = np.random.default_rng(0).normal(size=(20, 2))\nreg = LinearRegression().fit(X, X @ [1.5, -2.0] + 3)",
    "%ship lin --model reg --sample X[:5] --out elsewhere",
]


def test_nbconvert_exporter_runs_the_same_export(tmp_path):
    assert "mlship" in get_export_names()  # what JupyterLab's "Save and Export Notebook As" lists
    notebook = write_notebook(tmp_path / "lin.ipynb", CELLS)
    result = subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "mlship",
         f"--MlshipExporter.out_dir={tmp_path / 'services'}", str(notebook)],
        cwd=tmp_path, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr
    project = tmp_path / "services" / "lin"
    assert json.loads((project / "ship.json").read_text())["name"] == "lin"
    assert not (tmp_path / "elsewhere").exists()  # --out of the exporter overrides the cell's
    report = (tmp_path / "lin.mlship.md").read_text()
    assert "**lin**: ok" in report and "# Review: lin" in report


def test_nbconvert_exporter_fails_loudly(tmp_path):
    notebook = write_notebook(tmp_path / "bad.ipynb", CELLS[:2] + ["%ship lin --model nope --sample X[:5]"])
    result = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "mlship", str(notebook)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0 and "`nope` is not defined" in result.stderr
    assert not (tmp_path / "bad.mlship.md").exists()


def test_verify_and_serve_an_exported_project(tmp_path):
    notebook = write_notebook(tmp_path / "lin.ipynb", CELLS)
    assert mlship("export", str(notebook), "--out", str(tmp_path / "out"), cwd=tmp_path).returncode == 0
    project = tmp_path / "out" / "lin"
    verified = mlship("verify", str(project))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "passed" in verified.stdout

    service = Service(project, command=lambda port: [sys.executable, "-m", "jupyter_mlship.cli", "serve",
                                                      str(project), "--port", str(port)])
    try:
        answer = service.post("/predict", {"instances": [[1.0, 1.0], [10.0, 0.0]]}).json()
        assert [round(p, 6) for p in answer["predictions"]] == [2.5, 18.0]
    finally:
        service.stop()

    (project / "model" / "reg.skops").write_bytes(b"tampered")
    broken = mlship("verify", str(project))
    assert broken.returncode != 0


def test_verify_and_serve_refuse_a_folder_that_is_not_a_project(tmp_path):
    assert mlship("serve", str(tmp_path)).returncode != 0
    result = mlship("verify", str(tmp_path))
    assert result.returncode != 0 and str(tmp_path) in (result.stdout + result.stderr)


def test_a_failed_export_shows_what_the_ship_cell_printed(tmp_path, monkeypatch, capsys):
    """A failed verify prints the failing tests in the cell; `mlship export` passes them on to the terminal."""
    import nbformat

    from jupyter_mlship import cli, headless
    from jupyter_mlship.errors import ShipError

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("print('training')", outputs=[nbformat.v4.new_output("stream", text="training\n")]),
        nbformat.v4.new_code_cell("%%ship m --sample X\ndef predict(x):\n    return x", outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="FAILED tests/test_golden.py::test_golden - ValueError: boom\n")]),
    ])
    assert headless._printed(nb, 1).startswith("FAILED tests/test_golden.py") and headless._printed(nb, 0) == ""

    def failing_export(*args, **kwargs):
        raise ShipError("cell 2 failed: the generated project's tests failed", output=headless._printed(nb, 1))

    monkeypatch.setattr(headless, "export_notebook", failing_export)
    notebook = write_notebook(tmp_path / "m.ipynb", ["x = 1"])
    assert cli.main(["export", str(notebook)]) == 1
    err = capsys.readouterr().err
    assert "ValueError: boom" in err and err.index("ValueError: boom") < err.index("mlship export: cell 2 failed")
