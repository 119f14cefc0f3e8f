"""The prediction service: a FastAPI app around the notebook's entry function.

At start-up (the lifespan) it reads ship.json once, imports app.features (which loads the model from
model/), and runs the golden self-check: the notebook's sample must give the notebook's predictions.
Only then does /readyz answer 200. A request's raw body is decoded and validated in one pass
(app.schema), converted back to the sample's type (app.convert) and handed to the entry function by
app.batching, which coalesces concurrent requests into one call when the entry function was proven
row-wise at export. The model runs on a small thread pool, so /healthz answers while it works.
app.monitoring checks each request against the training data before the model sees it and queues it
for the inference log after (off the request path).

The two prediction addresses are answered by plain ASGI code (``ServiceApp``, ``serve_prediction``):
the same checks, answers and metrics as the middleware and routes below, without routing, three
middleware layers and a Request object per call. Every other address goes through FastAPI.

Status codes: 422 for a request the schema refuses AND for a valid request the model cannot take
(with the instance index and the cause); 500 only for the server's own faults.
"""

from __future__ import annotations

import asyncio
import gc
import os

# Importing the web stack makes objects that live as long as the process: no cyclic collection meanwhile
# (30-40 ms of the start, measured); frozen and collecting again at the end of this module. The lifespan
# does the same around loading the model.
_COLLECTING = gc.isenabled()
gc.disable()


