"""The prediction service: a FastAPI app around the notebook's entry function.

At start-up (the lifespan) it reads ship.json once, imports app.features (which loads the model from
model/), and runs the golden self-check: the notebook's sample must give the notebook's predictions.
Only then does /readyz answer 200. A request is validated (app.schema), converted back to the sample's
type (app.convert) and handed to the entry function; app.monitoring checks it against the training data
before and queues it for the inference log after (off the request path).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import platform
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)

from app.convert import compare_predictions, outputs_to_json, sample_converter
from app.schema import PredictRequest, PredictResponse, instances_as_json
from app import monitoring_routes  # data monitoring (issue 10): log, drift, guard, /feedback, /monitoring
from app.monitoring import MONITOR, RequestIdMiddleware, request_id

PROJECT_DIR = Path(__file__).resolve().parent.parent
SHIP_FILE = PROJECT_DIR / "ship.json"

log = logging.getLogger("app")


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
MODEL_INFO = Info("mlship_model", "The model this service serves.", registry=REGISTRY)
READY = Gauge("mlship_ready", "1 when the model is loaded and the self-check passed.", registry=REGISTRY)


# --- start-up -----------------------------------------------------------------------------------------


def load_service(ship: dict) -> None:
    """Import the model code, then prove it reproduces the notebook's golden predictions."""
    service.name, service.version = ship["name"], ship["version"]
    service.max_instances, service.max_body_bytes = ship["max_instances"], ship["max_body_bytes"]
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
    try:
        features = importlib.import_module("app.features")  # loads the model artifacts
        service.entry = getattr(features, ship["entry"]["name"])
    except Exception as exc:
        log.exception("loading the model failed")
        service.not_ready_reason = f"loading the model failed: {type(exc).__name__}: {exc}"
        return
    golden = ship["golden"]
    try:
        request = PredictRequest.model_validate({"instances": golden["instances"]})
        predictions = predict_instances(request)
    except Exception as exc:
        log.exception("the self-check failed")
        service.not_ready_reason = f"self-check raised {type(exc).__name__}: {exc}"
        return
    mismatches = compare_predictions(golden["predictions"], predictions, golden["float_rel_tol"])
    if mismatches:
        log.error("self-check: predictions differ from the notebook's:\n  %s", "\n  ".join(mismatches))
        service.not_ready_reason = "self-check: predictions differ from the notebook's: " + "; ".join(
            mismatches[:5]
        )
        return
    service.ready, service.not_ready_reason = True, ""
    READY.set(1)
    log.info("%s version %s is ready", service.name, service.version)


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
    try:
        ship = read_ship(SHIP_FILE)
        app.title, app.version = ship["name"], ship["version"]  # shown in /docs and /openapi.json
        load_service(ship)
        MONITOR.start(ship, str(PROJECT_DIR))  # monitoring: reference, drift window, inference log writer
    except Exception as exc:
        log.exception("start-up failed")
        service.not_ready_reason = f"start-up failed: {exc}" if isinstance(exc, ValueError) else (
            f"start-up failed: {type(exc).__name__}: {exc}")
    yield
    MONITOR.stop()  # monitoring: SIGTERM lands here; everything queued is written before exit


# --- middleware: body size limit and request metrics (plain ASGI: cheap, sees every request) --------------


async def send_json(send: Callable, status: int, content: dict) -> None:
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


BODY_TIMEOUT_SECONDS = float(os.environ.get("MLSHIP_BODY_TIMEOUT_SECONDS", "30"))
FALLBACK_MAX_BODY_BYTES = 16 * 1024 * 1024  # until ship.json is read (or when it cannot be)


