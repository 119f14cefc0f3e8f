"""The router: one FastAPI app in front of the model's version services.

It reads routes.yaml at start-up and again whenever the file changes (no restart), and, with `follow`,
polls the registry alias so `mlship promote` / `mlship rollback` move live traffic within a poll. Every
prediction is forwarded to one version through one pooled httpx.AsyncClient; the answer is the service's
own body plus `request_id` and `route`, with X-Request-ID, X-Model-Version and X-Route headers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, Field

from app.config import ConfigError, Routes, load_routes
from app.follow import AliasReader
from app.policies import Table, build_table, key_point, pick_bandit, pick_split, probability_best
from app.state import MemoryState, RedisState

PROJECT_DIR = Path(__file__).resolve().parent.parent
ROUTES_FILE = Path(os.environ.get("ROUTES_FILE", PROJECT_DIR / "routes.yaml"))
WATCH_S = float(os.environ.get("ROUTES_WATCH_S", "1.0"))  # how often routes.yaml is checked for changes
RETRYABLE = {502, 503, 504}  # a backend that is down or not ready; failover may try the next version

log = logging.getLogger("router")
if not log.handlers:  # uvicorn configures only its own loggers: table changes and shadow results go to stderr
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(_handler)
    log.setLevel(os.environ.get("ROUTER_LOG_LEVEL", "INFO").upper())
    log.propagate = False

# --- metrics ------------------------------------------------------------------------------------------
REGISTRY = CollectorRegistry()
REQUESTS = Counter("mlship_router_requests", "Requests answered, by version and status.",
                   ["version", "status"], registry=REGISTRY)
LATENCY = Histogram("mlship_router_request_duration_seconds", "Time to answer the caller, by version.",
                    ["version"], registry=REGISTRY)
ERRORS = Counter("mlship_router_backend_errors", "Backends that failed to answer, by version and kind.",
                 ["version", "kind"], registry=REGISTRY)
FAILOVERS = Counter("mlship_router_failovers", "Requests moved to another version.", ["source", "target"],
                    registry=REGISTRY)
SHADOW = Counter("mlship_router_shadow", "Shadow calls by result: agree, disagree, error, dropped.",
                 ["version", "result"], registry=REGISTRY)
FEEDBACK = Counter("mlship_router_feedback", "Feedback by result.", ["result"], registry=REGISTRY)
ALPHA = Gauge("mlship_router_bandit_alpha", "Beta posterior alpha (1 + rewards) per arm.", ["version"],
              registry=REGISTRY)
BETA = Gauge("mlship_router_bandit_beta", "Beta posterior beta (1 + misses) per arm.", ["version"],
             registry=REGISTRY)
MEAN = Gauge("mlship_router_bandit_mean", "Posterior mean reward per arm.", ["version"], registry=REGISTRY)
RELOADS = Counter("mlship_router_config_reloads", "routes.yaml and alias changes by result.", ["result"],
                  registry=REGISTRY)


@dataclass
class Router:
    """Everything the routes need, filled by the lifespan and swapped whole by the watcher."""

    routes: Routes | None = None
    table: Table | None = None
    stamp: tuple = ()
    loaded_at: float = 0.0
    reload_error: str | None = None
    alias: AliasReader | None = None
    followed: str | None = None
    follow_error: str | None = None
    client: httpx.AsyncClient | None = None
    state: MemoryState | RedisState = field(default_factory=MemoryState)
    rng: random.Random = field(default_factory=random.Random)
    background: set = field(default_factory=set)  # shadow and feedback calls in flight
    shadows_in_flight: int = 0


router = Router()


def _stamp(path: Path) -> tuple:
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def _new_state(routes: Routes) -> MemoryState | RedisState:
    if routes.state.redis:
        prefix = routes.state.key_prefix or f"mlship:router:{routes.name}"
        return RedisState(routes.state.redis, prefix, routes.state.request_ttl_s)
    return MemoryState()


async def apply_routes(routes: Routes) -> None:
    """Make `routes` the configuration in force; raises ValueError (and changes nothing) if it cannot be."""
    alias = router.alias
    followed = router.followed
    if routes.follow is None:
        alias, followed = None, None
    elif router.routes is None or routes.follow != router.routes.follow:
        alias = AliasReader(routes.follow)
        followed = await asyncio.to_thread(alias.current)
    table = build_table(routes, followed)
    if router.routes is None or routes.state != router.routes.state:
        old, router.state = router.state, _new_state(routes)
        await old.close()
    router.routes, router.table, router.alias, router.followed = routes, table, alias, followed
    router.follow_error, router.loaded_at = None, time.time()
    log.info("routing %s: %s", routes.name, _describe(table))


def _describe(table: Table) -> str:
    if table.kind == "split":
        return "split " + ", ".join(f"{v} {w:.1%}" for v, w in table.weights.items())
    if table.kind == "shadow":
        return f"shadow: {table.primary} answers, {', '.join(table.shadows) or 'no shadow'} in the background"
    return f"bandit over {', '.join(table.arms)} (floor {table.floor})"


async def watch() -> None:
    """Re-read routes.yaml when it changes and the followed alias every poll; keep the last good table."""
    while True:
        interval = min(WATCH_S, router.routes.follow.poll_s if router.routes and router.routes.follow else WATCH_S)
        await asyncio.sleep(interval)
        try:
            stamp = _stamp(ROUTES_FILE)
            if stamp != router.stamp:
                router.stamp = stamp
                await apply_routes(load_routes(ROUTES_FILE))
                router.reload_error = None
                RELOADS.labels("ok").inc()
        except (ConfigError, ValueError, OSError) as exc:
            router.reload_error = f"{exc}; still routing by the previous table"
            RELOADS.labels("error").inc()
            log.error("routes.yaml: %s", router.reload_error)
        if router.alias is not None and router.routes is not None:
            try:
                followed = await asyncio.to_thread(router.alias.current)
                if followed != router.followed:
                    table = build_table(router.routes, followed)
                    previous, router.table, router.followed = router.followed, table, followed
                    RELOADS.labels("alias").inc()
                    log.info("alias %s moved %s -> %s: %s", router.routes.follow.alias, previous, followed,
                             _describe(table))
                router.follow_error = None
            except Exception as exc:  # storage hiccup or a bad target: keep routing, say why in /routes
                router.follow_error = f"{exc}; still routing to version {router.followed}"


@asynccontextmanager
async def lifespan(app: FastAPI):
    router.stamp = _stamp(ROUTES_FILE) if ROUTES_FILE.exists() else ()
    await apply_routes(load_routes(ROUTES_FILE))  # a bad routes.yaml stops start-up with its message
    app.title = f"{router.routes.name} router"
    # One pooled client for every backend; per-request timeouts come from routes.yaml.
    router.client = httpx.AsyncClient(limits=httpx.Limits(max_connections=512, max_keepalive_connections=128))
    watcher = asyncio.create_task(watch())
    try:
        yield
    finally:
        watcher.cancel()
        for task in list(router.background):
            task.cancel()
        await router.client.aclose()
        await router.state.close()


app = FastAPI(title="Model router", description="Routes predictions between model versions. See README.md.",
              lifespan=lifespan)


@app.exception_handler(RequestValidationError)
async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    """422 naming each bad field, without echoing the input: a NaN or 1e999 in it cannot be sent as JSON
    (FastAPI's own handler answered those with a 500)."""
    problems = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                for e in exc.errors()]
    message = "; ".join(".".join(str(p) for p in e["loc"][1:]) + f": {e['msg']}" for e in problems[:10])
    return JSONResponse({"detail": problems, "message": message}, status_code=422)


