"""The server extension: a route table and its options; handlers.py and builds.py do the work."""

from __future__ import annotations

import sys

from jupyter_server.extension.application import ExtensionApp
from traitlets import List, Unicode

from .builds import BuildRunner
from .handlers import (
    BuildersHandler,
    BuildStartHandler,
    BuildStatusHandler,
    HistoryHandler,
    RegistryListHandler,
    RegistryPromoteHandler,
    RegistryPushHandler,
    RegistryRollbackHandler,
)

# The CLI's entry point run with this server's Python, so the build uses the same installation.
DEFAULT_BUILD_COMMAND = [sys.executable, "-c", "import sys; from jupyter_mlship.cli import main; sys.exit(main())", "build"]


class MlshipExtension(ExtensionApp):
    name = "jupyter_mlship"
    load_other_extensions = True

    build_command = List(
        Unicode(),
        default_value=DEFAULT_BUILD_COMMAND,
        help="Command that builds a project's image; the project path, --builder and --tag are appended.",
    ).tag(config=True)

    registry = Unicode(
        None,
        allow_none=True,
        help="Model registry (a folder or fsspec URL); default: $MLSHIP_REGISTRY, else ~/.local/share/jupyter-mlship/registry.",
    ).tag(config=True)

    handlers = [
        (r"/mlship/history", HistoryHandler),
        (r"/mlship/builders", BuildersHandler),
        (r"/mlship/build", BuildStartHandler),
        (r"/mlship/build/(?P<build_id>[0-9a-f]+)", BuildStatusHandler),
        (r"/mlship/registry", RegistryListHandler),
        (r"/mlship/registry/push", RegistryPushHandler),
        (r"/mlship/registry/promote", RegistryPromoteHandler),
        (r"/mlship/registry/rollback", RegistryRollbackHandler),
    ]

    def initialize_settings(self) -> None:
        self.builds = BuildRunner(list(self.build_command))

    async def stop_extension(self) -> None:
        await self.builds.stop()