def _cpu_limit() -> int:
    """CPUs this process may use: its affinity, and the container's cgroup quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:  # cgroup v2 CPU limit of the container, e.g. "200000 100000" = 2 CPUs
        quota, period = open("/sys/fs/cgroup/cpu.max").read().split()
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return cpus


# Before numpy is imported: BLAS/OpenMP pools sized to the CPU limit divided among WEB_CONCURRENCY
# workers, not to the host's cores (a 64-core host would otherwise start 64 threads per worker). Values
# set by the operator win.
CPUS, WORKERS = _cpu_limit(), max(1, int(os.environ.get("WEB_CONCURRENCY", "1") or 1))
THREADS = max(1, CPUS // WORKERS)
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_variable, str(THREADS))


def _keep_freed_memory() -> dict[str, int]:
    """glibc's allocator, told to keep what a request frees for the next one (glibc only; the operator's
    GLIBC_TUNABLES or MALLOC_*_ variables win). By default glibc maps every block over 128 KB afresh
    (a batch's matrix, the model's arrays for a 1,000-row call) and hands the top of its heap back as
    soon as 128 KB are free there, so every large request faults its memory in again: measured on
    100-row requests at c16 (log off), 20,000 page faults a second and about 10% of the CPU per request.
    Blocks up to 4 MB now come from the heap, and up to 16 MB of free heap is kept (the inference
    log still gives memory back after quiet flushes)."""
    try:
        import ctypes

        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return {}
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    settings = {}
    for option, name, value, variable in ((-1, "trim_threshold", 16 << 20, "MALLOC_TRIM_THRESHOLD_"),
                                          (-3, "mmap_threshold", 4 << 20, "MALLOC_MMAP_THRESHOLD_")):
        if variable not in os.environ and f"glibc.malloc.{name}" not in tunables and mallopt(option, value) == 1:
            settings[name] = value
    return settings


MALLOC_SETTINGS = _keep_freed_memory()

import functools  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from contextlib import asynccontextmanager  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable  # noqa: E402

from fastapi import FastAPI, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402
from prometheus_client import (  # noqa: E402
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from pydantic import BaseModel, ValidationError  # noqa: E402

from app.batching import Batcher, ModelRejection  # noqa: E402
from app.idle_spin import ENV as IDLE_SPIN_ENV, IdleSpin, window_from  # noqa: E402
from app.convert import compare_predictions, join_instances, outputs_to_json, sample_converter  # noqa: E402
from app.schema import PredictRequest, PredictResponse, decode_request  # noqa: E402

from app.inference_log import json_bytes as dumps  # noqa: E402  orjson where pinned, else json
from app import monitoring_routes  # noqa: E402  data monitoring: log, drift, guard, /feedback, /monitoring
from app.monitoring import MONITOR, RequestIdMiddleware, new_request_id  # noqa: E402
from app.monitoring import REQUEST_ID_PROBLEM, member, valid_request_id  # noqa: E402
from app.monitoring import request_id as current_request_id  # noqa: E402  (set by RequestIdMiddleware)

PROJECT_DIR = Path(__file__).resolve().parent.parent
SHIP_FILE = PROJECT_DIR / "ship.json"

log = logging.getLogger("app")
if not log.handlers and not logging.getLogger().handlers:
    # uvicorn configures only its own loggers: without a handler the start-up lines (where each model
    # runs, "ready") would be lost below WARNING.
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)


@dataclass
class Service:
    """What the routes need, filled once by the lifespan."""

    name: str = ""
    version: str = ""
    max_instances: int = 0
    max_body_bytes: int = 0
    ready: bool = False
    not_ready_reason: str = "starting"
    entry: Callable[[Any], Any] | None = None
    to_sample: Callable[[list], Any] | None = None
    output_schema: dict = field(default_factory=dict)
    version_info: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)  # {"name", "version"}, as every answer states it
    batcher: Batcher | None = None
    devices: dict = field(default_factory=dict)  # artifact -> {"device", "recorded", "why"}


service = Service()

# --- metrics: a registry of our own, so importing the app twice cannot register twice ------------------
REGISTRY = CollectorRegistry()
REQUESTS = Counter(
    "mlship_requests", "HTTP requests by route and status.", ["route", "status"], registry=REGISTRY
)
LATENCY = Histogram(
    "mlship_request_duration_seconds", "Time to answer a request.", ["route"], registry=REGISTRY
)
INSTANCES = Histogram(
    "mlship_instances_per_request",
    "Instances per prediction request.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000),
    registry=REGISTRY,
)
MODEL_REJECTIONS = Counter(
    "mlship_model_rejections",
    "Valid requests the entry function could not take (answered 422).",
    ["route"],
    registry=REGISTRY,
)
BATCH_REQUESTS = Histogram(
    "mlship_batch_requests",
    "Requests coalesced into one call of the entry function.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
    registry=REGISTRY,
)
BATCH_INSTANCES = Histogram(
    "mlship_batch_instances",
    "Instances in one call of the entry function.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 10000),
    registry=REGISTRY,
)
MODEL_INFO = Info("mlship_model", "The model this service serves.", registry=REGISTRY)
READY = Gauge("mlship_ready", "1 when the model is loaded and the self-check passed.", registry=REGISTRY)

# Polling for a moment after the last prediction is answered, while the next one has lately come that
# soon (one client at a time): see app/idle_spin.py. Not while a model call runs on the pool, and by
# default not with more workers than CPUs (a worker's polling would take the core another one needs).
SPIN = IdleSpin(window_from(os.environ) if WORKERS <= CPUS or os.environ.get(IDLE_SPIN_ENV) else 0.0,
                pool_busy=lambda: service.batcher is not None and service.batcher.in_pool > 0)
REGISTRY.register(SPIN)


# --- start-up -----------------------------------------------------------------------------------------


def load_service(ship: dict) -> None:
    """Import the model code, then prove it reproduces the notebook's golden predictions."""
    service.name, service.version = ship["name"], ship["version"]
    service.max_instances, service.max_body_bytes = ship["max_instances"], ship["max_body_bytes"]
    service.model = {"name": ship["name"], "version": ship["version"]}
    service.output_schema = ship["output"]
    service.version_info = {
        "name": ship["name"],
        "version": ship["version"],
        "python": platform.python_version(),
        "notebook_python": ship["python_version"],
        "artifacts": {a["name"]: {"file": a["file"], "sha256": a["sha256"]} for a in ship["artifacts"]},
        "frameworks": {k: v for a in ship["artifacts"] for k, v in a["frameworks"].items()},
    }
    MODEL_INFO.info({"name": ship["name"], "version": ship["version"]})
    service.to_sample = sample_converter(ship["input"])
    loaders = importlib.import_module("app.loaders")
    try:
        with loaders.quick_start():
            features = importlib.import_module("app.features")  # loads the model artifacts
        service.entry = getattr(features, ship["entry"]["name"])
    except loaders.DeviceUnavailable as exc:
        log.error("not ready: %s", exc)
        service.not_ready_reason = f"device: {exc}"
        return
    except Exception as exc:
        log.exception("loading the model failed")
        service.not_ready_reason = f"loading the model failed: {type(exc).__name__}: {exc}"
        return
    finally:
        service.devices = {name: p.as_json() for name, p in loaders.PLACEMENTS.items()}
        service.version_info["devices"] = service.devices
    for name, placement in service.devices.items():
        log.info("model %s on %s: %s", name, placement["device"], placement["why"])
    golden = ship["golden"]
    try:  # the same path as a request: raw JSON, validation, conversion, the entry function
        predictions = predict_instances(decode_request(json.dumps({"instances": golden["instances"]}).encode()))
    except Exception as exc:
        log.exception("the self-check failed")
        service.not_ready_reason = f"self-check raised {type(exc).__name__}: {exc}" + moved_models_hint()
        return
    mismatches = compare_predictions(golden["predictions"], predictions, golden["float_rel_tol"])
    if mismatches:
        log.error("self-check: predictions differ from the notebook's:\n  %s", "\n  ".join(mismatches))
        service.not_ready_reason = "self-check: predictions differ from the notebook's: " + "; ".join(
            mismatches[:5]
        )
        return
    batching = ship.get("batching") or {}
    service.batcher = Batcher(
        predict_instances,
        enabled=bool(batching.get("enabled")),
        max_batch=int(batching.get("max_batch") or service.max_instances),
        max_wait_ms=float(batching.get("max_wait_ms") or 0),
        threads=1 if batching.get("enabled") else THREADS,
        observe_batch=observe_batch,
        inline_ms=float(os.environ.get("MLSHIP_INLINE_MS") or (5.0 if THREADS == 1 else 0.5)),
        join=join_instances,
    )
    service.ready, service.not_ready_reason = True, ""
    READY.set(1)
    log.info("%s version %s is ready (micro-batching %s)", service.name, service.version,
             "on" if batching.get("enabled") else "off: " + (batching.get("reason") or "not proven row-wise"))


