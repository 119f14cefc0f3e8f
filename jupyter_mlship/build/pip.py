"""Carry the machine's pip settings (index URLs, find-links, trusted hosts, CA bundle) into a build."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from ..capture.environment import PipIndexSettings
from .builders import Builder

PIP_MOUNT_ROOT = "/tmp/mlship-pip"  # where local pip indexes appear inside a podman/buildah build


@dataclass
class PipPassThrough:
    """The machine's pip settings, as seen from inside the build."""

    build_args: dict[str, str] = field(default_factory=dict)
    volumes: list[tuple[str, str]] = field(default_factory=list)  # (host path, path in the build)
    notes: list[str] = field(default_factory=list)



def pip_pass_through(settings: PipIndexSettings, builder: Builder) -> PipPassThrough:
    """Carry index URLs, find-links, trusted hosts and the CA bundle into the build.

    Network URLs pass as they are. Local indexes (paths, file:// URLs) are invisible inside a
    build: podman and buildah get them mounted read-only under /tmp/mlship-pip (build-time only,
    nothing is copied into the image); with docker they are left out and pip inside the build uses
    the network index.
    """
    result = PipPassThrough()
    mounts: dict[str, str] = {}

    def local_path(item: str) -> Path | None:
        if item.startswith("file:"):
            return Path(urllib.parse.unquote(urllib.parse.urlparse(item).path))
        if "://" not in item and item.startswith("/"):
            return Path(item)
        return None

    def translate(item: str, option: str) -> str | None:
        path = local_path(item)
        if path is None:
            return item
        if not path.exists():
            result.notes.append(f"pip {option} {item} does not exist on this machine: left out of the build")
            return None
        if not builder.mounts_in_build:
            result.notes.append(
                f"pip {option} {item} is a local path, which a docker build cannot see: "
                "pip inside the build uses the network index"
            )
            return None
        # An index's pages link to ../../files (or similar) next to simple/: mount its parent.
        root = path.parent if (path.name == "simple" or path.is_file()) else path
        if str(root) not in mounts:
            mounts[str(root)] = f"{PIP_MOUNT_ROOT}/{len(mounts)}"
            result.volumes.append((str(root), mounts[str(root)]))
        inside = mounts[str(root)] + "/" + str(path.relative_to(root)) if path != root else mounts[str(root)]
        inside = inside.rstrip("/").replace("/./", "/")
        return f"file://{inside}" if item.startswith("file:") else inside

    for option, arg, items in (
        ("index-url", "PIP_INDEX_URL", [settings.index_url] if settings.index_url else []),
        ("extra-index-url", "PIP_EXTRA_INDEX_URL", settings.extra_index_urls),
        ("find-links", "PIP_FIND_LINKS", settings.find_links),
    ):
        kept = [translated for item in items if (translated := translate(item, option))]
        if kept:
            result.build_args[arg] = " ".join(kept)
    if settings.trusted_hosts:
        result.build_args["PIP_TRUSTED_HOST"] = " ".join(settings.trusted_hosts)
    cert = (settings.cert or "").strip()
    if cert and Path(cert).is_file() and builder.mounts_in_build:
        # The machine's CA bundle, for indexes behind an intercepting proxy.
        result.volumes.append((cert, f"{PIP_MOUNT_ROOT}/cert.pem"))
        result.build_args["PIP_CERT"] = f"{PIP_MOUNT_ROOT}/cert.pem"
    return result

