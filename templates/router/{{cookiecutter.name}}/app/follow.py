"""Read a registry alias's current version straight from storage (any fsspec URL), no registry code.

The registry's layout (docs/registry.md of jupyter-mlship): every move of alias A of model NAME is a file
`<ROOT>/<NAME>/aliases/<A>/<SEQ>.json`, SEQ a zero-padded 10-digit number, created once and never
rewritten. The alias points at the `version` of the file with the highest SEQ.
"""

from __future__ import annotations

import json
import re

import fsspec

from app.config import Follow

EVENT_FILE = re.compile(r"^\d{10}\.json$")


class AliasReader:
    def __init__(self, follow: Follow) -> None:
        self.follow = follow
        self.fs, root = fsspec.core.url_to_fs(follow.registry)
        self.folder = f"{root.rstrip('/')}/{follow.name}/aliases/{follow.alias}"

    def current(self) -> str:
        """The alias's version now; ValueError with a clear message when it cannot be read."""
        self.fs.invalidate_cache(self.folder)  # object stores cache listings; a move must show within a poll
        try:
            names = [path.rstrip("/").rsplit("/", 1)[-1] for path in self.fs.ls(self.folder, detail=False)]
        except FileNotFoundError:
            raise ValueError(
                f"alias {self.follow.alias!r} of {self.follow.name!r} does not exist in {self.follow.registry}"
            ) from None
        events = sorted(name for name in names if EVENT_FILE.match(name))
        if not events:
            raise ValueError(f"alias {self.follow.alias!r} of {self.follow.name!r} has no events yet")
        event = json.loads(self.fs.cat_file(f"{self.folder}/{events[-1]}"))
        return str(event["version"])
