"""A real JupyterLab with the Ship panel, driven by Debian's Chromium through Playwright.

The server runs with a temporary HOME and JUPYTER_* folders (so export history, settings and
workspaces are the test's own), the lab extension built in this checkout, and the server extension
enabled by config. It is stopped by the PID this fixture started.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
BUILT_EXTENSION = REPO / "jupyter_mlship" / "labextension"
ARTIFACTS = Path(os.environ.get("MLSHIP_TEST_ARTIFACTS", REPO / "test-artifacts")) / "screenshots"


def _skip_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Python playwright is not installed (pip install playwright; never `playwright install`)"
    if not CHROMIUM.exists():
        return "/usr/bin/chromium is missing (apt-get install -y chromium)"
    if not (BUILT_EXTENSION / "package.json").is_file():
        return "the lab extension is not built (jlpm install && jlpm build:prod)"
    return None


def pytest_collection_modifyitems(config, items):
    reason = _skip_reason()
    if reason is None:
        return
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    history: Path
    registry: Path
    log: Path

    def lab_url(self, path: str = "") -> str:
        return f"{self.url}/lab/{path}?reset&token={self.token}"


@pytest.fixture(scope="session")
def screenshots_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the Ship panel: {ARTIFACTS}")
    return ARTIFACTS


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Lab:
    base = tmp_path_factory.mktemp("lab")
    root, home, config, data, runtime, share = (base / d for d in ("root", "home", "config", "data", "runtime", "share"))
    for folder in (root, home, config, data, runtime, share / "labextensions"):
        folder.mkdir(parents=True)
    # This checkout's build, whatever is installed in site-packages.
    (share / "labextensions" / "jupyter-mlship").symlink_to(BUILT_EXTENSION, target_is_directory=True)
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"jupyter_mlship.server": True}}}))
    # No "get notified about news?" toast over the panel in screenshots.
    (config / "labconfig").mkdir()
    (config / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))

    # Notebooks start their own kernel, without the "Select Kernel" dialog.
    tracker = config / "lab" / "user-settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"autoStartDefaultKernel": True}))

    real_home = Path.home()
    token = secrets.token_hex(16)
    port = _free_port()
    history = base / "history.jsonl"
    env = {
        **os.environ,
        "HOME": str(home),
        "JUPYTER_CONFIG_DIR": str(config),
        "JUPYTER_DATA_DIR": str(data),
        "JUPYTER_RUNTIME_DIR": str(runtime),
        "JUPYTER_PATH": str(share),
        "JUPYTERLAB_SETTINGS_DIR": str(config / "lab" / "user-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(config / "lab" / "workspaces"),
        "MLSHIP_HISTORY": str(history),
        "MLSHIP_REGISTRY": str(base / "registry"),  # the server's registry handlers use this test's own
        # Package caches stay shared: a clean environment for verify should not re-download everything.
        "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", str(real_home / ".cache")),
        "UV_CACHE_DIR": os.environ.get("UV_CACHE_DIR", str(real_home / ".cache" / "uv")),
        "PIP_CACHE_DIR": os.environ.get("PIP_CACHE_DIR", str(real_home / ".cache" / "pip")),
    }
    env.pop("MLSHIP_NOTEBOOK", None)
    # With podman here, the panel's Build image builds for real, on the local base image (no registry).
    from support.images import ensure_base_image, missing_tools

    if missing_tools() is None:
        env["MLSHIP_BASE_IMAGE"] = ensure_base_image()
    log = base / "jupyter-lab.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", "--allow-root", "--no-browser", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
             f"--ServerApp.root_dir={root}"],
            env=env, cwd=root, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # its kernels are in its process group, so the group can be ended
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_for_status(url, token, process, log)
        yield Lab(url=url, token=token, root=root, history=history, registry=base / "registry", log=log)
    finally:
        _stop(process)
        print(f"\njupyter lab log: {log}")


def _wait_for_status(url: str, token: str, process: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {token}"})
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"jupyter lab exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"jupyter lab did not answer /api/status in {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()  # the server shuts its kernels down on SIGTERM
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # anything of this server's group still alive
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


@pytest.fixture
def page(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            viewport={"width": 1400, "height": 900},
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"],
        )
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(30_000)
        try:
            yield page
        finally:
            context.close()

