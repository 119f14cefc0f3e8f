"""Ship a model trained on the GPU and check that the service runs it there (issue 13's real check).

Runs on any machine with torch; on a CUDA machine it is the GPU check, elsewhere (or with DEVICE=cpu)
the same steps run on the CPU and the report says "no GPU". Steps, all real:

1. an IPython InteractiveShell (no kernel needed) trains a small nn.Module on DEVICE;
2. the natural cell of issue 13 ships it with ``%%ship moons-gpu --sample X_test[:4] --no-verify``
   (the entry names DEVICE itself: the loader must put the model back on it);
3. uvicorn serves the project; /version says where the model is, and on CUDA nvidia-smi must list the
   server's process;
4. the served predictions on a hold-out must equal the notebook's, and the latency of requests of 1 and
   200 rows is measured (median of N requests) with the server's resident memory;
5. the project's own tests (its golden test among them) run with pytest, on the GPU where there is one.

Usage (from the repository root, jupyter_mlship importable):
    python scripts/gpu_check.py [--workdir DIR] [--json REPORT.json] [--requests 50]
Needs torch, numpy, IPython, fastapi, pydantic, uvicorn, prometheus_client, cookiecutter (see docs/gpu.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT = 180.0

TRAIN = """
import os
import numpy as np
import torch
from torch import nn

DEVICE = os.environ.get("DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
torch.manual_seed(0)
rng = np.random.default_rng(0)
# Two interleaved half-moons, made by hand (no scikit-learn needed).
n = 2000
angle = rng.uniform(0, np.pi, n)
label = rng.integers(0, 2, n)
X = np.stack([np.cos(angle) + label * 1.0, np.sin(angle) * (1 - 2 * label) + label * 0.5], axis=1)
X = (X + rng.normal(scale=0.1, size=X.shape)).astype("float32")
y = label.astype("int64")
X_train, y_train, X_test = X[:1600], y[:1600], X[1600:]


class MoonNet(nn.Module):
    def __init__(self, n_in=2, hidden=64):
        super().__init__()
        self.n_in, self.hidden = n_in, hidden
        self.body = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                  nn.Linear(hidden, 2))

    def forward(self, x):
        return self.body(x)


net = MoonNet().to(DEVICE)
optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
features = torch.as_tensor(X_train, device=DEVICE)
targets = torch.as_tensor(y_train, device=DEVICE)
for _ in range(200):
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(net(features), targets)
    loss.backward()
    optimizer.step()
net.eval()
"""

# Issue 13's natural cell, as a user writes it on a GPU machine.
SHIP = """
%%ship moons-gpu --sample X_test[:4] --no-verify --out {out}
def predict(x):
    with torch.no_grad():
        return net(torch.as_tensor(x, dtype=torch.float32, device=DEVICE)).argmax(1).cpu().numpy()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, body: object = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def run_cell(shell, source: str) -> None:
    result = shell.run_cell(textwrap.dedent(source).strip("\n"), store_history=True)
    if not result.success:
        raise SystemExit(f"gpu_check: a cell failed: {result.error_in_exec or result.error_before_exec!r}")


def notebook(workdir: Path) -> tuple[Path, list, list, str, bool]:
    """Train and ship in a real IPython shell; (project, hold-out rows, their predictions, device, gpu?)."""
    from IPython.core.interactiveshell import InteractiveShell

    os.chdir(workdir)
    shell = InteractiveShell.instance()
    run_cell(shell, "%load_ext jupyter_mlship")
    run_cell(shell, TRAIN)
    run_cell(shell, SHIP.format(out=workdir / "services"))
    holdout = shell.user_ns["X_test"][:200]
    expected = shell.user_ns["predict"](holdout).tolist()
    device = shell.user_ns["DEVICE"]
    gpu = bool(shell.user_ns["torch"].cuda.is_available())
    return workdir / "services" / "moons-gpu", holdout.tolist(), expected, device, gpu


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def gpu_process_seen(pid: int) -> bool | None:
    """Does nvidia-smi list the server's process (None: no nvidia-smi here)?"""
    if not shutil.which("nvidia-smi"):
        return None
    done = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"],
                          capture_output=True, text=True, timeout=30)
    return str(pid) in done.stdout.split()