# --- choosing and forwarding --------------------------------------------------------------------------


def sticky_key(request: Request, body: bytes) -> str | None:
    sticky = router.routes.policy.sticky  # type: ignore[union-attr]
    if sticky.header:
        return request.headers.get(sticky.header)
    try:
        first = json.loads(body)["instances"][0]
        value = first.get(sticky.field) if isinstance(first, dict) else None
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return None if value is None else str(value)


async def choose(table: Table, request: Request, body: bytes) -> str:
    if table.kind == "shadow":
        return table.primary  # type: ignore[return-value]
    if table.kind == "bandit":
        posteriors = await router.state.posteriors(table.arms)
        _set_posterior_gauges(posteriors)
        return pick_bandit(posteriors, table.floor, router.rng)
    key = sticky_key(request, body) if router.routes.policy.sticky else None  # type: ignore[union-attr]
    point = key_point(key, router.routes.policy.salt) if key is not None else router.rng.random()  # type: ignore[union-attr]
    return pick_split(table.weights, point)


def _set_posterior_gauges(posteriors: dict[str, tuple[float, float]]) -> None:
    for version, (alpha, beta) in posteriors.items():
        ALPHA.labels(version).set(alpha)
        BETA.labels(version).set(beta)
        MEAN.labels(version).set(alpha / (alpha + beta))


