"""What the generated tests did, read from pytest's JUnit XML report (structured, unlike its text output)."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class TestReport:
    """Counts of one pytest run and the ids of the tests that failed or errored."""

    __test__ = False  # not a pytest test class despite its name

    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    failures: list[str] = field(default_factory=list)  # e.g. "tests/test_api.py::test_predict"
    problem: str | None = None  # set when no report could be read (pytest did not run or crashed)


def read_junit_xml(path: Path, project: Path) -> TestReport:
    """Counts from a `pytest --junit-xml` file; ``problem`` says why when the file is missing or unreadable."""
    try:
        root = ElementTree.parse(path).getroot()
    except FileNotFoundError:
        return TestReport(problem="pytest wrote no report (it did not start, or it crashed)")
    except (OSError, ElementTree.ParseError) as exc:
        return TestReport(problem=f"pytest's report could not be read: {exc}")
    report = TestReport()
    for case in root.iter("testcase"):
        outcome = next((child.tag for child in case if child.tag in {"failure", "error", "skipped"}), None)
        if outcome is None:
            report.passed += 1
        elif outcome == "skipped":
            report.skipped += 1
        else:
            report.failed += outcome == "failure"
            report.errors += outcome == "error"
            report.failures.append(_node_id(case.get("classname", ""), case.get("name", ""), project))
    # Errors outside any test (e.g. a module that does not import) are counted on the suite only.
    reported = sum(int(suite.get("errors", 0)) for suite in root.iter("testsuite"))
    report.errors = max(report.errors, reported)
    return report


def _node_id(classname: str, name: str, project: Path) -> str:
    """pytest's node id from JUnit's dotted classname: the longest prefix that is a file is the module."""
    if not classname:  # a module that failed to import: pytest names the module itself
        classname, name = name, ""
    parts = [part for part in classname.split(".") if part]
    for cut in range(len(parts), 0, -1):
        module = Path(*parts[:cut]).with_suffix(".py")
        if (project / module).is_file():
            return "::".join([module.as_posix(), *parts[cut:], *([name] if name else [])])
    return "::".join([*parts, *([name] if name else [])])