def serve_and_measure(project: Path, holdout: list, expected: list, requests: int) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (project.parent / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)],
                              cwd=project, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        ready = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                ready = http("GET", f"{base}/readyz")
                break
            except OSError:
                time.sleep(0.3)
        if ready is None or ready[0] != 200:
            raise SystemExit(f"gpu_check: the service is not ready: {ready}; log: {project.parent / 'server.log'}")
        devices = http("GET", f"{base}/version")[1]["devices"]
        status, body = http("POST", f"{base}/predict", {"instances": holdout})
        if status != 200:
            raise SystemExit(f"gpu_check: /predict answered {status}: {body}")
        latency = {}
        for rows in (1, 200):
            payload = {"instances": holdout[:rows]}
            for _ in range(10):  # warm-up: thread pools, allocator, CUDA kernels' first launch
                http("POST", f"{base}/predict", payload)
            times = []
            for _ in range(requests):
                started = time.perf_counter()
                http("POST", f"{base}/predict", payload)
                times.append((time.perf_counter() - started) * 1000)
            latency[str(rows)] = round(statistics.median(times), 3)
        return {"devices": devices, "predictions_equal": body["predictions"] == expected, "latency_ms": latency,
                "server_rss_mib": rss_mib(server.pid), "gpu_process_seen": gpu_process_seen(server.pid)}
    finally:
        server.terminate()
        server.wait(15)
        log.close()


def project_tests(project: Path) -> dict:
    """The exported project's own tests (the golden test among them), run where the check runs: on the GPU
    when there is one. Counts from pytest's summary line."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project,
                          capture_output=True, text=True, timeout=600)
    summary = (done.stdout.strip().splitlines() or [""])[-1]
    counts = {word: int(number) for number, word in
              (part.split()[:2] for part in summary.split(" in ")[0].split(", ") if part[:1].isdigit())}
    return {"tests_passed": counts.get("passed", 0), "tests_failed": counts.get("failed", 0) + counts.get("error", 0)
            + counts.get("errors", 0), "tests_ok": done.returncode == 0, "tests_summary": summary}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, help="where the project is written (default: a temp folder)")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--requests", type=int, default=50, help="requests per latency figure (median)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="mlship-gpu-check-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    project, holdout, expected, device, gpu = notebook(workdir)
    ship = json.loads((project / "ship.json").read_text())
    measured = serve_and_measure(project, holdout, expected, args.requests)
    tests = project_tests(project)
    served_on = measured["devices"]["net"]["device"]
    report = {
        "gpu": gpu,
        "trained_on": device,
        "recorded_device": ship["artifacts"][0]["device"],
        "artifact_format": ship["artifacts"][0]["format"],
        "served_on": served_on,
        "served_on_gpu": served_on.startswith("cuda"),
        **{k: v for k, v in measured.items() if k != "devices"},
        **tests,
        "torch": __import__("torch").__version__,
        "seconds": round(time.monotonic() - started, 1),
        "project": str(project),
    }
    print("GPU check" + ("" if gpu else " (no GPU: ran on the CPU)"))
    print(f"  trained on {device}; artifact {report['artifact_format']} recorded on {report['recorded_device']}")
    print(f"  served on the GPU: {'yes' if report['served_on_gpu'] else 'no'} ({served_on})"
          + ("" if report["gpu_process_seen"] is None else f"; nvidia-smi lists the server: {report['gpu_process_seen']}"))
    print(f"  predictions equal on {len(holdout)} hold-out rows: {'yes' if report['predictions_equal'] else 'NO'}")
    print(f"  latency (median of {args.requests}): 1 row {report['latency_ms']['1']} ms, "
          f"200 rows {report['latency_ms']['200']} ms; server RSS {report['server_rss_mib'] or 0:.0f} MiB")
    print(f"  the project's tests (golden test among them): {tests['tests_summary']}")
    print(f"  torch {report['torch']}, {report['seconds']} s in all")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    ok = (report["predictions_equal"] and report["tests_ok"]
          and report["served_on_gpu"] == (gpu and device.startswith("cuda")))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