def _forward_headers(request: Request, request_id: str) -> dict[str, str]:
    headers = {"content-type": request.headers.get("content-type", "application/json"), "x-request-id": request_id}
    for name in ("authorization", "traceparent", "tracestate"):
        if name in request.headers:
            headers[name] = request.headers[name]
    return headers


async def call_backend(version: str, path: str, body: bytes, headers: dict[str, str],
                       timeout: float) -> httpx.Response:
    url = router.routes.backends[version] + path  # type: ignore[union-attr]
    return await router.client.post(  # type: ignore[union-attr]
        url, content=body, headers=headers,
        timeout=httpx.Timeout(timeout, connect=min(router.routes.connect_timeout_s, timeout)),  # type: ignore[union-attr]
    )


async def forward(request: Request, path: str) -> Response:
    routes, table = router.routes, router.table
    if routes is None or table is None:
        raise HTTPException(503, "no routing table loaded")
    started = time.perf_counter()
    body = await request.body()
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    headers = _forward_headers(request, request_id)
    chosen = await choose(table, request, body)
    candidates = [chosen]
    if routes.failover:
        candidates += [v for v in table.versions() if v != chosen]
    upstream, version, failures = None, chosen, []  # failures: (status, message) per version tried
    for version in candidates:
        try:
            answer = await call_backend(version, path, body, headers, routes.timeout_s)
        except httpx.TimeoutException:
            ERRORS.labels(version, "timeout").inc()
            failures.append((504, f"version {version} did not answer within {routes.timeout_s:g} s"))
            continue
        except httpx.HTTPError as exc:
            ERRORS.labels(version, "unreachable").inc()
            failures.append((502, f"version {version} at {routes.backends[version]} is unreachable "
                                  f"({type(exc).__name__}: {exc})"))
            continue
        if answer.status_code in RETRYABLE:
            ERRORS.labels(version, f"http_{answer.status_code}").inc()
            failures.append((502, f"version {version} answered {answer.status_code}: {answer.text[:200]}"))
            if version != candidates[-1]:
                continue
        upstream = answer
        break
    if version != chosen and upstream is not None:
        FAILOVERS.labels(chosen, version).inc()
    if table.kind == "shadow":
        _start_shadows(table, path, body, headers, upstream)
    route_headers = {"X-Request-ID": request_id, "X-Model-Version": version, "X-Route": table.kind}
    if upstream is None:
        # 504 only when every version tried was too slow; a refused connection is a 502.
        status = 504 if all(code == 504 for code, _ in failures) else 502
        message = "; ".join(text for _, text in failures)
        REQUESTS.labels(version, str(status)).inc()
        LATENCY.labels(version).observe(time.perf_counter() - started)
        return JSONResponse({"detail": message, "version": version, "request_id": request_id},
                            status_code=status, headers=route_headers)
    if version != chosen:
        route_headers["X-Failover-From"] = chosen
    content = _with_route(upstream, request_id, version, table.kind, chosen)
    if upstream.is_success:
        await router.state.remember(request_id, version)
    REQUESTS.labels(version, str(upstream.status_code)).inc()
    LATENCY.labels(version).observe(time.perf_counter() - started)
    if isinstance(content, bytes):
        return Response(content, status_code=upstream.status_code, headers=route_headers,
                        media_type=upstream.headers.get("content-type"))
    return JSONResponse(content, status_code=upstream.status_code, headers=route_headers)