class BodyProblem(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def content_type_problem(scope: dict) -> str | None:
    """Bodies are JSON: say so for another declared Content-Type (none at all is read as JSON)."""
    declared = dict(scope["headers"]).get(b"content-type")
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
    return b"".join(chunks)


async def receive_body_in_time(receive: Callable, limit: int) -> bytes | None:
    """A slow-loris body (a byte now and then) holds a connection only BODY_TIMEOUT_SECONDS: then 408."""
    try:
        if hasattr(asyncio, "timeout"):  # Python 3.11+: no extra task per request
            async with asyncio.timeout(BODY_TIMEOUT_SECONDS):
                return await receive_body(receive, limit)
        return await asyncio.wait_for(receive_body(receive, limit), BODY_TIMEOUT_SECONDS)
    except asyncio.TimeoutError:
        raise BodyProblem(408, f"request body: not received within {BODY_TIMEOUT_SECONDS:g} s") from None


class BodySizeLimit:
    """413 for a body over max_body_bytes: by its Content-Length, or by the bytes actually received.

    Also 415 for a Content-Type that is not JSON and 408 for a body that does not arrive in time."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        problem = content_type_problem(scope)
        if problem:
            return await send_json(send, 415, {"detail": problem})
        limit = service.max_body_bytes or FALLBACK_MAX_BODY_BYTES
        too_large = {"detail": f"request body: larger than the limit of {limit} bytes"}
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await send_json(send, 400, {"detail": "Content-Length: not a number"})
            if int(declared) > limit:
                return await send_json(send, 413, too_large)
        # Read the body here, stopping as soon as it passes the limit or its time, then hand it on.
        try:
            body = await receive_body_in_time(receive, limit)
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
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUESTS.labels(route, str(status)).inc()
            LATENCY.labels(route).observe(time.perf_counter() - started)


# --- the app ------------------------------------------------------------------------------------------

app = FastAPI(
    title="Model service",
    description="Predictions from a model shipped from a Jupyter notebook. See README.md.",
    lifespan=lifespan,
)
app.add_middleware(BodySizeLimit)
app.add_middleware(RequestIdMiddleware)  # monitoring: X-Request-ID in (or new) and out, on every response
app.add_middleware(RequestMetrics)  # added last: outermost, so it also counts 413s from the limit
app.include_router(monitoring_routes.router)  # monitoring: POST /feedback, GET /monitoring
REGISTRY.register(MONITOR)  # monitoring: drift, guard and log metrics, computed at scrape time


def field_path(location: tuple | list) -> str:
    """("body", "instances", 0, "age") -> "instances[0].age"."""
    path = ""
    for part in location:
        if part == "body" and not path:
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


@app.exception_handler(RequestValidationError)
async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"loc": list(e["loc"]), "field": field_path(e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors()
    ]
    message = "; ".join(f"{e['field']}: {e['msg']}" for e in errors[:10])
    return JSONResponse(status_code=422, content={"detail": errors, "message": message})


ERROR_RESPONSES: dict[int | str, dict] = {
    404: {"description": "Unknown model name (/v1/models/NAME:predict)"},
    408: {"description": "The body did not arrive within MLSHIP_BODY_TIMEOUT_SECONDS"},
    413: {"description": "More than max_instances instances, or a body over max_body_bytes"},
    415: {"description": "A Content-Type other than application/json"},
    500: {"description": "The model raised an error on a valid request"},
    503: {"description": "Not ready: the model did not load or failed its self-check"},
}


def predict_instances(request: PredictRequest) -> list:
    """Validated request -> the sample's type -> the entry function -> JSON predictions."""
    instances = instances_as_json(request)
    try:
        sample = service.to_sample(instances)
    except (ValueError, TypeError, OverflowError) as exc:
        raise HTTPException(422, f"instances: cannot be converted to the model's input: {exc}") from exc
    return outputs_to_json(service.entry(sample), service.output_schema, len(instances))


def answer(request: PredictRequest) -> JSONResponse:
    if not service.ready:
        raise HTTPException(503, f"not ready: {service.not_ready_reason}")
    count = len(request.instances)
    if count > service.max_instances:
        raise HTTPException(413, f"instances: {count} instances, at most {service.max_instances} per request")
    INSTANCES.observe(count)
    checked = monitoring_routes.guard(instances_as_json(request))  # monitoring: skew guard (422 if rejecting)
    started = time.perf_counter()
    try:
        predictions = predict_instances(request)
    except HTTPException:
        raise
    except Exception as exc:  # a genuine model failure: say so, keep the traceback in the log
        log.exception("the entry function failed")
        return JSONResponse(
            status_code=500, content={"detail": f"the model failed: {type(exc).__name__}: {exc}"}
        )
    MONITOR.record(checked, predictions, time.perf_counter() - started)  # monitoring: drift window + log
    # Returned as-is (already JSON values); response_model documents it in OpenAPI without re-validating.
    return JSONResponse({"predictions": predictions, "model": {"name": service.name, "version": service.version},
                         "request_id": request_id()})


@app.post("/predict", response_model=PredictResponse, responses=ERROR_RESPONSES)
def predict(request: PredictRequest) -> JSONResponse:
    return answer(request)


@app.post("/v1/models/{name}:predict", response_model=PredictResponse, responses=ERROR_RESPONSES)
def predict_by_name(name: str, request: PredictRequest) -> JSONResponse:
    """The same as /predict, at the TensorFlow Serving / KServe v1 address."""
    if name != service.name:
        raise HTTPException(404, f"name: no model {name!r} here; this service serves {service.name!r}")
    return answer(request)


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "alive"}


@app.get("/readyz", responses={503: {"description": "Not ready, with the reason"}})
def readyz() -> JSONResponse:
    if service.ready:
        return JSONResponse({"status": "ready"})
    return JSONResponse(status_code=503, content={"status": "not ready", "reason": service.not_ready_reason})


@app.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@app.get("/version")
def version() -> dict:
    return service.version_info
