"""Thin, authenticated HTTP handlers under /mlship/: the logic lives in history, build and builds."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import asdict
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin

from .. import build, history
from .builds import BuildRunner, ProjectNotFound, resolve_project


class MlshipHandler(ExtensionHandlerMixin, APIHandler):
    @property
    def builds(self) -> BuildRunner:
        return self.extensionapp.builds

    @property
    def root_dir(self) -> str:
        return self.settings.get("server_root_dir", os.getcwd())

    def write_json(self, payload: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(payload))


def _notebook_keys(notebook: str, root_dir: str) -> set[str]:
    """The spellings under which a kernel may have recorded this notebook.

    The panel knows the path relative to the server root; a kernel records JPY_SESSION_NAME, which
    jupyter_server sets to the absolute path.
    """
    keys = {notebook}
    absolute = notebook if os.path.isabs(notebook) else os.path.join(os.path.expanduser(root_dir), notebook)
    keys |= {os.path.normpath(absolute), os.path.realpath(absolute)}
    return keys


class HistoryHandler(MlshipHandler):
    @tornado.web.authenticated
    def get(self) -> None:
        notebook = self.get_query_argument("notebook", default=None)
        records = history.list_exports()
        if notebook:
            keys = _notebook_keys(notebook, self.root_dir)
            records = [r for r in records if r.notebook and (r.notebook in keys or os.path.realpath(r.notebook) in keys)]
        self.write_json({"exports": [asdict(r) for r in records]})


class BuildersHandler(MlshipHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        try:
            # Detection runs `docker info`-like probes: keep them off the event loop.
            builder = await asyncio.get_running_loop().run_in_executor(None, build.detect_builder)
        except build.BuildError as exc:
            self.write_json({"available": False, "builder": None, "reason": str(exc)})
            return
        self.write_json({"available": True, "builder": builder.name, "reason": ""})


class BuildStartHandler(MlshipHandler):
    @tornado.web.authenticated
    async def post(self) -> None:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise tornado.web.HTTPError(400, "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise tornado.web.HTTPError(400, "the request body must be a JSON object with 'project'")
        try:
            project = resolve_project(str(body.get("project") or ""), self.root_dir)
        except ProjectNotFound as exc:
            self.write_json({"message": str(exc)}, status=404 if body.get("project") else 400)
            return
        build = await self.builds.start(project, builder=body.get("builder") or None, tag=body.get("tag") or None)
        self.write_json(build.view(), status=201)


class BuildStatusHandler(MlshipHandler):
    def _build(self, build_id: str):
        build = self.builds.builds.get(build_id)
        if build is None:
            raise tornado.web.HTTPError(404, f"no build {build_id} on this server")
        return build

    @tornado.web.authenticated
    def get(self, build_id: str) -> None:
        try:
            since = max(0, int(self.get_query_argument("since", "0")))
        except ValueError:
            raise tornado.web.HTTPError(400, "'since' must be a line number") from None
        self.write_json(self._build(build_id).view(since))

    @tornado.web.authenticated
    def delete(self, build_id: str) -> None:
        build = self._build(build_id)
        self.builds.cancel(build)
        self.write_json(build.view(len(build.lines)))
