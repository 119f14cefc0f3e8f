"""`mlship diff A B`: what changed between two versions of a model, written for a reviewer.

Captured code (a unified diff of app/features.py and app/local/), dependencies (added, removed and
changed pins), the request/response schema, artifacts (format, size, sha256), golden outputs, and
every other file by sha256. Either side may be a registry reference or a project folder.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .project import SKIPPED_PARTS, strip_review_section
from .refs import RegistryError, looks_like_ref
from .store import Registry

CODE_PREFIXES = ("app/features.py", "app/local/")


@dataclass
class Side:
    label: str  # "churn@6" or a folder
    files: dict[str, bytes]

    @property
    def ship(self) -> dict[str, Any]:
        try:
            return json.loads(self.files["ship.json"])
        except (KeyError, ValueError) as exc:
            raise RegistryError(f"{self.label} has no readable ship.json") from exc


@dataclass
class DiffReport:
    a: str
    b: str
    sections: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not any(lines for _, lines in self.sections)

    def to_text(self) -> str:
        out = [f"mlship diff {self.a} {self.b}"]
        if self.identical:
            return out[0] + "\n\nNo differences.\n"
        for title, lines in self.sections:
            out += ["", f"## {title}", ""]
            out += lines or ["No changes."]
        return "\n".join(out) + "\n"


def load_side(registry: Registry | None, ref: str) -> Side:
    folder = Path(ref).expanduser()
    if folder.is_dir() and not looks_like_ref(ref):
        if not (folder / "ship.json").is_file():
            raise RegistryError(f"{folder} is not a project exported by mlship: it has no ship.json")
        files = {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and not (set(p.relative_to(folder).parts) & SKIPPED_PARTS)
        }
        return Side(str(folder), files)
    if registry is None:
        from .store import open_registry

        registry = open_registry()
    record = registry.resolve(ref)
    return Side(f"{record.name}@{record.version}", registry.version_files(record))


def diff_refs(registry: Registry | None, a: str, b: str) -> DiffReport:
    left, right = load_side(registry, a), load_side(registry, b)
    return diff_sides(left, right)


def diff_sides(left: Side, right: Side) -> DiffReport:
    report = DiffReport(left.label, right.label)
    ship_a, ship_b = left.ship, right.ship
    report.sections.append(("Code (app/features.py, app/local/)", _code(left, right)))
    report.sections.append(("Dependencies (requirements.txt)", _pins(left, right)))
    report.sections.append(("Request and response schema", _schema(ship_a, ship_b)))
    report.sections.append(("Artifacts", _artifacts(ship_a, ship_b)))
    report.sections.append(("Golden outputs", _golden(ship_a, ship_b)))
    report.sections.append(("Other files", _other_files(left, right)))
    return report


def _text(blob: bytes | None) -> list[str]:
    return [] if blob is None else blob.decode("utf-8", "replace").splitlines(keepends=True)


def _code(left: Side, right: Side) -> list[str]:
    paths = sorted(p for p in set(left.files) | set(right.files) if p.startswith(CODE_PREFIXES))
    lines: list[str] = []
    for path in paths:
        a, b = left.files.get(path), right.files.get(path)
        if a == b:
            continue
        diff = difflib.unified_diff(_text(a), _text(b), fromfile=f"a/{path}" if a is not None else "/dev/null",
                                    tofile=f"b/{path}" if b is not None else "/dev/null")
        lines += ["```diff", *(line.rstrip("\n") for line in diff), "```"]
    return lines


def _requirements(blob: bytes | None) -> dict[str, str]:
    pins = {}
    for line in _text(blob):
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
        elif line and not line.startswith("-"):
            pins[line.lower()] = "(unpinned)"
    return pins


def _pins(left: Side, right: Side) -> list[str]:
    a, b = _requirements(left.files.get("requirements.txt")), _requirements(right.files.get("requirements.txt"))
    lines = [f"+ {n}=={b[n]} (added)" for n in sorted(set(b) - set(a))]
    lines += [f"- {n}=={a[n]} (removed)" for n in sorted(set(a) - set(b))]
    lines += [f"~ {n}: {a[n]} → {b[n]}" for n in sorted(set(a) & set(b)) if a[n] != b[n]]
    return lines


def _columns(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in schema.get("columns") or []}


def _describe(column: dict[str, Any]) -> str:
    text = f"{column.get('dtype')}, {column.get('json_type')}" + (", nullable" if column.get("nullable") else "")
    if column.get("categories"):
        text += f", categories {column['categories']}"
    return text


def schema_side_changes(title: str, a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    lines = []
    for key in sorted((set(a) | set(b)) - {"columns"}):
        if a.get(key) != b.get(key):
            lines.append(f"~ {title} {key}: {a.get(key)!r} → {b.get(key)!r}")
    ca, cb = _columns(a), _columns(b)
    lines += [f"+ {title} field `{n}` ({_describe(cb[n])}) added" for n in cb if n not in ca]
    lines += [f"- {title} field `{n}` ({_describe(ca[n])}) removed" for n in ca if n not in cb]
    for n in ca:
        if n in cb and ca[n] != cb[n]:
            changed = [f"{k} {ca[n].get(k)!r} → {cb[n].get(k)!r}" for k in sorted(set(ca[n]) | set(cb[n]))
                       if ca[n].get(k) != cb[n].get(k)]
            lines.append(f"~ {title} field `{n}`: " + "; ".join(changed))
    if list(ca) != list(cb) and set(ca) == set(cb):
        lines.append(f"~ {title} field order: {list(ca)} → {list(cb)}")
    return lines


def _schema(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return schema_side_changes("request", a.get("input") or {}, b.get("input") or {}) + \
        schema_side_changes("response", a.get("output") or {}, b.get("output") or {})


def _artifacts(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    arts_a = {x["name"]: x for x in a.get("artifacts") or []}
    arts_b = {x["name"]: x for x in b.get("artifacts") or []}

    def show(x: dict[str, Any]) -> str:
        return f"{x['format']}, {x['size_bytes']} bytes, sha256 {x['sha256'][:12]}"

    lines = [f"+ `{n}` ({show(arts_b[n])}) added" for n in arts_b if n not in arts_a]
    lines += [f"- `{n}` ({show(arts_a[n])}) removed" for n in arts_a if n not in arts_b]
    for n, x in arts_a.items():
        if n in arts_b:
            y = arts_b[n]
            changes = []
            if x["format"] != y["format"]:
                changes.append(f"format {x['format']} → {y['format']}")
            if x["size_bytes"] != y["size_bytes"]:
                changes.append(f"size {x['size_bytes']} → {y['size_bytes']} bytes")
            if x["sha256"] != y["sha256"]:
                changes.append(f"sha256 {x['sha256'][:12]} → {y['sha256'][:12]}")
            if x.get("type") != y.get("type"):
                changes.append(f"type {x.get('type')} → {y.get('type')}")
            if x.get("frameworks") != y.get("frameworks"):
                changes.append(f"saved with {x.get('frameworks')} → {y.get('frameworks')}")
            if changes:
                lines.append(f"~ `{n}`: " + "; ".join(changes))
    return lines


def _max_change(p: Any, q: Any) -> float | None:
    """Largest absolute difference between two numeric predictions (nested lists/dicts); None if not numeric."""
    if isinstance(p, bool) or isinstance(q, bool):
        return None if p == q else math.inf
    if isinstance(p, (int, float)) and isinstance(q, (int, float)):
        return abs(float(p) - float(q))
    if isinstance(p, list) and isinstance(q, list) and len(p) == len(q):
        parts = [_max_change(x, y) for x, y in zip(p, q)]
        return None if any(v is None for v in parts) else max(parts, default=0.0)
    if isinstance(p, dict) and isinstance(q, dict) and p.keys() == q.keys():
        parts = [_max_change(p[k], q[k]) for k in p]
        return None if any(v is None for v in parts) else max(parts, default=0.0)
    return None if p != q else 0.0


def _golden(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    ga, gb = a.get("golden") or {}, b.get("golden") or {}
    ia, ib = ga.get("instances") or [], gb.get("instances") or []
    pa, pb = ga.get("predictions") or [], gb.get("predictions") or []
    if ia != ib:
        return [f"~ golden sample changed: {len(ia)} → {len(ib)} instances (predictions are not comparable row by row)"]
    changed = [(i, x, y) for i, (x, y) in enumerate(zip(pa, pb)) if x != y]
    if not changed:
        return []
    biggest = [d for d in (_max_change(x, y) for _, x, y in changed) if d is not None]
    lines = [f"~ {len(changed)} of {len(pa)} golden predictions changed on the same sample"
             + (f" (largest absolute change {max(biggest):.6g})" if biggest else "")]
    for i, x, y in changed[:5]:
        lines.append(f"  instance {i}: {json.dumps(x)[:80]} → {json.dumps(y)[:80]}")
    return lines


def _normalised(path: str, blob: bytes) -> bytes:
    # The registry stamp differs between any two versions; it is not a change to review.
    if path == "ship.json":
        try:
            data = json.loads(blob)
            data.pop("registry", None)
            return json.dumps(data, sort_keys=True).encode()
        except ValueError:
            return blob
    if path == "REVIEW.md":
        return strip_review_section(blob.decode("utf-8", "replace")).encode()
    return blob


def _other_files(left: Side, right: Side) -> list[str]:
    lines = []
    for path in sorted(set(left.files) | set(right.files)):
        if path.startswith(CODE_PREFIXES):
            continue
        a, b = left.files.get(path), right.files.get(path)
        if a is None:
            lines.append(f"+ {path} added")
        elif b is None:
            lines.append(f"- {path} removed")
        elif _normalised(path, a) != _normalised(path, b):
            lines.append(f"~ {path} (sha256 {hashlib.sha256(a).hexdigest()[:12]} → {hashlib.sha256(b).hexdigest()[:12]})")
    return lines