def observe_batch(requests: int, instances: int) -> None:
    BATCH_REQUESTS.observe(requests)
    BATCH_INSTANCES.observe(instances)


# What load_service reads from ship.json; a file without them is reported, not a crash at start-up.
REQUIRED_SHIP_FIELDS = {
    "": ("name", "version", "entry", "python_version", "artifacts", "input", "output", "golden",
         "max_instances", "max_body_bytes"),
    "entry": ("name",),
    "golden": ("instances", "predictions", "float_rel_tol"),
}


def read_ship(path: Path) -> dict:
    """ship.json, checked for the fields start-up needs; ValueError names the file and the field."""
    try:
        ship = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path.name} cannot be read as JSON: {exc}") from exc
    for section, fields in REQUIRED_SHIP_FIELDS.items():
        where = ship.get(section) if section else ship
        for name in fields:
            if not isinstance(where, dict) or name not in where:
                raise ValueError(f"{path.name} has no field {(section + '.' if section else '') + name!r}")
    for index, artifact in enumerate(ship["artifacts"]):
        for name in ("name", "file", "sha256", "frameworks"):
            if name not in artifact:
                raise ValueError(f"{path.name} has no field 'artifacts[{index}].{name}'")
    return ship


@asynccontextmanager
async def lifespan(app: FastAPI):
    # Whatever goes wrong here, the process stays up: /healthz 200, /readyz 503 with the reason.
    # Loading the model imports its libraries: some 200,000 objects that live as long as the process. No
    # cyclic collection while they are made (70-90 ms of the start, measured), and afterwards they are
    # frozen (gc.freeze), so later collections never walk them again. Not collected first: that costs
    # 0.1 s and finds about 2,500 objects (measured: the same RSS), which stay.
    collecting = gc.isenabled()
    gc.disable()
    try:
        ship = read_ship(SHIP_FILE)
        app.title, app.version = ship["name"], ship["version"]  # shown in /docs and /openapi.json
        load_service(ship)
        # monitoring: reference, drift window, inference log writer; its work runs between requests
        MONITOR.start(ship, str(PROJECT_DIR), loop=asyncio.get_running_loop())
    except Exception as exc:
        log.exception("start-up failed")
        service.not_ready_reason = f"start-up failed: {exc}" if isinstance(exc, ValueError) else (
            f"start-up failed: {type(exc).__name__}: {exc}")
    finally:
        gc.freeze()
        if collecting:
            gc.enable()
    yield
    MONITOR.stop()  # monitoring: SIGTERM lands here; everything queued is written before exit
    if service.batcher is not None:
        service.batcher.executor.shutdown(wait=False)


