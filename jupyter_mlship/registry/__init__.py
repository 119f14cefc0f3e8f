"""The model registry: immutable versions and aliases on a local folder or object storage (fsspec).

    from jupyter_mlship.registry import open_registry, parse_ref, RegistryError
"""

from .refs import Ref, RegistryError, UnknownRef, parse_ref
from .store import AliasEvent, AliasState, Registry, VersionRecord, open_registry

__all__ = ["AliasEvent", "AliasState", "Ref", "Registry", "RegistryError", "UnknownRef", "VersionRecord",
           "open_registry", "parse_ref"]