def _with_route(upstream: httpx.Response, request_id: str, version: str, kind: str, chosen: str) -> Any:
    """The service's JSON body plus request_id and route; a non-JSON body is passed on untouched."""
    try:
        content = upstream.json()
    except ValueError:
        return upstream.content
    if isinstance(content, dict):
        content.setdefault("request_id", request_id)
        content["route"] = {"version": version, "policy": kind}
        if version != chosen:
            content["route"]["failover_from"] = chosen
    return content


# --- shadow -------------------------------------------------------------------------------------------


def _start_shadows(table: Table, path: str, body: bytes, headers: dict[str, str],
                   primary: httpx.Response | None) -> None:
    """Fire and forget: the caller's answer is already decided and never waits for a shadow."""
    primary_predictions = _predictions(primary) if primary is not None and primary.is_success else None
    for shadow in table.shadows:
        if router.shadows_in_flight >= router.routes.policy.max_in_flight:  # type: ignore[union-attr]
            SHADOW.labels(shadow, "dropped").inc()
            continue
        router.shadows_in_flight += 1
        task = asyncio.create_task(_shadow_call(shadow, path, body, {**headers, "x-shadow": "1"},
                                                primary_predictions))
        router.background.add(task)
        task.add_done_callback(router.background.discard)


async def _shadow_call(version: str, path: str, body: bytes, headers: dict[str, str],
                       primary_predictions: Any) -> None:
    result = "error"
    try:
        answer = await call_backend(version, path, body, headers, router.routes.shadow_timeout_s)  # type: ignore[union-attr]
        if answer.is_success and primary_predictions is not None:
            result = "agree" if same_predictions(primary_predictions, _predictions(answer)) else "disagree"
        elif answer.is_success:
            result = "no_primary"
    except Exception as exc:  # a shadow's failure is only counted and logged, never seen by a caller
        log.debug("shadow %s failed: %s", version, exc)
    finally:
        router.shadows_in_flight -= 1
    SHADOW.labels(version, result).inc()
    log.info(json.dumps({"event": "shadow", "request_id": headers["x-request-id"], "shadow": version,
                         "result": result}))


def _predictions(response: httpx.Response) -> Any:
    try:
        return response.json().get("predictions")
    except (ValueError, AttributeError):
        return None


def same_predictions(a: Any, b: Any, rel_tol: float = 1e-6) -> bool:
    """Equal JSON predictions, floats within a relative tolerance (two builds may round differently)."""
    if isinstance(a, float) or isinstance(b, float):
        return (isinstance(a, (int, float)) and isinstance(b, (int, float))
                and math.isclose(a, b, rel_tol=rel_tol, abs_tol=1e-12))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_predictions(x, y, rel_tol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_predictions(a[k], b[k], rel_tol) for k in a)
    return a == b


# --- routes -------------------------------------------------------------------------------------------


@app.post("/predict")
async def predict(request: Request) -> Response:
    return await forward(request, "/predict")


@app.post("/v1/models/{name}:predict")
async def predict_by_name(name: str, request: Request) -> Response:
    if router.routes is None or name != router.routes.name:
        raise HTTPException(404, f"name: no model {name!r} here; this router serves "
                                 f"{router.routes.name if router.routes else 'nothing yet'!r}")
    return await forward(request, f"/v1/models/{name}:predict")


@app.post("/route")
async def route_only(request: Request) -> JSONResponse:
    """The version this request goes to, chosen and remembered exactly as for /predict, but not forwarded.

    For checking a table ("which version does user X see?") and for simulating a policy at high rates:
    feedback on the returned request_id counts like feedback on a real prediction.
    """
    table = router.table
    if router.routes is None or table is None:
        raise HTTPException(503, "no routing table loaded")
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    version = await choose(table, request, await request.body())
    await router.state.remember(request_id, version)
    return JSONResponse({"request_id": request_id, "version": version, "policy": table.kind},
                        headers={"X-Request-ID": request_id, "X-Model-Version": version, "X-Route": table.kind})


class Feedback(BaseModel):
    request_id: str
    reward: float = Field(ge=0, le=1, allow_inf_nan=False)
    outcome: Any = None  # passed on to the version's service; the reward when left out