# --- middleware: body size limit and request metrics (plain ASGI: cheap, sees every request) --------------


async def send_json(send: Callable, status: int, content: dict) -> None:
    body = dumps(content)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


BODY_TIMEOUT_SECONDS = float(os.environ.get("MLSHIP_BODY_TIMEOUT_SECONDS", "30"))
BODY_SWEEP_SECONDS = min(1.0, max(0.05, BODY_TIMEOUT_SECONDS / 10))  # a late body's 408 comes this much late at most
FALLBACK_MAX_BODY_BYTES = 16 * 1024 * 1024  # until ship.json is read (or when it cannot be)


class BodyProblem(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def content_type_problem(headers: dict) -> str | None:
    """Bodies are JSON: say so for another declared Content-Type (none at all is read as JSON)."""
    declared = headers.get(b"content-type")
    if declared is None:
        return None
    media = declared.split(b";", 1)[0].strip().lower()
    if media == b"application/json" or media.endswith(b"+json"):
        return None
    return f"Content-Type: {declared.decode('latin-1')!r} is not JSON; send application/json"


async def receive_body(receive: Callable, limit: int) -> bytes | None:
    """The whole body, stopping as soon as it passes ``limit``; None when the client went away."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyProblem(413, f"request body: larger than the limit of {limit} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class BodyDeadlines:
    """The slow-loris guard of one event loop: bodies being read, each with the loop time by which it must be
    in. A sweep every ``every`` seconds cancels the reads past their deadline, instead of a timer per
    request: asyncio.timeout cost 3.7 µs of the 18 µs this file spends on a 1-row request (in process,
    model aside). A late body is refused at most ``every`` late. The first sweep that finds nothing being
    read retires the guard (the next read makes a new one), so an idle loop keeps nothing."""

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float, every: float) -> None:
        self.loop, self.seconds, self.every = loop, seconds, every
        self.reading: dict[asyncio.Task, float] = {}
        self.late: set[asyncio.Task] = set()  # cancelled by a sweep, not yet seen by their read
        loop.call_later(every, self.sweep)

    def begin(self, task: asyncio.Task) -> None:
        self.reading[task] = self.loop.time() + self.seconds

    def end(self, task: asyncio.Task) -> None:
        del self.reading[task]
        self.late.discard(task)

    def sweep(self) -> None:
        now = self.loop.time()
        for task, deadline in self.reading.items():  # cancel() only schedules: the dict does not change here
            if deadline <= now and task not in self.late:
                self.late.add(task)
                task.cancel()
        if self.reading:
            self.loop.call_later(self.every, self.sweep)
        else:
            del _BODY_DEADLINES[self.loop]


_BODY_DEADLINES: dict[asyncio.AbstractEventLoop, BodyDeadlines] = {}


async def read_body(headers: dict, receive: Callable) -> bytes | None:
    """The body of a POST, checked: 415 for a Content-Type that is not JSON, 400 for a Content-Length
    that is not a number, 413 over max_body_bytes (declared or received), 408 for a body that does not
    arrive within BODY_TIMEOUT_SECONDS (a slow-loris client). None when the client went away."""
    problem = content_type_problem(headers)
    if problem:
        raise BodyProblem(415, problem)
    limit = service.max_body_bytes or FALLBACK_MAX_BODY_BYTES
    declared = headers.get(b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BodyProblem(400, "Content-Length: not a number")
        if int(declared) > limit:
            raise BodyProblem(413, f"request body: larger than the limit of {limit} bytes")
    loop = asyncio.get_running_loop()
    deadlines = _BODY_DEADLINES.get(loop)
    if deadlines is None:
        deadlines = _BODY_DEADLINES[loop] = BodyDeadlines(loop, BODY_TIMEOUT_SECONDS, BODY_SWEEP_SECONDS)
    task = asyncio.current_task()
    deadlines.begin(task)
    try:
        return await receive_body(receive, limit)
    except asyncio.CancelledError:
        if task not in deadlines.late:  # cancelled for another reason (shut-down): not ours to answer
            raise
        if hasattr(task, "uncancel"):  # Python 3.11+: the task goes on, to answer 408
            task.uncancel()
        raise BodyProblem(408, f"request body: not received within {BODY_TIMEOUT_SECONDS:g} s") from None
    finally:
        deadlines.end(task)


class BodySizeLimit:
    """``read_body``'s checks for every POST that FastAPI routes (/feedback); the body is then replayed."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        try:
            body = await read_body(dict(scope["headers"]), receive)
        except BodyProblem as problem:
            return await send_json(send, problem.status, {"detail": problem.detail})
        if body is None:
            return  # the client went away
        delivered = False

        async def replay() -> dict:
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


@functools.lru_cache(maxsize=256)
def request_metrics(route: str, status: int) -> tuple[Any, Any]:
    """The counter and histogram children of one route and status (labels() is a lookup under a lock)."""
    return REQUESTS.labels(route, str(status)), LATENCY.labels(route)


def count_request(route: str, status: int, seconds: float) -> None:
    counter, histogram = request_metrics(route, status)
    counter.inc()
    histogram.observe(seconds)


class RequestMetrics:
    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started, status = time.perf_counter(), 500

        async def send_and_record_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            # The route template, not the raw path, keeps the label set small.
            count_request(getattr(scope.get("route"), "path", "unmatched"), status, time.perf_counter() - started)


# --- the app ------------------------------------------------------------------------------------------

class ServiceApp(FastAPI):
    """FastAPI, except that POST /predict and /v1/models/NAME:predict go straight to serve_prediction."""

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = prediction_route(scope)
            if route is not None:
                SPIN.started()  # a prediction in flight: no idle spinning until it is answered
                try:
                    return await serve_prediction(scope, receive, send, *route)
                finally:
                    SPIN.ended()
        await super().__call__(scope, receive, send)


app = ServiceApp(
    title="Model service",
    description=(
        "Predictions from a model shipped from a Jupyter notebook. See README.md. Each prediction answer "
        "carries a request id: the request's X-Request-ID header if sent, else a new one, returned in the "
        "X-Request-ID header and as `request_id`."
    ),
    lifespan=lifespan,
)
app.add_middleware(BodySizeLimit)
app.add_middleware(RequestIdMiddleware)  # monitoring: X-Request-ID in (or new) and out, on every response
app.add_middleware(RequestMetrics)  # added last: outermost, so it also counts 413s from the limit
app.include_router(monitoring_routes.router)  # monitoring: POST /feedback, GET /monitoring
REGISTRY.register(MONITOR)  # monitoring: drift, guard and log metrics, computed at scrape time


class Problem(BaseModel):
    loc: list[str | int]
    field: str
    msg: str
    type: str


class InvalidRequest(BaseModel):
    detail: list[Problem]
    message: str
    request_id: str | None = None


class ErrorMessage(BaseModel):
    detail: str
    request_id: str | None = None


ERROR_RESPONSES: dict[int | str, dict] = {
    400: {"model": ErrorMessage, "description": "A Content-Length header that is not a number"},
    404: {"model": ErrorMessage, "description": "Unknown model name (/v1/models/NAME:predict)"},
    408: {"model": ErrorMessage, "description": "The body did not arrive within MLSHIP_BODY_TIMEOUT_SECONDS"},
    413: {"model": ErrorMessage, "description": "More than max_instances instances, or a body over max_body_bytes"},
    415: {"model": ErrorMessage, "description": "A Content-Type other than JSON"},
    422: {
        "model": InvalidRequest,
        "description": "A field the schema refuses, or a valid instance the model cannot take "
        "(its index and the model's error)",
    },
    500: {"model": ErrorMessage, "description": "The server's own fault (e.g. out of memory)"},
    503: {"model": ErrorMessage, "description": "Not ready: the model did not load or failed its self-check"},
}
# The body is read raw and validated in one pass, so FastAPI does not see a body parameter: the
# request schema is declared here and added to the components by `openapi` below.
REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
    }
}


