"""One way to put a folder in place: build it beside its destination, then rename it there.

A project appears complete or not at all, whatever fails on the way (render, verify, Ctrl-C).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def staged_dir(dest: Path, *, replace: bool, keep: tuple[str, ...] = ()) -> Iterator[Path]:
    """Yield an empty folder beside ``dest``; on success it becomes ``dest``.

    ``replace=False``: ``dest`` must not exist (before or after).  ``replace=True``: an earlier ``dest``
    is swapped out only once the new one is complete, and restored if the swap fails; the entries named
    in ``keep`` (e.g. the project's own ``.git``) move across from the earlier one.
    """
    dest = Path(dest).absolute()
    if dest.exists() and not replace:
        raise FileExistsError(f"{dest} already exists; choose another --out or remove it first")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.mlship-", dir=dest.parent))
    try:
        staged = work / dest.name
        staged.mkdir()
        yield staged
        _move_into_place(staged, dest, replace, keep)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _move_into_place(staged: Path, dest: Path, replace: bool, keep: tuple[str, ...]) -> None:
    previous = None
    if dest.exists():
        if not replace:  # someone else created it meanwhile: do not replace their folder
            raise FileExistsError(f"{dest} appeared meanwhile; nothing was written there")
        previous = dest.with_name(f".{dest.name}.previous-{time.time_ns()}")
        dest.rename(previous)
    try:
        staged.rename(dest)
    except OSError:
        if previous is not None:
            previous.rename(dest)
        raise
    if previous is not None:
        for name in keep:
            if (previous / name).exists() and not (dest / name).exists():
                (previous / name).rename(dest / name)
        shutil.rmtree(previous, ignore_errors=True)


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in blocks (artifacts may be gigabytes)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
