"""Router tests' helpers: uvicorn processes on loopback, routes.yaml rewrites, loud waits, load."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from .notebooks import Service, wait_for  # noqa: F401  (wait_for: re-exported for the router tests)

SUPPORT = Path(__file__).resolve().parent


class Uvicorn(Service):
    """`python -m uvicorn APP` in `cwd` (access log off), waited for until `ready_path` answers 200."""

    def __init__(self, app: str, cwd: Path, env: dict[str, str] | None = None, ready_path: str = "/healthz",
                 app_dir: Path | None = None, wait: bool = True) -> None:
        super().__init__(cwd, env=env, app=app, ready_path=ready_path, ready_timeout=90, wait=wait,
                         args=["--no-access-log", *(["--app-dir", str(app_dir)] if app_dir is not None else [])])


def write_routes(path: Path, routes: dict) -> None:
    """Replace routes.yaml atomically, as an editor or a ConfigMap update does."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(yaml.safe_dump(routes, sort_keys=False), encoding="utf-8")
    os.replace(temporary, path)


def start_router(project: Path, routes_file: Path, routes: dict) -> Uvicorn:
    write_routes(routes_file, routes)
    return Uvicorn("app.main:app", project, env={"ROUTES_FILE": str(routes_file), "ROUTES_WATCH_S": "0.2"})


def routes_now(router: Uvicorn) -> dict:
    return httpx.get(f"{router.url}/routes", timeout=5).json()


def blast(url: str, count: int, body: dict, concurrency: int = 24,
          headers: Callable[[int], dict] | None = None,
          after: Callable[[httpx.AsyncClient, int, httpx.Response], Any] | None = None) -> list[httpx.Response]:
    """`count` POSTs to `url` over keep-alive connections, `concurrency` at a time; responses in order."""

    async def run() -> list[httpx.Response]:
        responses: list[httpx.Response | None] = [None] * count
        next_index = 0
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:

            async def worker() -> None:
                nonlocal next_index
                while next_index < count:
                    index, next_index = next_index, next_index + 1
                    response = await client.post(url, json=body, headers=headers(index) if headers else None)
                    responses[index] = response
                    if after is not None:
                        await after(client, index, response)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return responses  # type: ignore[return-value]

    return asyncio.run(run())


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric_name, _, label_text = series.partition("{")
        got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if metric_name == name and got == wanted:
            return float(value)
    return 0.0
