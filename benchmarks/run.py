"""Serving benchmark: the generated service against hand-written FastAPI, a Starlette floor, BentoML, MLflow.

    python benchmarks/run.py                      # 3 interleaved rounds of 5 s per point
    python benchmarks/run.py --rounds 2 --duration 3 --ship-timing

What it does, in order:
1. trains a HistGradientBoostingClassifier on 20 features and a DataFrame pipeline with a feature
   function, in a notebook exported with the real pipeline (`mlship export`);
2. installs every peer in its own venv (uv; cached under ~/.cache/jupyter-mlship/bench-envs). A peer
   whose install fails or takes longer than --install-timeout is skipped with the reason printed;
3. starts each server pinned to one core (taskset) with one worker, `wrk` pinned to another core;
4. checks that every system returns the in-process predictions before anything is timed;
5. runs the measurements in interleaved rounds (the in-process references, such as raw `predict`, are
   measured again before each round) and prints one table of absolute figures and ratios to
   the hand-written service, the targets of issue 11 as ratio lines, and a PNG plot of throughput
   against concurrency (1, 4, 16, 64). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import Peer, peers  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENV_CACHE = Path.home() / ".cache" / "jupyter-mlship" / "bench-envs"
CONCURRENCY = (1, 4, 16, 64)
COLD_STARTS = 5
FLOOR = "HTTP floor (Starlette, constant JSON, uvloop)"
SPIN_OFF = "generated service, idle spinning off (c1 only)"

TRAIN = """
import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

rng = np.random.default_rng(0)
X = rng.normal(size=(5000, 20))
y = (X[:, 0] + X[:, 1] * X[:, 2] - X[:, 3] > 0).astype(int)
clf = HistGradientBoostingClassifier(max_iter=50, random_state=0).fit(X, y)

customers = pd.DataFrame({
    "tenure_months": rng.integers(1, 72, 3000),
    "monthly_fee": rng.normal(45, 12, 3000).round(2),
    "support_calls": rng.poisson(1.5, 3000),
    "plan": rng.choice(["basic", "pro", "team"], 3000),
})
churned = (rng.random(3000) < 0.2 + 0.1 * (customers["plan"] == "basic")).astype(int)

def add_features(frame):
    out = frame.copy()
    out["calls_per_year"] = out["support_calls"] / (out["tenure_months"] / 12)
    out["fee_x_tenure"] = out["monthly_fee"] * out["tenure_months"]
    return out

