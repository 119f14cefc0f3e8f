"""Service pins are resolved for the container (Linux x86-64), whatever platform the kernel ran on.

The index is a folder of wheels made here (find-links, --no-index, UV_OFFLINE): uv resolves for real and
nothing is downloaded. The demo distributions' markers differ by platform the way colorama (Windows only)
and pexpect (all but Windows) do for click and IPython.
"""

from __future__ import annotations

import importlib.metadata
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement as PackagingRequirement

from jupyter_mlship.capture.environment import PipIndexSettings, capture_requirements
from jupyter_mlship.capture.target import TARGET_MARKER, pins_for_target, service_requirements
from jupyter_mlship.spec import Requirement

WINDOWS = {"sys_platform": "win32", "platform_system": "Windows", "platform_machine": "AMD64", "os_name": "nt"}
MACOS = {"sys_platform": "darwin", "platform_system": "Darwin", "platform_machine": "arm64", "os_name": "posix"}
LINUX = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix"}


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    """A minimal pure-Python wheel whose metadata declares ``requires``."""
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    files = {
        f"{dist}/__init__.py": "",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                            + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: mlship-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{dist}-{version}-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)


@pytest.fixture
def wheels(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    make_wheel(folder, "mlship-demo-app", "1.0", ("mlship-demo-common>=1", 'mlship-demo-win ; sys_platform == "win32"',
                                                  'mlship-demo-posix ; sys_platform != "win32"',
                                                  "jupyter-mlship-demo-widget"))  # a notebook front end
    make_wheel(folder, "jupyter-mlship-demo-widget", "1.0", ("mlship-demo-widget-dep",))
    make_wheel(folder, "mlship-demo-widget-dep", "1.0")
    for version in ("1.0", "2.0"):  # the kernel ran 1.0; a resolver left alone would pick 2.0
        make_wheel(folder, "mlship-demo-common", version)
    make_wheel(folder, "mlship-demo-win", "1.0")
    make_wheel(folder, "mlship-demo-posix", "1.0")
    monkeypatch.setenv("MLSHIP_PIN_CACHE", str(tmp_path / "pins"))
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    return folder


def local(folder: Path) -> PipIndexSettings:
    return PipIndexSettings(no_index=True, find_links=[str(folder)])


def pin(name: str, version: str = "1.0", because: str = "app") -> Requirement:
    return Requirement(name=name, version=version, because=[because])


# What capture_requirements gives in a Windows kernel that imports mlship_demo_app (notebook front ends,
# such as jupyter-mlship-demo-widget, are left out of a service's pins).
WINDOWS_KERNEL = [pin("mlship-demo-app", because="mlship_demo_app"), pin("mlship-demo-common"), pin("mlship-demo-win")]


def installed_on(lines: list[str], environment: dict[str, str]) -> set[str]:
    """What pip would install from these requirement lines on a platform."""
    chosen = set()
    for line in lines:
        requirement = PackagingRequirement(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            chosen.add(f"{requirement.name}{requirement.specifier}")
    return chosen


def test_windows_kernel_pins_come_out_right_for_linux_and_for_the_kernel(wheels):
    pins = pins_for_target(WINDOWS_KERNEL[:1], WINDOWS_KERNEL, "3.11.7", local(wheels), WINDOWS)
    assert pins.resolved and pins.warnings == []
    lines = [r.line for r in pins.requirements]
    assert lines == [
        "mlship-demo-app==1.0",
        "mlship-demo-common==1.0",  # held at the kernel's version, not the newest
        f"mlship-demo-posix==1.0 ; {TARGET_MARKER}",  # the container needs it, the Windows kernel did not
        'mlship-demo-win==1.0 ; sys_platform == "win32"',  # the kernel needs it, the container does not
    ]
    posix = next(r for r in pins.requirements if r.name == "mlship-demo-posix")
    assert posix.because == ["mlship-demo-app"]
    assert installed_on(lines, LINUX) == {"mlship-demo-app==1.0", "mlship-demo-common==1.0", "mlship-demo-posix==1.0"}
    assert installed_on(lines, WINDOWS) == {"mlship-demo-app==1.0", "mlship-demo-common==1.0", "mlship-demo-win==1.0"}


def test_macos_kernel_pins_gain_the_linux_only_dependency(wheels):
    kernel = [pin("mlship-demo-app", because="mlship_demo_app"), pin("mlship-demo-common"), pin("mlship-demo-posix")]
    pins = pins_for_target(kernel[:1], kernel, "3.11.7", local(wheels), MACOS)
    assert [r.line for r in pins.requirements] == ["mlship-demo-app==1.0", "mlship-demo-common==1.0",
                                                   "mlship-demo-posix==1.0"]  # same on both: no markers


def test_resolutions_are_cached_by_their_inputs(wheels, tmp_path):
    first = pins_for_target(WINDOWS_KERNEL[:1], WINDOWS_KERNEL, "3.11.7", local(wheels), WINDOWS)
    assert len(list((tmp_path / "pins").glob("*.txt"))) == 1
    for wheel in wheels.iterdir():  # the index is gone: only the cache can answer now
        wheel.unlink()
    again = pins_for_target(WINDOWS_KERNEL[:1], WINDOWS_KERNEL, "3.11.2", local(wheels), WINDOWS)
    assert again.resolved and again.requirements == first.requirements  # same X.Y: same resolution
    other = pins_for_target(WINDOWS_KERNEL[:1], WINDOWS_KERNEL, "3.12.1", local(wheels), WINDOWS)
    assert not other.resolved  # another Python is another resolution, and it cannot be made offline


def test_an_index_without_the_pins_keeps_the_kernels_pins_and_warns(wheels, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    pins = pins_for_target(WINDOWS_KERNEL[:1], WINDOWS_KERNEL, "3.11.7", local(empty), WINDOWS)
    assert not pins.resolved and pins.requirements == WINDOWS_KERNEL
    assert len(pins.warnings) == 1
    warning = pins.warnings[0]
    assert "not resolved for Linux x86-64" in warning and "mlship-demo-app" in warning and "win32" in warning


def test_without_uv_the_kernels_pins_are_kept_with_a_warning(wheels, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "uv", None)  # as if the uv package were not installed...
    monkeypatch.setenv("PATH", str(tmp_path))  # ...nor a uv on PATH
    pins = pins_for_target(WINDOWS_KERNEL[:1], WINDOWS_KERNEL, "3.11.7", local(wheels), WINDOWS)
    assert not pins.resolved and pins.requirements == WINDOWS_KERNEL
    assert "uv is not installed" in pins.warnings[0]


def test_kernel_pins_follow_the_markers_of_the_platform_they_are_read_for():
    """click needs colorama on Windows only: the closure of the installed metadata says so."""
    if "colorama" not in {r.name for r in capture_requirements([], ["click"], environment=WINDOWS)}:
        pytest.fail("click's metadata should require colorama on Windows")
    assert "colorama" not in {r.name for r in capture_requirements([], ["click"], environment=LINUX)}


def test_service_requirements_resolve_installed_modules(tmp_path, monkeypatch):
    """The real path from installed modules to pins: six, found in the kernel, resolved from a local wheel."""
    version = importlib.metadata.version("six")
    folder = tmp_path / "wheels"
    folder.mkdir()
    make_wheel(folder, "six", version)
    monkeypatch.setenv("MLSHIP_PIN_CACHE", str(tmp_path / "pins"))
    monkeypatch.setenv("UV_OFFLINE", "1")
    pins = service_requirements(["six"], "3.11.7", local(folder))
    assert pins.resolved, pins.warnings
    assert [r.line for r in pins.requirements] == [f"six=={version}"]
    assert pins.requirements[0].because == ["six"]
