"""Never leak: scan exported code and constants for credentials before anything is written.

detect-secrets does the detection, with its default plugins and filters (the same set its CLI uses,
including `# pragma: allowlist secret` on a line to allow it).
"""

from __future__ import annotations

import re
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..errors import ShipError
from ..spec import SecretFinding

# detect-secrets keeps its settings in a process-wide singleton: one scan at a time.
_LOCK = threading.Lock()

# Entropy limits (bits per character) of the generic high-entropy plugins, stated rather than inherited:
# 4.5 for base64 flags random 20+ character tokens but not identifiers, column names or English words;
BASE64_LIMIT = 4.5
# 3.0 for hex flags hex keys of 16+ characters (hex has at most 4 bits/char, so real keys sit at 3.5-4).
HEX_LIMIT = 3.0

# When several plugins report the same secret on the same line, the most specific name wins.
_GENERIC_TYPES = ("Base64 High Entropy String", "Hex High Entropy String", "Secret Keyword")
GENERIC_SECRET_TYPES = frozenset(_GENERIC_TYPES)  # detectors that guess from shape or wording, not a known format


def scan_for_secrets(files: dict[str, str]) -> list[SecretFinding]:
    """One finding (file, line, type) per secret in the given texts, keyed by their display names."""
    from detect_secrets import SecretsCollection
    from detect_secrets.settings import default_settings

    found: dict[tuple[str, int | None], dict[str, str]] = {}  # (file, line) -> secret hash -> type
    with _LOCK, tempfile.TemporaryDirectory(prefix="mlship-secrets-") as folder, default_settings() as settings:
        settings.configure_plugins([
            {"name": "Base64HighEntropyString", "limit": BASE64_LIMIT},
            {"name": "HexHighEntropyString", "limit": HEX_LIMIT},
        ])
        collection = SecretsCollection(root=folder)
        names: dict[str, str] = {}
        for index, (display, text) in enumerate(files.items()):
            # The suffix picks detect-secrets' per-language rules (e.g. keyword patterns for .py).
            relative = f"{index}{_suffix(display)}"
            (Path(folder) / relative).write_text(text, encoding="utf-8")
            names[relative] = display
            collection.scan_file(relative)
        for relative, secret in collection:
            on_line = found.setdefault((names[relative], secret.line_number or None), {})
            previous = on_line.get(secret.secret_hash)
            if previous is None or _specificity(secret.type) > _specificity(previous):
                on_line[secret.secret_hash] = secret.type
    findings = []
    for (file, line), types in found.items():
        specific = {t for t in types.values() if t not in _GENERIC_TYPES}
        # A token a named detector recognised is also high-entropy (often minus its prefix): report it once.
        for secret_type in sorted(specific) if specific else types.values():
            findings.append(SecretFinding(file=file, line=line, type=secret_type))
    return sorted(findings, key=lambda f: (f.file, f.line or 0, f.type))


def _suffix(display: str) -> str:
    """A file-like display name keeps its extension; other texts (constants) are scanned as Python."""
    suffix = Path(display).suffix
    return suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", suffix or "") else ".py"


def _specificity(secret_type: str) -> int:
    return _GENERIC_TYPES.index(secret_type) if secret_type in _GENERIC_TYPES else len(_GENERIC_TYPES)


def find_secrets(features_source: str, local_modules: dict[str, str], artifacts: dict[str, Any]) -> list[SecretFinding]:
    """Findings in the exported code (app/features.py, app/local/) and inside the model objects."""
    files = {"app/features.py": features_source, **{f"app/local/{p}": t for p, t in local_modules.items()}}
    findings = scan_for_secrets(files)
    for finding in findings:
        if finding.file == "app/features.py":
            finding.name = finding.name or _name_at_line(features_source, finding.line)
    return findings + _artifact_secrets(artifacts)


def refuse_unless_allowed(findings: list[SecretFinding], allowed: bool) -> None:
    """The secret policy: any finding stops the export unless the user passed --allow-secrets."""
    if not findings or allowed:
        return
    first = findings[0]
    if first.file.startswith("artifact "):
        raise ShipError(
            f"possible secret ({first.type}) inside the object `{first.name}`: remove it from the "
            "model's attributes, or pass --allow-secrets after checking it"
        )
    raise ShipError(
        f"possible secret ({first.type}) in the exported code"
        + (f", in `{first.name}`" if first.name else "")
        + f" at {first.file} line {first.line}: remove it from the code the entry function uses "
        "(read it from an environment variable), or pass --allow-secrets after checking it"
    )


def _artifact_secrets(artifacts: dict[str, Any]) -> list[SecretFinding]:
    """Credentials held inside model objects; only named detectors count there (a vocabulary is not a key)."""
    from .artifacts import artifact_strings

    texts = {f"artifact {name}.txt": "\n".join(artifact_strings(value)) for name, value in artifacts.items()}
    findings = scan_for_secrets({label: text for label, text in texts.items() if text})
    for finding in findings:
        finding.name = finding.file.removeprefix("artifact ").removesuffix(".txt")
    return [f for f in findings if f.type not in GENERIC_SECRET_TYPES]


def _name_at_line(source: str, line: int | None) -> str | None:
    """The top-level name whose definition holds ``line`` of features.py."""
    if not line:
        return None
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        if node.lineno <= line <= (node.end_lineno or node.lineno):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                return node.name
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                return node.targets[0].id
    return None
