"""Registry references: ``NAME``, ``NAME@VERSION`` (an integer) or ``NAME@ALIAS``.

Versions are integers, as in MLflow, so a reference is never ambiguous: ``churn@7`` is a version,
``churn@production`` an alias, ``churn`` (or ``churn@latest``) the newest committed version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import ShipError
from ..spec import NAME_PATTERN

ALIAS_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
VERSION_PATTERN = re.compile(r"^[1-9][0-9]{0,9}$")
LATEST = "latest"  # reserved: always the newest version, never an alias one can move


class RegistryError(ShipError):
    """A registry operation was refused or failed; ``str()`` is one sentence for the user."""


class UnknownRef(RegistryError):
    """The model, version or alias a reference names does not exist."""


@dataclass(frozen=True)
class Ref:
    name: str
    version: str | None = None  # an explicit version
    alias: str | None = None  # an alias; neither = the latest version

    def __str__(self) -> str:
        target = self.version or self.alias
        return f"{self.name}@{target}" if target else self.name


def validate_version(version: str) -> str:
    version = str(version).strip()
    if not VERSION_PATTERN.match(version):
        raise RegistryError(f"invalid registry version {version!r}: versions are positive integers like 7")
    return version


def validate_alias(alias: str) -> str:
    if alias == LATEST:
        raise RegistryError("'latest' is reserved (it always means the newest version): choose another alias")
    if not ALIAS_PATTERN.match(alias or ""):
        raise RegistryError(
            f"invalid alias {alias!r}: use lowercase letters, digits, '-' or '_', starting with a letter "
            "(e.g. production, staging)"
        )
    return alias


def validate_model_name(name: str) -> str:
    if not NAME_PATTERN.match(name or ""):
        raise RegistryError(
            f"invalid model name {name!r}: use 1-63 characters, lowercase letters, digits, '-' or '_', starting with a letter"
        )
    return name


def parse_ref(ref: str) -> Ref:
    """``NAME[@VERSION|@ALIAS]`` → Ref; a malformed reference raises RegistryError naming the fault."""
    text = (ref or "").strip()
    if not text:
        raise RegistryError("empty model reference: use NAME, NAME@VERSION or NAME@ALIAS (e.g. churn@7, churn@production)")
    name, sep, target = text.partition("@")
    if "@" in target:
        raise RegistryError(f"invalid model reference {ref!r}: use NAME@VERSION or NAME@ALIAS with a single '@'")
    if not NAME_PATTERN.match(name):
        raise RegistryError(
            f"invalid model reference {ref!r}: the name {name!r} must be lowercase letters, digits, '-' or '_', "
            "starting with a letter"
        )
    if not sep or target == LATEST:
        return Ref(name)
    if not target:
        raise RegistryError(f"invalid model reference {ref!r}: nothing after '@' (use e.g. {name}@7 or {name}@production)")
    if target.isdigit():
        return Ref(name, version=validate_version(target))
    if not ALIAS_PATTERN.match(target):
        raise RegistryError(
            f"invalid model reference {ref!r}: {target!r} is neither a version (an integer) nor an alias "
            "(lowercase letters, digits, '-' or '_', starting with a letter)"
        )
    return Ref(name, alias=target)


def looks_like_ref(text: str) -> bool:
    """Whether a CLI argument names a registry model rather than a folder (it has '@' and no path separator)."""
    return "@" in text and "/" not in text and "\\" not in text
