"""Import a library without the optional modules it would drag in at import time, where those cost seconds
and what the library is used for here does not need them."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def without_modules(*names: str) -> Iterator[None]:
    """Imports inside see each of ``names`` as not installed, unless it is imported already.

    Libraries import such modules inside try/except ImportError (optional features) or walk packages
    skipping what does not import, so they go on without them. After the block they import as usual."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # None in sys.modules: "cannot be imported"
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