def openapi() -> dict:
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        request = PredictRequest.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(request.pop("$defs", {}))
        schemas["PredictRequest"] = request
    return app.openapi_schema


app.openapi = openapi  # type: ignore[method-assign]


def field_path(location: tuple | list) -> str:
    """("body", "instances", 0, "age") -> "instances[0].age"."""
    path = ""
    for part in location:
        if part == "body" and not path:
            continue
        path += f"[{part}]" if isinstance(part, int) else (member(str(part)) if path else str(part))
    return path or "body"


def answer_json(status: int, content: dict) -> Response:
    """JSON with the fast encoder; RequestIdMiddleware adds the X-Request-ID header to every answer."""
    return Response(dumps(content), status_code=status, media_type="application/json")


def invalid_content(problems: list[dict], request_id: str | None = None) -> dict:
    """The 422 body: every problem with its place, and one message naming the first ten."""
    message = "; ".join(f"{p['field']}: {p['msg']}" for p in problems[:10])
    content: dict = {"detail": problems, "message": message}
    if request_id:
        content["request_id"] = request_id
    return content


def validation_problems(errors: list[dict]) -> list[dict]:
    problems = []
    for error in errors:
        loc = list(error["loc"])
        if not loc or loc[0] != "body":
            loc = ["body", *loc]
        problems.append({"loc": loc, "field": field_path(loc), "msg": error["msg"], "type": error["type"]})
    return problems


