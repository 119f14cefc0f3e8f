"""Render the router project: a routes.yaml for some versions of one model, and the router template.

The generated router never imports jupyter_mlship; its routes.yaml is checked here with the template's
own app/config.py (one implementation), so a bad table is refused before anything is written.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from .capture.environment import capture_requirements, python_version, test_requirements
from .fsutil import staged_dir
from .render import render_template
from .runtime import runtime_module

POLICIES = ("split", "shadow", "bandit")
ROUTER_MODULES = ("fastapi", "uvicorn", "httpx", "yaml", "pydantic", "prometheus_client", "fsspec", "redis")
# fsspec protocols whose filesystem lives in another distribution; pinned when the registry uses them.
PROTOCOL_MODULES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}
SERVICE_PORT = 8000  # what a version's image listens on


def router_config() -> ModuleType:
    """The router template's app/config.py (routes.yaml's model), imported as jupyter_mlship._router_config."""
    return runtime_module("config", "router")


def default_routes(name: str, backends: dict[str, str], policy: str = "split",
                   follow: dict[str, str] | None = None, redis: str | None = None) -> dict[str, Any]:
    """A starting routes.yaml: split = canary (first version 90 %, the rest share 10 %), shadow = the first
    answers and the rest shadow it, bandit = every version an arm. With `follow` the alias's version is
    the primary (split: all traffic, shadow: the answering version) and the other versions are shadows."""
    if policy not in POLICIES:
        raise ValueError(f"policy: {policy!r} is not one of {', '.join(POLICIES)}")
    versions = list(backends)
    if not versions:
        raise ValueError("versions: name at least one version to route to")
    routes: dict[str, Any] = {"name": name, "backends": dict(backends)}
    if policy == "split":
        if follow:
            weights: dict[str, float] = {"primary": 100}
        elif len(versions) == 1:
            weights = {versions[0]: 100}
        else:
            rest = 10 / (len(versions) - 1)
            weights = {versions[0]: 90, **{v: int(rest) if rest == int(rest) else round(rest, 4) for v in versions[1:]}}
        routes["policy"] = {"kind": "split", "weights": weights}
    elif policy == "shadow":
        if follow:
            routes["policy"] = {"kind": "shadow", "shadows": versions}
        else:
            if len(versions) < 2:
                raise ValueError("versions: the shadow policy needs a primary and at least one shadow version")
            routes["policy"] = {"kind": "shadow", "primary": versions[0], "shadows": versions[1:]}
    else:
        if len(versions) < 2:
            raise ValueError("versions: a bandit needs at least two versions")
        routes["policy"] = {"kind": "bandit", "arms": versions, "floor": 0.05}
    routes.update({"timeout_s": 5.0, "failover": False})
    if follow:
        routes["follow"] = dict(follow)
    if redis:
        routes["state"] = {"redis": redis}
    return routes


def check_routes(routes: dict[str, Any]) -> None:
    """Raise ValueError naming the key if the router would refuse this table."""
    config = router_config()
    try:
        config.parse_routes(yaml.safe_dump(routes, sort_keys=False), "routes")
    except config.ConfigError as exc:
        raise ValueError(str(exc)) from None


def render_router(name: str, routes: dict[str, Any], out: Path) -> Path:
    """Write the router project for ``routes`` to ``out`` (which must not exist) and return ``out``.

    Rendered beside ``out`` and renamed into place (fsutil.staged_dir): complete or not at all.
    """
    out = Path(out).absolute()
    if out.exists():  # before the checks below, so the message is about the folder
        raise FileExistsError(f"{out} already exists; choose another --out or remove it first")
    routes = {**routes, "name": routes.get("name", name)}
    check_routes(routes)
    with staged_dir(out, replace=False) as folder:
        render_template("router", _context(name, routes), folder)
    return out


def service_host(name: str, version: str) -> str:
    """The host name of a version's container (compose service, Kubernetes Service)."""
    return re.sub(r"[^a-z0-9-]+", "-", f"{name}-v{version}".lower()).strip("-")


def _context(name: str, routes: dict[str, Any]) -> dict[str, Any]:
    versions = list(routes["backends"])
    in_containers = {v: f"http://{service_host(name, v)}:{SERVICE_PORT}" for v in versions}
    follow = routes.get("follow")
    registry = follow["registry"] if follow else ""
    local_registry = bool(follow) and ("://" not in registry or registry.startswith(("file://", "local://")))
    compose_routes = {**routes, "backends": in_containers}
    # In a cluster each version is its own Service (the service template's k8s/service.yaml, applied under
    # the name NAME-vVERSION), which listens on port 80.
    k8s_routes = {**routes, "backends": {v: f"http://{service_host(name, v)}" for v in versions}}
    for variant in (compose_routes, k8s_routes):
        if local_registry:  # a folder on this machine is not visible inside containers
            variant.pop("follow", None)
            if variant["policy"]["kind"] == "split" and "primary" in variant["policy"].get("weights", {}):
                variant["policy"] = {**variant["policy"], "weights": {versions[0]: 100}}
            if variant["policy"]["kind"] == "shadow" and "primary" not in variant["policy"]:
                variant["policy"] = {"kind": "shadow", "primary": versions[0],
                                     "shadows": versions[1:] or versions}
    if routes.get("state", {}).get("redis"):
        compose_routes["state"] = {**routes["state"], "redis": "redis://redis:6379/0"}
    modules = list(ROUTER_MODULES)
    if follow and "://" in follow["registry"]:
        protocol = follow["registry"].split("://", 1)[0]
        if protocol in PROTOCOL_MODULES:
            modules.append(PROTOCOL_MODULES[protocol])
    header = "# Routing table of the {} router (generated by jupyter-mlship); edited live, see README.md.\n"
    return {
        "name": name,
        "_routes_yaml": header.format(name) + _yaml(routes),
        "_compose_routes_yaml": header.format(name) + "# Used by compose.yaml: backends are the containers.\n"
        + _yaml(compose_routes),
        "_k8s_routes_yaml": _yaml(k8s_routes).rstrip("\n"),
        "_versions": {v: service_host(name, v) for v in versions},
        "_redis": bool(routes.get("state", {}).get("redis")),
        # Text, not lists: cookiecutter reads a list as a choice among the template's defaults.
        "_requirements": "".join(f"{r.name}=={r.version}\n" for r in capture_requirements(modules)),
        "_test_requirements": "".join(f"{r.name}=={r.version}\n" for r in test_requirements()),
        "_python_version": python_version(),
    }


def _yaml(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
