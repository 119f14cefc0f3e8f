"""The prediction service: a FastAPI app around the notebook's entry function.

At start-up (the lifespan) it reads ship.json once, imports app.features (which loads the model from
model/), and runs the golden self-check: the notebook's sample must give the notebook's predictions.
Only then does /readyz answer 200. A request is validated (app.schema), converted back to the sample's
type (app.convert) and handed to the entry function; nothing else happens per request.
"""

from __future__ import annotations

import importlib
import json
import logging
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
    loaders = importlib.import_module("app.loaders")
    try:
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


@asynccontextmanager
async def lifespan(app: FastAPI):
    ship = json.loads(SHIP_FILE.read_text(encoding="utf-8"))
    app.title, app.version = ship["name"], ship["version"]  # shown in /docs and /openapi.json
    load_service(ship)
    yield


# --- middleware: body size limit and request metrics (plain ASGI: cheap, sees every request) --------------


async def send_json(send: Callable, status: int, content: dict) -> None:
    body = json.dumps(content).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodySizeLimit:
    """413 for a body over max_body_bytes: by its Content-Length, or by the bytes actually received."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        limit = service.max_body_bytes
        too_large = {"detail": f"request body: larger than the limit of {limit} bytes"}
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await send_json(send, 400, {"detail": "Content-Length: not a number"})
            if int(declared) > limit:
                return await send_json(send, 413, too_large)
        # Read the body here, stopping as soon as it passes the limit, then hand it on.
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return await send_json(send, 413, too_large)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, delivered = b"".join(chunks), False

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
app.add_middleware(RequestMetrics)  # added last: outermost, so it also counts 413s from the limit


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
    413: {"description": "More than max_instances instances, or a body over max_body_bytes"},
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
    try:
        predictions = predict_instances(request)
    except HTTPException:
        raise
    except Exception as exc:  # a genuine model failure: say so, keep the traceback in the log
        log.exception("the entry function failed")
        return JSONResponse(
            status_code=500, content={"detail": f"the model failed: {type(exc).__name__}: {exc}"}
        )
    # Returned as-is (already JSON values); response_model documents it in OpenAPI without re-validating.
    return JSONResponse({"predictions": predictions, "model": {"name": service.name, "version": service.version}})


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
    devices = {name: p["device"] for name, p in service.devices.items()}
    if service.ready:
        return JSONResponse({"status": "ready", "devices": devices})
    return JSONResponse(status_code=503, content={"status": "not ready", "reason": service.not_ready_reason,
                                                  "devices": devices})


@app.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@app.get("/version")
def version() -> dict:
    return service.version_info