@app.exception_handler(RequestValidationError)
async def invalid_parameters(request: Request, exc: RequestValidationError) -> Response:
    return answer_json(422, invalid_content(validation_problems(list(exc.errors()))))


def moved_models_hint() -> str:
    """Why a self-check may fail only here: a model placed elsewhere than it ran, while the notebook's
    code still names the device it ran on (a DEVICE = "cuda" constant, say)."""
    moved = {name: p for name, p in service.devices.items() if p["device"] != p["recorded"]}
    if not moved:
        return ""
    where = ", ".join(f"{name} from {p['recorded']} to {p['device']} ({p['why']})" for name, p in moved.items())
    return (f"; models were moved: {where}. If the notebook's code puts its inputs on the device the model "
            "ran on, it cannot run elsewhere: take the device from the model instead "
            "(device = next(net.parameters()).device) and export again")


def predict_instances(instances: list) -> list:
    """Validated instances -> the sample's type -> the entry function -> JSON predictions.

    Runs in a pool thread (app.batching), possibly for several requests' instances at once.
    """
    return outputs_to_json(service.entry(service.to_sample(instances)), service.output_schema, len(instances))


async def predict_content(body: bytes, route: str, request_id: str) -> tuple[int, dict]:
    """One prediction request from its raw body: (status, JSON content). The place that knows its id,
    instances, predictions and latency."""
    if not service.ready:
        return 503, {"detail": f"not ready: {service.not_ready_reason}", "request_id": request_id}
    started = time.perf_counter()
    try:
        instances = decode_request(body)
    except ValidationError as exc:
        return 422, invalid_content(validation_problems(exc.errors(include_url=False, include_input=False)),
                                    request_id)
    count = len(instances)
    if count > service.max_instances:
        detail = f"instances: {count} instances, at most {service.max_instances} per request"
        return 413, {"detail": detail, "request_id": request_id}
    checked = None
    if MONITOR.guard_rejects:  # monitoring: --guard reject refuses values unlike the training data
        checked = MONITOR.check(instances)
        if checked.violations:
            return 422, invalid_content(checked.problems, request_id)
    INSTANCES.observe(count)  # requests the model is asked to answer, not those refused above
    try:
        predictions = await service.batcher.predict(instances, request_id)
    except ModelRejection as exc:
        # The self-check proved the code works: an error on a validated request is about this input.
        MODEL_REJECTIONS.labels(route).inc()
        log.warning("request %s: %s", request_id, exc)
        loc = ["body", "instances"] + ([exc.index] if exc.index is not None else [])
        problem = {"loc": loc, "field": field_path(loc), "msg": f"the model cannot take this input: {exc.cause}",
                   "type": "model_error"}
        return 422, invalid_content([problem], request_id)
    except Exception as exc:  # the server's own fault: keep the traceback in the log
        return 500, server_failure(exc, request_id)
    # monitoring: drift window, guard counts and the log row, all computed later off the request path
    MONITOR.record(request_id, instances, predictions, time.perf_counter() - started, checked)
    return 200, {"predictions": predictions, "model": service.model, "request_id": request_id}


