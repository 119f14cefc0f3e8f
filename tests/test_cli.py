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
