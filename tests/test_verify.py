"""verify_project builds real clean environments (uv, else pip) from a project's pins and runs its tests."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from jupyter_mlship.capture.environment import test_requirements
from jupyter_mlship.verify import (
    MARKER,
    VerifyError,
    environment_key,
    main_verify,
    verify_project,
)
from jupyter_mlship.verify.results import read_junit_xml

PASSING = "import six\n\n\ndef test_six():\n    assert six.PY3\n\n\ndef test_more():\n    assert six.__version__\n"
FAILING = ("import six\n\n\ndef test_ok():\n    assert six.PY3\n\n\n"
           "def test_wrong():\n    assert six.PY2, 'six says PY2 is false'\n")


@pytest.fixture(scope="module")
def env_cache(tmp_path_factory):
    """One cache for this module's tests: independent of the user's cache, shared so reuse stays fast."""
    cache = tmp_path_factory.mktemp("env-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLSHIP_ENV_CACHE", str(cache))
        yield cache
    shutil.rmtree(cache, ignore_errors=True)  # environments are large (torch): don't keep them around


def make_project(root: Path, tests: str = PASSING, requirements: list[str] | None = None,
                 test_pins: list[str] | None = None) -> Path:
    (root / "tests").mkdir(parents=True)
    pins = requirements if requirements is not None else [f"six=={importlib.metadata.version('six')}"]
    (root / "requirements.txt").write_text("".join(f"{line}\n" for line in pins))
    test_lines = test_pins if test_pins is not None else [r.line for r in test_requirements()]
    (root / "requirements-test.txt").write_text("".join(f"{line}\n" for line in test_lines))
    (root / "tests" / "test_x.py").write_text(tests)
    return root


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_passing_project_then_reused_environment(tmp_path, env_cache):
    project = make_project(tmp_path / "svc")
    before = tree(project)
    lines: list[str] = []
    steps: list[tuple[str, str]] = []
    first = verify_project(project, on_line=lines.append, on_step=lambda s, status, sec: steps.append((s, status)))
    assert first.passed, first.output
    assert (first.tests_passed, first.tests_failed) == (2, 0)
    assert not first.reused_environment
    assert first.installer in {"uv", "pip"}
    assert Path(first.environment).parent == env_cache
    assert (Path(first.environment) / MARKER).is_file()
    assert steps == [("environment", "running"), ("environment", "done"), ("tests", "running"), ("tests", "done")]
    assert any("2 passed" in line for line in lines) and "2 passed" in first.output
    assert tree(project) == before  # no __pycache__ or .pytest_cache left in the project

    # The clean environment has the pins and nothing of the current one.
    venv_python = Path(first.environment) / "bin" / "python"
    probe = subprocess.run([str(venv_python), "-c", "import sys, six; print(sys.prefix); import jupyter_mlship"],
                           capture_output=True, text=True, cwd=tmp_path,
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert probe.returncode != 0 and "No module named 'jupyter_mlship'" in probe.stderr
    assert probe.stdout.strip() == first.environment

    steps.clear()
    second = verify_project(project, on_step=lambda s, status, sec: steps.append((s, status)))
    assert second.passed and second.reused_environment
    assert second.environment == first.environment and second.installer == first.installer
    assert ("environment", "reused") in steps
    assert second.seconds < first.seconds


def test_failing_test_is_reported_with_its_output(tmp_path, env_cache):
    result = verify_project(make_project(tmp_path / "svc", tests=FAILING))
    assert not result.passed
    assert (result.tests_passed, result.tests_failed) == (1, 1)
    assert "six says PY2 is false" in result.output
    assert "1 failed, 1 passed" in result.output
    assert result.report.failures == ["tests/test_x.py::test_wrong"]
    assert (result.report.failed, result.report.errors, result.report.skipped) == (1, 0, 0)


MIXED = ("import pytest\nimport six\n\n\n@pytest.fixture\ndef broken():\n    raise RuntimeError('fixture')\n\n\n"
         "def test_ok():\n    assert six.PY3\n\n\ndef test_error(broken):\n    pass\n\n\n"
         "@pytest.mark.skip(reason='not here')\ndef test_skipped():\n    pass\n\n\n"
         "class TestGroup:\n    def test_in_class(self):\n        assert six.PY2\n")


def test_errors_skips_and_classes_come_from_the_junit_report(tmp_path, env_cache):
    result = verify_project(make_project(tmp_path / "svc", tests=MIXED))
    assert not result.passed
    report = result.report
    assert (report.passed, report.failed, report.errors, report.skipped) == (1, 1, 1, 1), result.output
    assert (result.tests_passed, result.tests_failed) == (1, 2)
    assert report.failures == ["tests/test_x.py::test_error", "tests/test_x.py::TestGroup::test_in_class"]

    broken = make_project(tmp_path / "broken", tests="import no_such_module_mlship\n")
    result = verify_project(broken)  # a module that does not import stops pytest before any test runs
    assert not result.passed and (result.tests_passed, result.tests_failed) == (0, 1)
    assert result.report.failures == ["tests/test_x.py"]


def test_a_missing_junit_report_is_a_failure_that_says_why(tmp_path):
    report = read_junit_xml(tmp_path / "nothing.xml", tmp_path)
    assert report.problem and "no report" in report.problem
    (tmp_path / "bad.xml").write_text("<testsuites><testsuite")
    assert "could not be read" in read_junit_xml(tmp_path / "bad.xml", tmp_path).problem


def test_requirement_that_cannot_exist_names_it(tmp_path, env_cache):
    pins = [f"six=={importlib.metadata.version('six')}", "no-such-dist-mlship==1.0"]
    project = make_project(tmp_path / "svc", requirements=pins)
    steps: list[tuple[str, str]] = []
    with pytest.raises(VerifyError) as caught:
        verify_project(project, on_step=lambda s, status, sec: steps.append((s, status)))
    assert "no-such-dist-mlship==1.0" in str(caught.value)
    assert "no-such-dist-mlship" in caught.value.output
    assert steps[-1] == ("environment", "failed")
    # Nothing half-built is left to be reused.
    key = environment_key([project / "requirements.txt", project / "requirements-test.txt"])
    assert not (env_cache / key).exists()
    assert not [p for p in env_cache.iterdir() if ".building-" in p.name]


def test_same_pins_in_other_order_share_one_environment_built_once(tmp_path, env_cache):
    """Two concurrent verifies of equal requirements: one builds under the lock, the other reuses."""
    pins = [f"six=={importlib.metadata.version('six')}", f"packaging=={importlib.metadata.version('packaging')}"]
    one = make_project(tmp_path / "one", requirements=pins)
    two = make_project(tmp_path / "two", requirements=list(reversed(pins)))
    (two / "requirements.txt").write_text("# pinned\n" + (two / "requirements.txt").read_text())
    results = {}

    def run(name, project):
        results[name] = verify_project(project)

    threads = [threading.Thread(target=run, args=(name, p)) for name, p in (("one", one), ("two", two))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results["one"].passed and results["two"].passed
    assert results["one"].environment == results["two"].environment
    assert sorted(r.reused_environment for r in results.values()) == [False, True]


def test_incomplete_environment_is_rebuilt(tmp_path, env_cache):
    project = make_project(tmp_path / "svc")
    first = verify_project(project)
    (Path(first.environment) / MARKER).unlink()  # as if the build had stopped half way
    again = verify_project(project)
    assert again.passed and not again.reused_environment
    assert json.loads((Path(again.environment) / MARKER).read_text())["installer"] == again.installer


def compiled(environment: str, module: str) -> list[Path]:
    return list(Path(environment).glob(f"lib/python*/site-packages/__pycache__/{module}.*.pyc"))


def test_environments_hold_bytecode_and_older_ones_get_it_once(tmp_path, env_cache):
    """The tests run with PYTHONDONTWRITEBYTECODE: libraries without bytecode would compile on every verify."""
    first = verify_project(make_project(tmp_path / "svc"))
    assert compiled(first.environment, "six"), "the new environment holds no bytecode of six"
    assert json.loads((Path(first.environment) / MARKER).read_text())["bytecode"] is True

    for pyc in compiled(first.environment, "six"):  # as if cached by a version that did not compile
        pyc.unlink()
    marker = Path(first.environment) / MARKER
    marker.write_text(json.dumps({k: v for k, v in json.loads(marker.read_text()).items() if k != "bytecode"}))
    lines: list[str] = []
    again = verify_project(make_project(tmp_path / "again"), on_line=lines.append)
    assert again.passed and again.reused_environment and again.environment == first.environment
    assert any("bytecode" in line for line in lines)
    assert compiled(again.environment, "six") and json.loads(marker.read_text())["bytecode"] is True


def test_main_verify_exit_codes(tmp_path, env_cache, capsys):
    assert main_verify(str(make_project(tmp_path / "good"))) == 0
    assert "PASSED: 2 passed" in capsys.readouterr().out
    assert main_verify(str(make_project(tmp_path / "bad", tests=FAILING))) == 1
    out = capsys.readouterr().out
    assert "FAILED: 1 passed, 1 failed" in out and "failed: tests/test_x.py::test_wrong" in out
    assert main_verify(str(tmp_path / "missing")) == 1
    assert "requirements.txt is missing" in capsys.readouterr().err


def test_local_torch_build_is_found_through_the_users_pip_settings(tmp_path, env_cache):
    """torch==2.13.0+cpu exists only behind pip's find-links/extra-index-url; uv must be given them."""
    from jupyter_mlship.capture.environment import capture_requirements

    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("torch is not installed")
    if "+" not in version:
        pytest.skip("torch here is not a local build")
    test = ("import importlib.metadata\n\n\ndef test_torch():\n"
            f"    assert importlib.metadata.version('torch') == {version!r}\n")
    project = make_project(tmp_path / "svc", tests=test, requirements=[r.line for r in capture_requirements(["torch"])])
    result = verify_project(project)
    assert result.passed, result.output
    assert result.installer == "uv"  # the pip fallback was not needed


def test_pip_builds_the_environment_when_asked(tmp_path, env_cache, monkeypatch):
    """The fallback installer, for real: pip reads the user's own configuration."""
    monkeypatch.setenv("MLSHIP_INSTALLER", "pip")
    pins = [f"six=={importlib.metadata.version('six')}", f"idna=={importlib.metadata.version('idna')}"]
    lines: list[str] = []
    result = verify_project(make_project(tmp_path / "svc", requirements=pins), on_line=lines.append)
    assert result.passed, result.output
    assert result.installer == "pip" and not result.reused_environment
    assert any("MLSHIP_INSTALLER=pip" in line for line in lines)
    monkeypatch.delenv("MLSHIP_INSTALLER")
    again = verify_project(make_project(tmp_path / "again", requirements=pins))
    assert again.reused_environment and again.installer == "pip"
    assert compiled(result.environment, "six"), "pip left the environment without bytecode"