def server_failure(exc: Exception, request_id: str) -> dict:
    """The 500 body for the server's own fault; the traceback goes to the log."""
    log.exception("request %s: the server failed", request_id)
    return {"detail": f"the server failed: {type(exc).__name__}: {exc}", "request_id": request_id}


def no_such_model(name: str, request_id: str) -> dict:
    """The 404 body for /v1/models/NAME:predict with another model's name."""
    detail = f"name: no model {name!r} here; this service serves {service.name!r}"
    return {"detail": detail, "request_id": request_id}


def prediction_route(scope: dict) -> tuple[str, str | None] | None:
    """(route template, model name in the path) for the two prediction addresses, else None."""
    path = scope["path"]
    root = scope.get("root_path") or ""
    if root and path.startswith(root):
        path = path[len(root):]
    if path == "/predict":
        return "/predict", None
    if path.startswith("/v1/models/") and path.endswith(":predict"):
        name = path[len("/v1/models/"):-len(":predict")]
        if name and "/" not in name:
            return "/v1/models/{name}:predict", name
    return None


async def serve_prediction(scope: dict, receive: Callable, send: Callable, route: str, name: str | None) -> None:
    """A prediction request as plain ASGI: what RequestMetrics, RequestIdMiddleware, BodySizeLimit and a
    route do for every other address, in that order, in one function."""
    started = time.perf_counter()
    headers = dict(scope["headers"])
    given = headers.get(b"x-request-id")
    request_id = new_request_id() if given is None else valid_request_id(given)
    if request_id is None:
        status, content = 400, {"detail": REQUEST_ID_PROBLEM}
    else:
        try:
            body = await read_body(headers, receive)
        except BodyProblem as problem:
            status, content = problem.status, {"detail": problem.detail}
        else:
            if body is None:
                return  # the client went away
            if name is not None and name != service.name:
                status, content = 404, no_such_model(name, request_id)
            else:
                try:
                    status, content = await predict_content(body, route, request_id)
                except Exception as exc:  # what FastAPI's error middleware does for the other routes
                    status, content = 500, server_failure(exc, request_id)
    payload = dumps(content)
    response_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if request_id is not None:
        response_headers.append((b"x-request-id", request_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": payload})
    count_request(route, status, time.perf_counter() - started)


# The prediction routes below are answered by serve_prediction before FastAPI routes anything (see
# ServiceApp); they are declared for /docs and /openapi.json, and answer the same way if reached.


async def predict_route(request: Request, route: str) -> Response:
    status, content = await predict_content(await request.body(), route, current_request_id())
    return answer_json(status, content)


@app.post("/predict", response_model=PredictResponse, responses=ERROR_RESPONSES, openapi_extra=REQUEST_BODY)
async def predict(request: Request) -> Response:
    return await predict_route(request, "/predict")


@app.post("/v1/models/{name}:predict", response_model=PredictResponse, responses=ERROR_RESPONSES,
          openapi_extra=REQUEST_BODY)
async def predict_by_name(name: str, request: Request) -> Response:
    """The same as /predict, at the TensorFlow Serving / KServe v1 address."""
    if name != service.name:
        return answer_json(404, no_such_model(name, current_request_id()))
    return await predict_route(request, "/v1/models/{name}:predict")


# Probes and metadata answer on the event loop itself: never queued behind the model's thread pool.


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "alive"}


@app.get("/readyz", responses={503: {"description": "Not ready, with the reason"}})
async def readyz() -> JSONResponse:
    devices = {name: p["device"] for name, p in service.devices.items()}
    if service.ready:
        return JSONResponse({"status": "ready", "devices": devices})
    return JSONResponse(status_code=503, content={"status": "not ready", "reason": service.not_ready_reason,
                                                  "devices": devices})


@app.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@app.get("/version")
async def version() -> dict:
    return service.version_info


gc.freeze()  # what importing made (see the top of this module); the lifespan freezes what loading makes
if _COLLECTING:
    gc.enable()
