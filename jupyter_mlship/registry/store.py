"""The registry: immutable model versions and movable aliases on any fsspec filesystem.

Layout (a contract: docs/registry.md; the generated router reads aliases without importing us)::

    ROOT/NAME/versions/VERSION/claim.json      created exclusively: this push owns VERSION
    ROOT/NAME/versions/VERSION/project/...     the project's files
    ROOT/NAME/versions/VERSION/version.json    written LAST: the commit marker (and the sha256 manifest)
    ROOT/NAME/aliases/ALIAS/SEQ.json           one event per move, created exclusively, never overwritten

Object stores have no rename, so atomicity comes from ordering (files first, version.json last) and from
exclusive creates: O_EXCL (a hard link of a finished temp file) on a local folder, ``If-None-Match: *``
(s3fs ``mode="create"``) on S3. Backends without conditional writes are used with a warning: one writer.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import hashlib
import json
import os
import re
import socket
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from ..fsutil import sha256_file
from .refs import (
    LATEST,
    Ref,
    RegistryError,
    UnknownRef,
    parse_ref,
    validate_alias,
    validate_model_name,
    validate_version,
)

REGISTRY_ENV = "MLSHIP_REGISTRY"
SEQ_FILE = re.compile(r"^(\d{10})\.json$")
CONTENT_LOCK_S = 600.0  # a push of the same bytes that holds its lock longer than this has died
DEFAULT_GC_AGE_S = 3600.0  # an uncommitted version younger than this may be a push still running



def default_registry() -> str:
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(data) / "jupyter-mlship" / "registry")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def current_user() -> str:
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        user = "unknown"
    return os.environ.get("MLSHIP_USER") or f"{user}@{socket.gethostname()}"


# --- records ----------------------------------------------------------------------------------


@dataclass
class VersionRecord:
    """The contents of version.json: what a version is, where it came from, and its sha256 manifest."""

    name: str
    version: str
    parent: str | None  # the newest version of NAME when this one was pushed
    pushed_at: str  # ISO 8601, UTC
    pushed_by: str
    notebook: str | None
    cell: int | None  # In[n] of the entry function
    git_commit: str | None  # HEAD of the notebook's git repository, when it is in one
    verified: bool  # the export's tests passed in a clean environment
    verify_result: str  # e.g. "passed (5 tests)", "not run"
    size_bytes: int
    sha256s: dict[str, str]  # artifact name -> sha256 (model/manifest.json)
    files: dict[str, dict[str, Any]]  # project-relative path -> {"sha256", "size"}
    content_sha256: str  # identity of the project, registry stamp excluded: re-push = no-op
    registry: str = ""
    format: int = 1
    created: bool = field(default=True, compare=False)  # False: this push found the version already there

    def to_json(self, with_files: bool = True) -> dict[str, Any]:
        data = asdict(self)
        data.pop("created")
        if not with_files:
            data.pop("files")
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VersionRecord:
        known = {f for f in cls.__dataclass_fields__ if f != "created"}
        return cls(**{k: v for k, v in data.items() if k in known}, created=False)


@dataclass
class AliasEvent:
    alias: str
    version: str
    previous: str | None
    time: str
    by: str
    action: str  # "promote" | "rollback"
    seq: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AliasState:
    alias: str
    version: str | None  # the current target: the version of the highest SEQ
    history: list[AliasEvent]  # oldest first

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version,
                "history": [{"version": e.version, "previous": e.previous, "time": e.time, "by": e.by,
                             "action": e.action, "seq": e.seq} for e in self.history]}

    def live_stack(self) -> list[str]:
        """The targets a rollback walks back through: a promote pushes, a rollback pops."""
        stack: list[str] = []
        for event in self.history:
            if event.action == "rollback" and stack:
                stack.pop()
                if not stack or stack[-1] != event.version:
                    stack.append(event.version)
            else:
                stack.append(event.version)
        return stack


# --- errors -------------------------------------------------------------------------------------


def _credentials_hint(protocol: str) -> str:
    return {
        "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE",
        "gs": "set GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default login`",
        "gcs": "set GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default login`",
        "az": "set AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME with a key",
        "abfs": "set AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME with a key",
    }.get(protocol, "configure this backend's usual credentials")


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# --- the registry ----------------------------------------------------------------------------


class Registry:
    def __init__(self, uri: str, fs: Any, root: str) -> None:
        self.uri = uri
        self.fs = fs
        self.root = root.rstrip("/")
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        self.protocol = protocol
        self.local = protocol in ("file", "local")

    def __repr__(self) -> str:
        return f"Registry({self.uri!r})"

    # paths
    def _p(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def _version_dir(self, name: str, version: str) -> str:
        return self._p(name, "versions", version)

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Backend exceptions → one sentence: missing credentials, unreachable, no such bucket."""
        try:
            yield
        except RegistryError:
            raise
        except Exception as exc:
            kind = type(exc).__name__
            if kind in {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError",
                        "DefaultCredentialsError"}:
                raise RegistryError(
                    f"no credentials for the registry {self.uri} while {doing}: {_credentials_hint(self.protocol)}"
                ) from exc
            if isinstance(exc, PermissionError):
                raise RegistryError(
                    f"the registry {self.uri} refused access while {doing} ({_cause(exc)}): check the credentials "
                    f"({_credentials_hint(self.protocol)})"
                ) from exc
            if isinstance(exc, FileNotFoundError) and not self.local and "bucket" in str(exc).lower():
                raise RegistryError(
                    f"the registry {self.uri} does not exist (no such bucket) while {doing}: create the bucket first"
                ) from exc
            if kind in {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError",
                        "ConnectionError", "ConnectionRefusedError", "ServerDisconnectedError"} \
                    or isinstance(exc, (ConnectionError, TimeoutError)) or "Could not connect" in str(exc):
                raise RegistryError(f"the registry {self.uri} cannot be reached while {doing}: {_cause(exc)}") from exc
            raise RegistryError(f"the registry {self.uri} failed while {doing}: {_cause(exc)}") from exc

    def _fresh(self) -> None:
        # s3fs caches listings; other writers change the registry under us.
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache()

    # low-level reads and writes
    def _ls_names(self, path: str) -> list[str]:
        try:
            entries = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        return sorted({str(e).rstrip("/").rsplit("/", 1)[-1] for e in entries})

    def _read_json(self, path: str) -> Any | None:
        try:
            return json.loads(self.fs.cat_file(path))
        except FileNotFoundError:
            return None

    def _create_exclusive(self, path: str, data: bytes) -> None:
        """Create ``path`` with ``data`` or raise FileExistsError; a reader never sees it half-written."""
        if self.local:
            local = self.fs._strip_protocol(path)
            folder = os.path.dirname(local)
            os.makedirs(folder, exist_ok=True)
            temp = os.path.join(folder, f".tmp-{uuid.uuid4().hex}")
            with open(temp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            try:
                os.link(temp, local)  # atomic, and fails with EEXIST: O_EXCL with the content already there
            finally:
                os.unlink(temp)
            return
        try:
            self.fs.pipe_file(path, data, mode="create")  # S3: PutObject with If-None-Match: *
        except FileExistsError:
            raise
        except (TypeError, NotImplementedError, ValueError):
            warnings.warn(f"{self.protocol}:// has no conditional create here: keep to one writer at a time",
                          stacklevel=3)
            if self.fs.exists(path):
                raise FileExistsError(path) from None
            self.fs.pipe_file(path, data)

    # --- reading --------------------------------------------------------------------------------

    def models(self) -> list[str]:
        with self._errors("listing models"):
            self._fresh()
            names = [n for n in self._ls_names(self.root) if not n.startswith(".") and self._has_versions(n)]
            if not names and not self.local and not self.fs.exists(self.root.split("/")[0]):
                raise RegistryError(f"the registry {self.uri} does not exist (no such bucket): create the bucket first")
            return names

    def _has_versions(self, name: str) -> bool:
        return bool(self._ls_names(self._p(name, "versions")))

    def versions(self, name: str) -> list[VersionRecord]:
        """Committed versions of ``name``, oldest first (a version without version.json is invisible)."""
        validate_model_name(name)
        with self._errors(f"listing the versions of {name}"):
            self._fresh()
            return self._versions(name)

    def _versions(self, name: str) -> list[VersionRecord]:
        numbers = [v for v in self._ls_names(self._p(name, "versions")) if v.isdigit()]
        paths = [self._p(name, "versions", v, "version.json") for v in numbers]
        if not paths:
            return []
        blobs = self.fs.cat(paths, on_error="omit")
        records = []
        for path, blob in blobs.items():
            try:
                records.append(VersionRecord.from_json(json.loads(blob)))
            except (ValueError, TypeError) as exc:
                raise RegistryError(f"{path} in the registry is damaged ({exc}); it cannot be read") from exc
        return sorted(records, key=lambda r: int(r.version))

    def _all_version_numbers(self, name: str) -> list[int]:
        """Committed or not: a new version number must be beyond every claimed one."""
        return sorted(int(v) for v in self._ls_names(self._p(name, "versions")) if v.isdigit())

    def resolve(self, ref: str) -> VersionRecord:
        parsed = parse_ref(ref) if isinstance(ref, str) else ref
        with self._errors(f"resolving {parsed}"):
            self._fresh()
            return self._resolve(parsed)

    def _resolve(self, ref: Ref) -> VersionRecord:
        version = ref.version
        if not self._ls_names(self._p(ref.name, "versions")):
            raise UnknownRef(f"no model {ref.name!r} in the registry {self.uri}")
        if ref.alias:
            state = self._alias_state(ref.name, ref.alias)
            if state.version is None:
                known = ", ".join(sorted(self._alias_names(ref.name))) or "none"
                raise UnknownRef(f"{ref.name} has no alias {ref.alias!r} in {self.uri} (aliases: {known})")
            version = state.version
        if version is None:
            records = self._versions(ref.name)
            if not records:
                raise UnknownRef(f"no model {ref.name!r} in the registry {self.uri}")
            return records[-1]
        blob = self._read_json(self._p(ref.name, "versions", version, "version.json"))
        if blob is None:
            if not self._ls_names(self._p(ref.name, "versions")):
                raise UnknownRef(f"no model {ref.name!r} in the registry {self.uri}")
            raise UnknownRef(f"{ref.name} has no version {version} in the registry {self.uri}")
        return VersionRecord.from_json(blob)

    # --- aliases ----------------------------------------------------------------------------------

    def _alias_names(self, name: str) -> list[str]:
        return [a for a in self._ls_names(self._p(name, "aliases")) if not a.startswith(".")]

    def _alias_state(self, name: str, alias: str) -> AliasState:
        folder = self._p(name, "aliases", alias)
        seqs = sorted(n for n in self._ls_names(folder) if SEQ_FILE.match(n))
        history: list[AliasEvent] = []
        if seqs:
            blobs = self.fs.cat([f"{folder}/{s}" for s in seqs], on_error="omit")
            for path in sorted(blobs):
                data = json.loads(blobs[path])
                seq = int(SEQ_FILE.match(path.rsplit("/", 1)[-1]).group(1))  # type: ignore[union-attr]
                history.append(AliasEvent(alias=alias, version=str(data["version"]), previous=data.get("previous"),
                                          time=data.get("time", ""), by=data.get("by", ""),
                                          action=data.get("action", "promote"), seq=seq))
        return AliasState(alias=alias, version=history[-1].version if history else None, history=history)

    def aliases(self, name: str) -> dict[str, AliasState]:
        validate_model_name(name)
        with self._errors(f"reading the aliases of {name}"):
            self._fresh()
            return {alias: self._alias_state(name, alias) for alias in self._alias_names(name)}

    def _move_alias(self, name: str, alias: str, version: str, action: str, state: AliasState) -> AliasEvent:
        seq = (state.history[-1].seq if state.history else 0) + 1
        event = AliasEvent(alias=alias, version=version, previous=state.version, time=now_iso(),
                           by=current_user(), action=action, seq=seq)
        body = {k: v for k, v in event.to_json().items() if k != "seq"}
        try:
            self._create_exclusive(self._p(name, "aliases", alias, f"{seq:010d}.json"),
                                   (json.dumps(body, indent=2) + "\n").encode())
        except FileExistsError:
            raise RegistryError(
                f"alias {alias!r} of {name} was moved by someone else at the same moment; nothing was changed: "
                f"check `mlship models {name}` and run the command again if it is still wanted"
            ) from None
        return event

    def promote(self, name: str, version: str, alias: str) -> AliasEvent:
        """Point ``alias`` at ``version`` (a committed version); one exclusive event file per move."""
        validate_model_name(name)
        version = validate_version(version)
        validate_alias(alias)
        with self._errors(f"promoting {name} {version} to {alias}"):
            self._fresh()
            self._resolve(Ref(name, version=version))  # refuses an unknown version, writes nothing
            state = self._alias_state(name, alias)
            if state.version == version:  # no move, no event: a rollback after it still goes back a version
                return replace(state.history[-1], action="unchanged")
            return self._move_alias(name, alias, version, "promote", state)

    def rollback(self, name: str, alias: str) -> AliasEvent:
        """Move ``alias`` back to the target it had before its current one."""
        validate_model_name(name)
        validate_alias(alias)
        with self._errors(f"rolling back {name}@{alias}"):
            self._fresh()
            state = self._alias_state(name, alias)
            if state.version is None:
                raise UnknownRef(f"{name} has no alias {alias!r} in {self.uri}: nothing to roll back")
            stack = state.live_stack()
            if len(stack) < 2:
                raise RegistryError(
                    f"alias {alias!r} of {name} has no earlier version to roll back to: version {state.version} is "
                    "where it started, or where earlier rollbacks brought it"
                )
            return self._move_alias(name, alias, stack[-2], "rollback", state)

    # --- push -----------------------------------------------------------------------------------

    def push(self, project: Path, version: str | None = None) -> VersionRecord:
        """Publish the project folder as an immutable version; identical bytes again = the same version.

        Files go up first, version.json last; the project's ship.json and REVIEW.md are stamped with the
        registry, version and parent (in the registry's copy and in the folder) before they are hashed.
        """
        from .project import ProjectFiles

        files = ProjectFiles.read(Path(project))
        name = files.name
        if version is not None:
            version = validate_version(version)
        with self._errors(f"pushing {name}"):
            self._fresh()
            records = self._versions(name)
            if version is not None:
                existing = next((r for r in records if r.version == version), None)
                if existing is not None:
                    if existing.content_sha256 == files.content_sha256:
                        files.stamp_local(existing)
                        return existing
                    raise RegistryError(
                        f"{name} version {version} already exists in {self.uri} with different contents; versions "
                        "are immutable: push without --version to get the next one"
                    )
            else:
                same = next((r for r in reversed(records) if r.content_sha256 == files.content_sha256), None)
                if same is not None:
                    files.stamp_local(same)
                    return same
                pushed = self._own_content(name, files.content_sha256)  # the same bytes pushed meanwhile
                if pushed is not None:
                    files.stamp_local(pushed)
                    return pushed
                records = self._versions(name)  # others may have pushed other bytes while this one waited
            parent = records[-1].version if records else None
            version = self._claim(name, version)
            record = files.record(self, version, parent)
            base = self._version_dir(name, version)
            try:
                self._upload(files, record, base)
            except BaseException:
                # We own this version number (its claim): take the partial upload away again, best effort;
                # whatever stays behind is invisible (no version.json) and `gc` removes it.
                with contextlib.suppress(Exception):
                    self.fs.rm(base, recursive=True)
                with contextlib.suppress(Exception):
                    self.fs.rm(self._content_lock(name, files.content_sha256))
                raise
        with contextlib.suppress(Exception):  # committed: later pushes of these bytes find the version itself
            self.fs.rm(self._content_lock(name, files.content_sha256))
        files.stamp_local(record)
        return record

    def _upload(self, files: Any, record: VersionRecord, base: str) -> None:
        stamped = files.stamped_texts(record)
        manifest: dict[str, dict[str, Any]] = {}
        for path in files.paths:
            remote = f"{base}/project/{path}"
            if path in stamped:
                data = stamped[path]
                self.fs.pipe_file(remote, data)
                manifest[path] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            else:
                local = files.folder / path
                self.fs.put_file(str(local), remote)
                manifest[path] = {"sha256": sha256_file(local), "size": local.stat().st_size}
        record.files = manifest
        record.size_bytes = sum(f["size"] for f in manifest.values())
        # The commit: until this object exists the version is invisible to every reader.
        self._create_exclusive(f"{base}/version.json", (json.dumps(record.to_json(), indent=2) + "\n").encode())
        record.created = True

    def _content_lock(self, name: str, content_sha256: str) -> str:
        return self._p(name, "pushing", f"{content_sha256}.json")

    def _own_content(self, name: str, content_sha256: str) -> VersionRecord | None:
        """Become the one pusher of these bytes (a lock object, created exclusively), or, where another
        push of the same bytes holds it, wait for that version and return it: concurrent pushes of one
        project give one version. A lock older than CONTENT_LOCK_S is a push that died: taken over."""
        lock = self._content_lock(name, content_sha256)

        def pushed() -> VersionRecord | None:
            self._fresh()
            return next((r for r in self._versions(name) if r.content_sha256 == content_sha256), None)

        while True:
            try:
                self._create_exclusive(lock, json.dumps({"by": current_user(), "time": time.time()}).encode())
            except FileExistsError:
                same = pushed()
                if same is not None:
                    return same
                try:
                    started = float(json.loads(self.fs.cat_file(lock)).get("time", 0))
                except (OSError, ValueError, AttributeError):
                    started = 0.0  # gone meanwhile, or unreadable: try again at once
                if time.time() - started > CONTENT_LOCK_S:
                    with contextlib.suppress(Exception):
                        self.fs.rm(lock)
                else:
                    time.sleep(0.2)
                continue
            same = pushed()  # committed just before its pusher let the lock go
            if same is not None:
                with contextlib.suppress(Exception):
                    self.fs.rm(lock)
            return same

    def _claim(self, name: str, version: str | None) -> str:
        """Own a version number by creating its claim.json exclusively (two pushers never share one)."""
        claim = json.dumps({"by": current_user(), "time": time.time(), "id": uuid.uuid4().hex}).encode()
        if version is not None:
            try:
                self._create_exclusive(f"{self._version_dir(name, version)}/claim.json", claim)
            except FileExistsError:
                raise RegistryError(
                    f"{name} version {version} is being pushed by someone else, or an interrupted push left it "
                    "(run `mlship registry gc` to clear leftovers)"
                ) from None
            return version
        numbers = self._all_version_numbers(name)
        candidate = (numbers[-1] if numbers else 0) + 1
        for _ in range(1000):
            try:
                self._create_exclusive(f"{self._version_dir(name, str(candidate))}/claim.json", claim)
                return str(candidate)
            except FileExistsError:
                candidate += 1
        raise RegistryError(f"could not claim a new version number for {name} in {self.uri}")

    # --- pull -----------------------------------------------------------------------------------

    def pull(self, ref: str, out: Path) -> Path:
        """Write the version's project to ``out`` (absent or empty), every file checked against its sha256."""
        import shutil
        import tempfile

        out = Path(out).expanduser().absolute()
        if out.exists() and not out.is_dir():
            raise RegistryError(f"{out} is a file: pull into a new folder")
        if out.exists() and any(out.iterdir()):
            raise RegistryError(f"{out} already exists and is not empty: pull into a new folder")
        record = self.resolve(ref)
        base = self._version_dir(record.name, record.version)
        for path in record.files:  # version.json names the files: none may land outside the folder
            parts = path.split("/")
            if path.startswith("/") or "\\" in path or any(part in ("", ".", "..") for part in parts):
                raise RegistryError(
                    f"{record.name} version {record.version} lists the file {path!r}, which is not inside a "
                    "project (version.json tampered with?); nothing was written"
                )
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f".{out.name}.pull-", dir=out.parent))
        except OSError as exc:
            raise RegistryError(f"cannot write {out}: {exc.strerror or exc}") from exc
        umask = os.umask(0)
        os.umask(umask)
        work.chmod(0o777 & ~umask)  # a folder as mkdir makes it, not mkdtemp's private 0700
        try:
            with self._errors(f"pulling {record.name} {record.version}"):
                paths = sorted(record.files)
                remote = [f"{base}/project/{p}" for p in paths]
                blobs = self.fs.cat(remote, on_error="return") if remote else {}
                for path, remote_path in zip(paths, remote):
                    blob = blobs.get(remote_path)
                    if isinstance(blob, BaseException) or blob is None:
                        raise RegistryError(
                            f"{path} of {record.name} version {record.version} is missing from the registry; "
                            "nothing was written"
                        )
                    expected = record.files[path]
                    if len(blob) != expected["size"] or hashlib.sha256(blob).hexdigest() != expected["sha256"]:
                        raise RegistryError(
                            f"{path} of {record.name} version {record.version} does not match its sha256 in "
                            "version.json (tampered or truncated); nothing was written"
                        )
                    target = work / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(blob)
            if out.exists():
                out.rmdir()
            work.rename(out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return out

    # --- gc ---------------------------------------------------------------------------------------

    def gc(self, name: str | None = None, older_than: float = DEFAULT_GC_AGE_S) -> list[str]:
        """Remove uncommitted versions (no version.json) whose claim is older than ``older_than`` seconds."""
        removed = []
        with self._errors("collecting leftovers"):
            self._fresh()
            names = [validate_model_name(name)] if name else self.models() + self._names_without_versions()
            for model in sorted(set(names)):
                for number in self._all_version_numbers(model):
                    folder = self._version_dir(model, str(number))
                    if self.fs.exists(f"{folder}/version.json"):
                        continue
                    claim = self._read_json(f"{folder}/claim.json") or {}
                    if time.time() - float(claim.get("time", 0)) < older_than:
                        continue
                    self.fs.rm(folder, recursive=True)
                    removed.append(f"{model}/versions/{number}")
                for lock in self._ls_names(self._p(model, "pushing")):  # content locks of pushes that died
                    started = (self._read_json(self._p(model, "pushing", lock)) or {}).get("time", 0)
                    if time.time() - float(started) >= older_than:
                        self.fs.rm(self._p(model, "pushing", lock))
                        removed.append(f"{model}/pushing/{lock}")
        self._fresh()
        return removed

    def _names_without_versions(self) -> list[str]:
        return [n for n in self._ls_names(self.root) if not n.startswith(".")]

    def version_file(self, record: VersionRecord, path: str) -> bytes:
        """One file of a version (e.g. ship.json), sha256-checked."""
        expected = record.files.get(path)
        if expected is None:
            raise RegistryError(f"{record.name} version {record.version} has no {path}")
        with self._errors(f"reading {path} of {record.name} {record.version}"):
            blob = self.fs.cat_file(f"{self._version_dir(record.name, record.version)}/project/{path}")
        if hashlib.sha256(blob).hexdigest() != expected["sha256"]:
            raise RegistryError(f"{path} of {record.name} version {record.version} does not match its sha256")
        return blob

    def version_files(self, record: VersionRecord) -> dict[str, bytes]:
        """All of a version's files, sha256-checked (for diff)."""
        base = self._version_dir(record.name, record.version)
        with self._errors(f"reading {record.name} {record.version}"):
            paths = sorted(record.files)
            blobs = self.fs.cat([f"{base}/project/{p}" for p in paths], on_error="omit") if paths else {}
        out = {}
        for path in paths:
            blob = blobs.get(f"{base}/project/{path}")
            if blob is None or hashlib.sha256(blob).hexdigest() != record.files[path]["sha256"]:
                raise RegistryError(
                    f"{path} of {record.name} version {record.version} is missing or does not match its sha256"
                )
            out[path] = blob
        return out


def open_registry(uri: str | None = None, storage_options: dict[str, Any] | None = None) -> Registry:
    """None → $MLSHIP_REGISTRY → the default folder. Any fsspec URL; nothing is created until a push."""
    import fsspec.core

    uri = (uri or os.environ.get(REGISTRY_ENV) or default_registry()).strip()
    if "://" not in uri:
        uri = str(Path(uri).expanduser().absolute())
    options = dict(storage_options or {})
    # A fresh client each time: fsspec's instance cache would keep credentials or an endpoint that changed.
    options.setdefault("skip_instance_cache", True)
    if uri.startswith(("/", "file://")):
        options.setdefault("auto_mkdir", True)  # object stores have no folders; a local one needs them made
    try:
        fs, root = fsspec.core.url_to_fs(uri, **options)
    except (ImportError, ValueError) as exc:
        protocol = uri.split("://", 1)[0]
        raise RegistryError(f"the registry {uri} cannot be opened: {_cause(exc)} (is the {protocol} backend installed?)") from exc
    registry = Registry(uri, fs, root)
    if registry.local and os.path.exists(root) and not os.path.isdir(root):
        raise RegistryError(f"the registry {uri} is a file, not a folder: choose another --registry")
    return registry


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(os.environ.get("MLSHIP_REGISTRY_CACHE") or Path(base) / "jupyter-mlship" / "registry")


def pull_cached(registry: Registry, ref: str) -> Path:
    """The version's project in the local cache, pulled once: versions are immutable, so a copy stays valid."""
    record = registry.resolve(ref)
    key = hashlib.sha256(registry.uri.encode()).hexdigest()[:12]
    folder = cache_dir() / key / record.name / record.version
    if (folder / "ship.json").is_file():
        return folder
    try:
        return registry.pull(f"{record.name}@{record.version}", folder)
    except RegistryError:
        if (folder / "ship.json").is_file():  # another process pulled it at the same moment
            return folder
        raise


def git_head(path: Path | None) -> str | None:
    """HEAD of the git work tree containing ``path`` (with -dirty when it has uncommitted changes)."""
    if path is None:
        return None
    folder = Path(path)
    folder = folder if folder.is_dir() else folder.parent
    if not folder.is_dir():
        return None
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10,
                              check=False)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                               capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


__all__ = ["LATEST", "AliasEvent", "AliasState", "Registry", "VersionRecord", "open_registry"]