@app.post("/feedback")
async def feedback(items: Feedback | list[Feedback]) -> JSONResponse:
    """Rewards for earlier requests: they update the bandit and go on to the version that answered."""
    items = items if isinstance(items, list) else [items]
    rewarded, unknown = 0, []
    table = router.table
    outcomes: dict[str, list[dict]] = {}  # version -> what goes on to its own /feedback, one call each
    for item in items:
        version = await router.state.take(item.request_id)
        if version is None:
            unknown.append(item.request_id)
            FEEDBACK.labels("unknown").inc()
            continue
        rewarded += 1
        FEEDBACK.labels("ok").inc()
        if table is not None and table.kind == "bandit" and version in table.arms:
            await router.state.add_reward(version, item.reward)
        outcome = item.reward if item.outcome is None else item.outcome
        outcomes.setdefault(version, []).append({"request_id": item.request_id, "outcome": outcome})
    for version, batch in outcomes.items():
        task = asyncio.create_task(_pass_feedback(version, batch))
        router.background.add(task)
        task.add_done_callback(router.background.discard)
    if unknown and not rewarded:
        raise HTTPException(404, f"request_id: {unknown[0]!r} is unknown here (never routed, already "
                                 "rewarded, or too old)")
    return JSONResponse({"rewarded": rewarded, "unknown": unknown})


async def _pass_feedback(version: str, batch: list[dict]) -> None:
    try:
        body = json.dumps(batch if len(batch) > 1 else batch[0]).encode()
        await call_backend(version, "/feedback", body, {"content-type": "application/json"},
                           router.routes.timeout_s)  # type: ignore[union-attr]
    except Exception as exc:  # the service may predate /feedback; the bandit has its reward already
        log.debug("feedback to version %s failed: %s", version, exc)


@app.get("/routes")
async def routes_table() -> JSONResponse:
    """The table in force, where it came from, and the bandit's posteriors."""
    routes, table = router.routes, router.table
    if routes is None or table is None:
        raise HTTPException(503, "no routing table loaded")
    body: dict[str, Any] = {
        "name": routes.name,
        "policy": table.kind,
        "backends": routes.backends,
        "source": str(ROUTES_FILE),
        "loaded_at": router.loaded_at,
        "reload_error": router.reload_error,
        "failover": routes.failover,
        "state": router.state.description,
    }
    if table.kind == "split":
        body["weights"] = table.weights
        body["sticky"] = routes.policy.sticky.model_dump(exclude_none=True) if routes.policy.sticky else None  # type: ignore[union-attr]
    elif table.kind == "shadow":
        body["primary"], body["shadows"] = table.primary, list(table.shadows)
    else:
        posteriors = await router.state.posteriors(table.arms)
        _set_posterior_gauges(posteriors)
        best = probability_best(posteriors, router.rng)
        body["floor"] = table.floor
        body["arms"] = {arm: {"alpha": a, "beta": b, "mean": a / (a + b), "p_best": best[arm]}
                        for arm, (a, b) in posteriors.items()}
    if routes.follow is not None:
        body["follow"] = {**routes.follow.model_dump(), "version": router.followed, "error": router.follow_error}
    return JSONResponse(body)


@app.get("/healthz")
def healthz() -> dict:
    return {"status": "alive"}


@app.get("/readyz")
async def readyz() -> JSONResponse:
    """Ready when a table is loaded and at least one version that answers callers is ready."""
    routes, table = router.routes, router.table
    if routes is None or table is None:
        return JSONResponse({"status": "not ready", "reason": "no routing table loaded"}, status_code=503)

    async def ready(version: str) -> bool:
        try:
            answer = await router.client.get(routes.backends[version] + "/readyz", timeout=2)  # type: ignore[union-attr]
            return answer.status_code == 200
        except httpx.HTTPError:
            return False

    versions = table.versions()
    states = dict(zip(versions, await asyncio.gather(*(ready(v) for v in versions))))
    if any(states.values()):
        return JSONResponse({"status": "ready", "versions": states})
    return JSONResponse({"status": "not ready", "reason": "no version is ready", "versions": states},
                        status_code=503)


@app.get("/metrics")
async def metrics() -> Response:
    if router.table is not None and router.table.kind == "bandit":
        try:  # with Redis the other replicas' rewards count too
            _set_posterior_gauges(await router.state.posteriors(router.table.arms))
        except Exception as exc:
            log.warning("bandit state unreadable: %s", exc)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
