"""Thin, authenticated HTTP handlers under /mlship/: the logic lives in history, build and builds."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import json
import os
from dataclasses import asdict
from typing import Any

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin

from .. import history
from .builds import BuildRunner, ProjectNotFound, resolve_project

NO_BUILD_MODULE = "container builds are not available in this version"


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
        if importlib.util.find_spec("jupyter_mlship.build") is None:
            self.write_json({"available": False, "builder": None, "reason": NO_BUILD_MODULE})
            return
        build = importlib.import_module("jupyter_mlship.build")
        build_error = getattr(build, "BuildError", Exception)
        try:
            # Detection runs `docker info`-like probes: keep them off the event loop.
            builder = await asyncio.get_running_loop().run_in_executor(None, build.detect_builder)
        except build_error as exc:
            self.write_json({"available": False, "builder": None, "reason": str(exc)})
            return
        self.write_json({"available": True, "builder": getattr(builder, "name", None) or str(builder), "reason": ""})


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


# --- the model registry (issue 8): GET /mlship/registry, POST /mlship/registry/{push,promote,rollback} ---


class RegistryHandler(MlshipHandler):
    """Registry calls may go over the network (S3...): they run off the event loop."""

    def open_registry(self):
        from ..registry import open_registry

        return open_registry(self.extensionapp.registry or None)

    async def off_loop(self, func, *args):
        return await asyncio.get_running_loop().run_in_executor(None, func, *args)

    def json_body(self, *keys: str) -> dict:
        try:
            body = json.loads(self.request.body or b"{}")
        except ValueError:
            raise tornado.web.HTTPError(400, "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise tornado.web.HTTPError(400, f"the request body must be a JSON object with {', '.join(keys)}")
        missing = [k for k in keys if not str(body.get(k) or "").strip()]
        if missing:
            raise tornado.web.HTTPError(400, f"the request body lacks {', '.join(repr(k) for k in missing)}")
        return body

    async def answer(self, func, *args) -> None:
        from ..registry import RegistryError, UnknownRef

        try:
            self.write_json(await self.off_loop(func, *args))
        except UnknownRef as exc:
            self.write_json({"message": str(exc)}, status=404)
        except RegistryError as exc:
            self.write_json({"message": str(exc)}, status=400)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        # Our 4xx answers carry {"message": one sentence}, like the registry's own refusals.
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = getattr(exc, "log_message", None) or self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": message}))


def _alias_json(name: str, alias: str, registry) -> dict:
    state = registry.aliases(name)[alias]
    return {"name": name, "alias": alias, **state.to_json()}


class RegistryListHandler(RegistryHandler):
    @tornado.web.authenticated
    async def get(self) -> None:
        notebook = self.get_query_argument("notebook", default=None)
        keys = _notebook_keys(notebook, self.root_dir) if notebook else None

        def listing() -> dict:
            registry = self.open_registry()
            models = []
            for name in registry.models():
                versions = registry.versions(name)
                if keys is not None and not any(
                        v.notebook and (v.notebook in keys or os.path.realpath(v.notebook) in keys) for v in versions):
                    continue
                models.append({"name": name, "versions": [v.to_json(with_files=False) for v in versions],
                               "aliases": {a: s.to_json() for a, s in registry.aliases(name).items()}})
            return {"registry": registry.uri, "models": models}

        await self.answer(listing)


class RegistryPushHandler(RegistryHandler):
    @tornado.web.authenticated
    async def post(self) -> None:
        body = self.json_body("project")
        try:
            project = resolve_project(str(body["project"]), self.root_dir)
        except ProjectNotFound as exc:
            self.write_json({"message": str(exc)}, status=404)
            return

        def push() -> dict:
            record = self.open_registry().push(project)
            return {**record.to_json(with_files=False), "created": record.created}

        await self.answer(push)


class RegistryPromoteHandler(RegistryHandler):
    @tornado.web.authenticated
    async def post(self) -> None:
        body = self.json_body("name", "version", "alias")
        name, version, alias = str(body["name"]), str(body["version"]), str(body["alias"])

        def promote() -> dict:
            registry = self.open_registry()
            registry.promote(name, version, alias)
            return _alias_json(name, alias, registry)

        await self.answer(promote)


class RegistryRollbackHandler(RegistryHandler):
    @tornado.web.authenticated
    async def post(self) -> None:
        body = self.json_body("name", "alias")
        name, alias = str(body["name"]), str(body["alias"])

        def rollback() -> dict:
            registry = self.open_registry()
            registry.rollback(name, alias)
            return _alias_json(name, alias, registry)

        await self.answer(rollback)