numeric = ["tenure_months", "monthly_fee", "support_calls", "calls_per_year", "fee_x_tenure"]
pipe = Pipeline([
    ("prep", ColumnTransformer([("num", StandardScaler(), numeric),
                                ("plan", OneHotEncoder(handle_unknown="ignore"), ["plan"])])),
    ("clf", LogisticRegression(max_iter=1000)),
]).fit(add_features(customers), churned)
"""

SHIP_ARRAY = "%ship hgb --model clf --sample X[:50] --reference X --no-verify"
SHIP_FRAME = """%%ship frame --sample customers.head(50) --reference customers --no-verify
def predict(frame):
    return pipe.predict_proba(add_features(frame))[:, 1]"""


@dataclass
class System:
    name: str
    folder: Path
    command: list[str]
    environ: dict[str, str] = field(default_factory=dict)
    check: bool = True  # False for the floor: it answers a constant
    body_kind: str = "array"  # "array": X rows; "frame": customer records
    path: str = "/predict"
    process: subprocess.Popen | None = None
    cold_start: float | None = None
    rss_mb: float | None = None
    results: dict[tuple[str, int], list[dict]] = field(default_factory=dict)  # (rows, c) -> wrk runs
    points: tuple[tuple[int, int], ...] | None = None  # (rows, c) to measure; None: all, and a cold start


# --- set-up ------------------------------------------------------------------------------------------


def export_projects(work: Path) -> dict[str, Path]:
    sys.path.insert(0, str(ROOT / "tests"))
    from support.notebooks import write_notebook

    notebook = write_notebook(work / "bench.ipynb", ["%load_ext jupyter_mlship", TRAIN, SHIP_ARRAY, SHIP_FRAME])
    result = subprocess.run([sys.executable, "-m", "jupyter_mlship.cli", "export", str(notebook), "--out",
                             str(work / "services")], cwd=work, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        sys.exit(f"export failed:\n{result.stdout}\n{result.stderr}")
    projects = {"hgb": work / "services" / "hgb", "frame": work / "services" / "frame"}
    off = work / "services" / "hgb-nobatch"
    shutil.copytree(projects["hgb"], off)
    ship = json.loads((off / "ship.json").read_text())
    ship["batching"]["enabled"] = False
    (off / "ship.json").write_text(json.dumps(ship, indent=2))
    projects["hgb-nobatch"] = off
    return projects


def peer_env(peer: Peer, timeout: float) -> tuple[Path | None, str]:
    """A cached venv with the peer's packages, or (None, why not)."""
    key = hashlib.sha256(" ".join(sorted(peer.packages)).encode()).hexdigest()[:12]
    env = ENV_CACHE / f"{peer.env}-{key}"
    python = env / "bin" / "python"
    if (env / ".complete").exists():
        if not (env / ".bytecode").exists():  # cached before the install compiled it: once, now
            subprocess.run([str(python), "-m", "compileall", "-q", "-j0", str(env / "lib")], capture_output=True)
            (env / ".bytecode").write_text("")
        return python, "cached"
    shutil.rmtree(env, ignore_errors=True)
    env.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        subprocess.run(["uv", "venv", "-q", "-p", sys.executable, str(env)], check=True, capture_output=True,
                       timeout=120)
        # Compiled as an image's pip install would: this machine sets PYTHONDONTWRITEBYTECODE, so without
        # it every server start would compile its libraries from source, which is not what cold start means.
        subprocess.run(["uv", "pip", "install", "-q", "--compile-bytecode", "-p", str(python), *peer.packages], check=True,
                       capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        shutil.rmtree(env, ignore_errors=True)
        return None, f"installing {' '.join(peer.packages)} took over {timeout:.0f} s"
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(env, ignore_errors=True)
        return None, f"installing failed: {(exc.stderr or '').strip().splitlines()[-1:]}"
    (env / ".bytecode").write_text("")
    (env / ".complete").write_text("")
    return python, f"installed in {time.monotonic() - started:.0f} s"


def compile_bytecode(python: Path, folder: Path) -> None:
    """A server's own code compiled to bytecode, as in its image: this machine sets PYTHONDONTWRITEBYTECODE,
    so otherwise every start would compile it again (for the generated service, 3,700 lines)."""
    subprocess.run([str(python), "-m", "compileall", "-q", str(folder)], capture_output=True, check=True)


def build_systems(work: Path, projects: dict[str, Path], args: argparse.Namespace) -> list[System]:
    import numpy
    import sklearn

    systems: list[System] = []
    skipped: list[str] = []
    for peer in peers(sklearn.__version__, numpy.__version__):
        if args.skip_peers and peer.env in args.skip_peers:
            skipped.append(f"{peer.name}: skipped by --skip-peers")
            continue
        python, why = peer_env(peer, args.install_timeout)
        print(f"[bench] {peer.name}: {why}", flush=True)
        if python is None:
            skipped.append(f"{peer.name}: {why}")
            continue
        folder = work / "peers" / re.sub(r"\W+", "-", peer.name).strip("-").lower()
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(work / "model.pkl", folder / "model.pkl")
        for name, text in peer.files.items():
            (folder / name).write_text(textwrap.dedent(text))
        if peer.prepare:
            prepared = subprocess.run([str(python), peer.prepare], cwd=folder, capture_output=True, text=True)
            if prepared.returncode != 0:
                skipped.append(f"{peer.name}: preparing failed: {prepared.stderr.strip().splitlines()[-1:]}")
                continue
        compile_bytecode(python, folder)
        command = [str(python) if part == "{python}" else part for part in peer.command]
        environ = {**peer.environ, "PATH": f"{python.parent}:{os.environ['PATH']}"}  # its own uvicorn, gunicorn
        systems.append(System(peer.name, folder, command, environ, check=peer.check, path=peer.path))
    cmd = re.search(r"^CMD (.+)$", (projects["hgb"] / "Dockerfile").read_text(), re.M).group(1)
    # The container's CMD and ENV, each project in a venv of its own pinned requirements.txt, as its
    # image would have (not this interpreter: it holds torch, which scikit-learn's array-API support
    # would import; nor one venv for both: pandas, which only the DataFrame project pins, would be
    # imported by scikit-learn in the array project too, +60 MB RSS).
    pythons = {}
    for name in ("hgb", "frame"):
        requirements = sorted((projects[name] / "requirements.txt").read_text().split())
        pythons[name], why = peer_env(Peer(f"generated service {name}", "service", requirements, {}, []),
                                      args.install_timeout)
        print(f"[bench] generated service {name}'s pinned requirements: {why}", flush=True)
        if pythons[name] is None:
            sys.exit(f"cannot install the generated service's requirements: {why}")

    for name, project in projects.items():  # as the Dockerfile's `python -m compileall -q app`
        compile_bytecode(pythons["frame" if name == "frame" else "hgb"], project / "app")

    def service_env(name: str) -> dict[str, str]:
        return {"HOST": "127.0.0.1", "UVICORN_ACCESS_LOG": "false",
                "PATH": f"{pythons[name].parent}:{os.environ['PATH']}"}

    systems.append(System("generated service (micro-batching on)", projects["hgb"], ["sh", "-c", cmd],
                          service_env("hgb")))
    systems.append(System("generated service, micro-batching off", projects["hgb-nobatch"], ["sh", "-c", cmd],
                          service_env("hgb")))
    systems.append(System("generated service, DataFrame pipeline", projects["frame"], ["sh", "-c", cmd],
                          service_env("frame"), body_kind="frame"))
    systems.append(System("generated service, inference log off", projects["hgb"], ["sh", "-c", cmd],
                          {**service_env("hgb"), "MLSHIP_LOG_DIR": "off"}))
    systems.append(System(SPIN_OFF, projects["hgb"], ["sh", "-c", cmd],
                          {**service_env("hgb"), "MLSHIP_IDLE_SPIN_US": "0"}, points=((1, 1),)))
    for line in skipped:
        print(f"[bench] SKIPPED {line}", flush=True)
    return systems, skipped


# --- running servers ---------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(system: System, cpu: int, body: bytes, expected: list) -> None:
    expected = expected if system.check else None
    port = free_port()
    system.url = f"http://127.0.0.1:{port}{system.path}"  # type: ignore[attr-defined]
    command = [part.replace("{port}", str(port)) for part in system.command]
    env = {**os.environ, **system.environ, "PORT": str(port)}
    env.pop("PYTHONPATH", None)  # a served project must not see jupyter_mlship
    # The server's output goes to a file: a pipe nobody reads fills up (64 KB) and blocks a server that
    # logs each request (MLflow's access log did: 0 req/s after the first few thousand requests).
    log_path = system.folder / "server.log"
    log = log_path.open("wb")
    began = time.perf_counter()
    system.process = subprocess.Popen(["taskset", "-c", str(cpu), *command], cwd=system.folder, env=env,
                                      stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    log.close()  # the server holds its own copy of the file
    deadline = time.monotonic() + 180
    # One client for all the attempts, asked every 10 ms: a new client per attempt (httpx.post) costs
    # 20-30 ms of its own, and with a 50 ms sleep the start was only known to about 75 ms.
    with httpx.Client(timeout=5) as client:
        while time.monotonic() < deadline:
            if system.process.poll() is not None:
                raise RuntimeError(f"{system.name} exited: {log_path.read_text(errors='replace')[-2000:]}")
            try:
                response = client.post(system.url, content=body, headers={"content-type": "application/json"})
                if response.status_code == 200:
                    system.cold_start = time.perf_counter() - began
                    got = response.json()
                    got = got.get("predictions", got) if isinstance(got, dict) else got
                    if expected is not None and not same(got, expected):
                        raise RuntimeError(f"{system.name} answers {got[:5]}, in-process predict gives {expected[:5]}")
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
    raise RuntimeError(f"{system.name} did not answer within 180 s")


def same(got: list, expected: list) -> bool:
    return len(got) == len(expected) and all(
        abs(float(g) - float(e)) <= 1e-9 * max(1.0, abs(float(e))) for g, e in zip(got, expected)
    )


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants (BentoML and MLflow run workers as children)."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, AttributeError):
            continue
    return total / 1024


def stop(system: System) -> None:
    if system.process and system.process.poll() is None:
        os.killpg(system.process.pid, signal.SIGTERM)
        try:
            system.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(system.process.pid, signal.SIGKILL)


# --- load ---------------------------------------------------------------------------------------------


def wrk_script(work: Path, name: str, body: bytes) -> Path:
    path = work / f"{name}.lua"
    path.write_text('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
                    f"wrk.body = [==[{body.decode()}]==]\n")
    return path


def wrk(url: str, script: Path, connections: int, seconds: float, cpu: int) -> dict:
    output = subprocess.run(
        ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "-s", str(script), url], capture_output=True, text=True, timeout=seconds + 60,
    ).stdout
    if "Requests/sec" not in output:
        raise RuntimeError(f"wrk failed: {output[-500:]}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1))
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.+)", output)
    return {"rps": rps, "p50": p50, "p99": p99, "non2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1) if errors else ""}


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def in_process(func, seconds: float = 2.0, gap: float = 0.0, cpu: int | None = None) -> tuple[float, float]:
    """(calls per second, median ms per call), on one thread like a one-core server; from the median,
    so that a pause of the shared machine does not count as the model's. ``gap``: seconds the thread
    sleeps between calls (the core idles, as a server's does between requests at c1); ``cpu``: pinned
    there meanwhile, as the servers are."""
    from threadpoolctl import threadpool_limits

    affinity = os.sched_getaffinity(0)
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    try:
        with threadpool_limits(1):
            for _ in range(20):
                func()
            times, deadline = [], time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                if gap:
                    time.sleep(gap)
                began = time.perf_counter()
                func()
                times.append(time.perf_counter() - began)
    finally:
        os.sched_setaffinity(0, affinity)
    median = statistics.median(times)
    return 1 / median, median * 1000


def median_reference(measured: list[tuple[float, float]]) -> tuple[float, float]:
    """(calls per second, ms per call) from the median ms of the rounds' measurements."""
    ms = statistics.median(m[1] for m in measured)
    return 1000 / ms, ms


def idle_predict(predict, floor: "System | None", cpu: int) -> dict | None:
    """The 1-row predict on ``cpu`` in a tight loop and with the core idle between calls for as
    long as the floor's c1 round trip (what a server's core does at c1): the c1 target's reference is
    the tight loop, which no server sees."""
    p50 = figure(floor, 1, 1, "p50") if floor else None
    if p50 is None:
        return None
    tight = in_process(predict, cpu=cpu)[1]
    idle = in_process(predict, gap=p50[1] / 1000, cpu=cpu)[1]
    return {"tight_ms": tight, "idle_ms": idle, "gap_ms": p50[1]}


# --- the run ------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--install-timeout", type=float, default=600)
    parser.add_argument("--skip-peers", nargs="*", default=[], help="peer envs to leave out: fastapi bentoml mlflow")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    parser.add_argument("--ship-timing", action="store_true",
                        help="also time `mlship export examples/churn.ipynb` to a verified project (warm env cache)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="mlship-bench-"))
    print(f"[bench] working in {work}", flush=True)

    namespace: dict = {}
    exec(TRAIN, namespace)  # the same training code as the notebook's, so the same model
    clf, pipe, add_features = namespace["clf"], namespace["pipe"], namespace["add_features"]
    (work / "model.pkl").write_bytes(pickle.dumps(clf))
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(100, 20))
    frames = namespace["customers"].sample(100, random_state=1).reset_index(drop=True)
    bodies = {
        ("array", 1): json.dumps({"instances": rows[:1].tolist()}).encode(),
        ("array", 100): json.dumps({"instances": rows.tolist()}).encode(),
        ("frame", 1): json.dumps({"instances": json.loads(frames.head(1).to_json(orient="records"))}).encode(),
        ("frame", 100): json.dumps({"instances": json.loads(frames.to_json(orient="records"))}).encode(),
    }
    expected = {
        ("array", 1): clf.predict(rows[:1]).tolist(), ("array", 100): clf.predict(rows).tolist(),
        ("frame", 1): pipe.predict_proba(add_features(frames.head(1)))[:, 1].tolist(),
        ("frame", 100): pipe.predict_proba(add_features(frames))[:, 1].tolist(),
    }
    scripts = {key: wrk_script(work, f"{key[0]}-{key[1]}", body) for key, body in bodies.items()}

    # The in-process references, measured again before every round (the shared host's speed drifts over a
    # run, and a ratio should compare figures taken under the same conditions): on the client's core,
    # which is idle between wrk runs (the server core holds the idle peers).
    calls = {"raw1": lambda: clf.predict(rows[:1]), "raw100": lambda: clf.predict(rows),
             "entry100": lambda: pipe.predict_proba(add_features(frames.copy()))[:, 1]}
    reference: dict[str, list] = {name: [] for name in calls}

    def measure_references() -> None:
        for name, call in calls.items():
            reference[name].append(in_process(call, seconds=1.5, cpu=args.client_cpu))
        print(f"[bench] raw predict: 1 row {reference['raw1'][-1][1]:.3f} ms, 100 rows "
              f"{reference['raw100'][-1][1]:.3f} ms; DataFrame entry on 100 rows {reference['entry100'][-1][1]:.2f} ms",
              flush=True)

    measure_references()

    projects = export_projects(work)
    systems, skipped = build_systems(work, projects, args)
    try:
        # Cold start is the median of COLD_STARTS starts (one start swings with the page cache), each on an
        # otherwise idle server core: every system is stopped again before the next one starts (BentoML's
        # and MLflow's idle processes would otherwise slow down whichever server starts after them).
        starts: dict[str, list[float]] = {}
        failed: dict[str, str] = {}
        for attempt in range(COLD_STARTS):
            for system in systems if attempt % 2 == 0 else reversed(systems):
                if system.name in failed or system.points:
                    continue
                try:
                    start(system, args.server_cpu, bodies[(system.body_kind, 1)], expected[(system.body_kind, 1)])
                    starts.setdefault(system.name, []).append(system.cold_start)
                except RuntimeError as exc:
                    failed[system.name] = str(exc)
                stop(system)
        for system in systems:
            try:
                if system.name in failed:
                    raise RuntimeError(failed[system.name])
                start(system, args.server_cpu, bodies[(system.body_kind, 1)], expected[(system.body_kind, 1)])
                system.cold_start = statistics.median(starts[system.name]) if system.name in starts else None
                check = httpx.post(system.url, content=bodies[(system.body_kind, 100)],
                                   headers={"content-type": "application/json"}, timeout=30).json()
                check = check.get("predictions", check) if isinstance(check, dict) else check
                if system.check and not same(check, expected[(system.body_kind, 100)]):
                    raise RuntimeError(f"{system.name}: 100-row predictions differ from in-process predict")
                print(f"[bench] {system.name}: ready, correct"
                      + (f", cold start {system.cold_start:.2f} s" if system.cold_start is not None else ""), flush=True)
            except RuntimeError as exc:
                print(f"[bench] SKIPPED {exc}", flush=True)
                skipped.append(str(exc))
                stop(system)
                system.process = None
        systems = [s for s in systems if s.process is not None]
        points = [(1, c) for c in CONCURRENCY] + [(100, 16), (100, 1)]
        for round_ in range(args.rounds):
            if round_:
                measure_references()
            for system in systems if round_ % 2 == 0 else reversed(systems):  # interleaved, order alternating
                for rows_n, c in system.points or points:
                    result = wrk(system.url, scripts[(system.body_kind, rows_n)], c, args.duration, args.client_cpu)
                    system.results.setdefault((rows_n, c), []).append(result)
                system.rss_mb = tree_rss_mb(system.process.pid)
            print(f"[bench] round {round_ + 1}/{args.rounds} done", flush=True)
    finally:
        for system in systems:
            stop(system)

    raw1, raw100, entry100 = (median_reference(reference[name]) for name in calls)
    idle1 = idle_predict(lambda: clf.predict(rows[:1]),
                         next((s for s in systems if s.name == FLOOR), None), args.client_cpu)
    ship_seconds = time_ship(work) if args.ship_timing else None
    report = render(systems, skipped, raw1, raw100, entry100, ship_seconds, args, idle1)
    print(report)
    (args.out / "results.md").write_text(report)
    plot(systems, args.out / "throughput.png")
    print(f"[bench] wrote {args.out / 'results.md'} and {args.out / 'throughput.png'}")


def time_ship(work: Path) -> dict:
    """`mlship export` of the bundled example to a verified project: once to warm the env cache, once timed."""
    seconds = []
    for attempt in range(2):
        out = work / f"churn-{attempt}"
        began = time.perf_counter()
        result = subprocess.run([sys.executable, "-m", "jupyter_mlship.cli", "export",
                                 str(ROOT / "examples" / "churn.ipynb"), "--out", str(out)],
                                capture_output=True, text=True, timeout=900)
        seconds.append(time.perf_counter() - began)
        if result.returncode != 0 or "verify:tests: done" not in result.stderr:
            return {"error": (result.stderr or result.stdout)[-500:]}
    return {"cold_cache_s": seconds[0], "warm_cache_s": seconds[1]}


def figure(system: System, rows: int, c: int, key: str) -> tuple[float, float, float] | None:
    runs = system.results.get((rows, c))
    if not runs:
        return None
    values = [run[key] for run in runs]
    return min(values), statistics.median(values), max(values)


def render(systems: list[System], skipped: list[str], raw1, raw100, entry100, ship_seconds, args,
           idle1: dict | None = None) -> str:
    by_name = {s.name: s for s in systems}
    hand = by_name.get("hand-written FastAPI + pydantic, uvicorn[standard]")
    lines = [
        f"Machine: {machine()}; server on CPU {args.server_cpu}, wrk on CPU {args.client_cpu}; "
        f"{args.rounds} interleaved rounds of {args.duration:g} s per point (ranges are min-max over rounds); cold start is the median of {COLD_STARTS} starts.",
        "",
        f"Raw `clf.predict` in process (on the client's core before each round, median): 1 row {raw1[0]:,.0f} calls/s ({raw1[1]:.3f} ms); "
        f"100 rows {raw100[0]:,.0f} calls/s ({raw100[0] * 100:,.0f} rows/s). "
        f"DataFrame pipeline entry call on 100 rows: {entry100[1]:.2f} ms."
        + (f" After the rounds, 1 row: {idle1['tight_ms']:.3f} ms in a tight loop, {idle1['idle_ms']:.3f} ms "
           f"with the core idle {idle1['gap_ms']:.2f} ms between calls (the floor's c1 p50), as at c1."
           if idle1 else ""),
        "",
        "| system | c16 req/s, 1 row | c16 req/s, 100 rows | c1 p50 ms, 1 row | c1 p50 ms, 100 rows | cold start s "
        "| RSS MB | c16 1-row vs hand-written | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    hand16 = figure(hand, 1, 16, "rps")[1] if hand else None
    for s in systems:
        c16 = figure(s, 1, 16, "rps")
        c16h = figure(s, 100, 16, "rps")
        p50 = figure(s, 1, 1, "p50")
        p50h = figure(s, 100, 1, "p50")
        errors = sum(r["non2xx"] for runs in s.results.values() for r in runs)
        socket = {r["socket_errors"] for runs in s.results.values() for r in runs if r["socket_errors"]}
        ratio = f"{c16[1] / hand16:.2f}x" if hand16 and c16 else "—"
        lines.append(
            f"| {s.name} | {_range(c16, '{:,.0f}')} | {_range(c16h, '{:,.0f}')} | {_range(p50, '{:.2f}')} "
            f"| {_range(p50h, '{:.2f}')} | {'—' if s.cold_start is None else f'{s.cold_start:.2f}'} | {s.rss_mb:.0f} | {ratio} "
            f"| {errors} non-2xx{'; socket ' + '; '.join(socket) if socket else ''} |"
        )
    lines += ["", "Throughput against concurrency (1 row per request, median req/s):", "",
              "| system | " + " | ".join(f"c{c}" for c in CONCURRENCY) + " |",
              "|---|" + "---|" * len(CONCURRENCY)]
    for s in (s for s in systems if not s.points):
        lines.append(f"| {s.name} | " + " | ".join(_range(figure(s, 1, c, "rps"), "{:,.0f}", median_only=True)
                                                   for c in CONCURRENCY) + " |")
    lines += ["", "Targets of issue 11 (measured in this run):", ""]
    lines += target_lines(by_name, raw1, raw100, entry100, ship_seconds, idle1)
    if skipped:
        lines += ["", "Skipped:", ""] + [f"- {line}" for line in skipped]
    return "\n".join(lines) + "\n"


def target_lines(by_name: dict, raw1, raw100, entry100, ship_seconds, idle1: dict | None = None) -> list[str]:
    gen, frame = by_name.get("generated service (micro-batching on)"), by_name.get("generated service, DataFrame pipeline")
    hand = by_name.get("hand-written FastAPI + pydantic, uvicorn[standard]")
    floor = by_name.get(FLOOR)
    bento = by_name.get("BentoML 1.4")
    out = []

    def line(label: str, value: float | None, target: float, unit: str = "x", lower_is_better: bool = False) -> None:
        if value is None:
            out.append(f"- {label}: not measured (a system was skipped)")
            return
        met = value <= target if lower_is_better else value >= target
        sign = "<=" if lower_is_better else ">="
        out.append(f"- {label}: {value:.2f}{unit} (target {sign} {target:g}{unit}) {'MET' if met else 'NOT MET'}")

    med = lambda s, rows, c, key="rps": figure(s, rows, c, key)[1] if s else None  # noqa: E731
    if gen and hand:
        line("single-row c16 throughput / hand-written FastAPI", med(gen, 1, 16) / med(hand, 1, 16), 4)
    else:
        line("single-row c16 throughput / hand-written FastAPI", None, 4)
    line("single-row c16 throughput / BentoML", med(gen, 1, 16) / med(bento, 1, 16) if gen and bento else None, 8)
    line("100-row requests: rows/s / raw predict rows/s", med(gen, 100, 16) / raw100[0] if gen else None, 0.8)
    quiet = by_name.get("generated service, inference log off")
    if quiet:  # information: what the inference log's Parquet writer costs on the one core
        out.append(f"- (information) the same with the inference log off: {med(quiet, 100, 16) / raw100[0]:.2f}x")
    line("DataFrame pipeline: 100-row request c1 p50 / in-process entry call",
         med(frame, 100, 1, "p50") / entry100[1] if frame else None, 1.5, lower_is_better=True)
    c1_reference = med(floor, 1, 1, "p50") + raw1[1] if floor else None  # the c1 target's: floor + raw predict
    line("c1 p50 / (HTTP floor p50 + raw 1-row predict)",
         med(gen, 1, 1, "p50") / c1_reference if gen and floor else None, 1.2, lower_is_better=True)
    if gen and floor and idle1:  # information, not a target: the same ratio against the predict a c1 server sees
        reference = med(floor, 1, 1, "p50") + idle1["idle_ms"]
        out.append(f"- (information) c1 p50 / (HTTP floor p50 + 1-row predict with the core idle between calls, "
                   f"as at c1): {med(gen, 1, 1, 'p50') / reference:.2f}x; hand-written FastAPI by the same measure: "
                   + (f"{med(hand, 1, 1, 'p50') / reference:.2f}x" if hand else "—"))
    sleeping = by_name.get(SPIN_OFF)
    if gen and floor and sleeping:  # information: the c1 target's ratio without idle spinning (app/idle_spin.py)
        out.append(f"- (information) the same c1 ratio with idle spinning off (MLSHIP_IDLE_SPIN_US=0): "
                   f"{med(sleeping, 1, 1, 'p50') / c1_reference:.2f}x "
                   f"(p50 {med(sleeping, 1, 1, 'p50'):.3f} ms, against {med(gen, 1, 1, 'p50'):.3f} ms spinning)")
    line("cold start / hand-written", gen.cold_start / hand.cold_start if gen and hand else None, 1.0,
         lower_is_better=True)
    line("RSS / hand-written", gen.rss_mb / hand.rss_mb if gen and hand else None, 1.2, lower_is_better=True)
    line("RSS / hand-written, inference log off (MLSHIP_LOG_DIR=off)",
         quiet.rss_mb / hand.rss_mb if quiet and hand else None, 1.2, lower_is_better=True)
    if ship_seconds is None:
        out.append("- `%%ship` to a verified project, warm env cache: not measured (pass --ship-timing)")
    elif "error" in ship_seconds:
        out.append(f"- `%%ship` to a verified project: export failed: {ship_seconds['error']}")
    else:
        out.append(f"- `mlship export examples/churn.ipynb` to a verified project, warm env cache: "
                   f"{ship_seconds['warm_cache_s']:.1f} s (target < 15 s) "
                   f"{'MET' if ship_seconds['warm_cache_s'] < 15 else 'NOT MET'}; first run "
                   f"{ship_seconds['cold_cache_s']:.1f} s")
    return out


def _range(values: tuple | None, fmt: str, median_only: bool = False) -> str:
    if values is None:
        return "—"
    low, mid, high = values
    if median_only or low == high:
        return fmt.format(mid)
    return f"{fmt.format(low)}–{fmt.format(high)}"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    return f"{os.cpu_count()} x {cpu}, Python {sys.version.split()[0]}"


def plot(systems: list[System], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[bench] no plot: matplotlib is not installed (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for s in (s for s in systems if not s.points):
        values = [figure(s, 1, c, "rps") for c in CONCURRENCY]
        ax.plot(CONCURRENCY, [v[1] if v else float("nan") for v in values], marker="o", label=s.name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(CONCURRENCY, [str(c) for c in CONCURRENCY])
    ax.set_yscale("log")
    ax.set_xlabel("concurrent connections (wrk)")
    ax.set_ylabel("requests/s, 1 row each (median of rounds)")
    ax.set_title("Throughput against concurrency, one server core")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
