"""The review: what an export contains, for the person who signs it off.

One content, two renderings: Markdown (REVIEW.md, the CLI, the lab panel) and HTML (the magic's
output in Jupyter, made from the same Markdown tables).
"""

from __future__ import annotations

import html
import re
from typing import Any

from .runtime import runtime_module
from .spec import ShipSpec


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _cell(cell: int | None) -> str:
    return f"In[{cell}]" if cell else "—"


# Characters that Markdown reads as formatting in running text (emphasis, links, code, tables, HTML).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+!|~])")
_MARKDOWN_ESCAPED = re.compile(r"\\([\\`*_{}\[\]<>()#+!|~])")


def markdown_text(text: Any) -> str:
    """Generated text as literal Markdown: ``nvidia-*-cu*`` stays itself, not italics; one line."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text)).replace("\n", " ")


def _code(text: Any) -> str:
    """A code span; inside one only the table's ``|`` needs escaping (GFM splits cells first)."""
    text = str(text).replace("|", "\\|").replace("\n", " ")
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}" if fence == "`" else f"{fence} {text} {fence}"


def _unescape(cell: str) -> str:
    """A Markdown cell as plain text for the HTML rendering: code fences and escapes removed."""
    if cell.startswith("`"):
        return cell.strip("`").strip().replace("\\|", "|")
    return _MARKDOWN_ESCAPED.sub(r"\1", cell)


def review_tables(spec: ShipSpec, verify: Any | None) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for each section; both renderings use these."""
    sections: list[tuple[str, list[str], list[list[str]]]] = []
    sections.append((
        "Captured names",
        ["name", "kind", "cell", "size", "detail"],
        [[_code(c.name), markdown_text(c.kind), _cell(c.cell), _size(c.size_bytes), _code(c.detail)] for c in spec.captured],
    ))
    sections.append((
        "Artifacts",
        ["name", "file", "format", "size", "sha256", "type"],
        [[_code(a.name), markdown_text(f"model/{a.file}"), markdown_text(a.format), _size(a.size_bytes), _code(a.sha256), _code(a.type)]
         for a in spec.artifacts],
    ))
    sections.append((
        "Dependencies (requirements.txt)",
        ["distribution", "version", "needed by"],
        [[markdown_text(r.name), markdown_text(r.version), markdown_text(", ".join(r.because))] for r in spec.requirements],
    ))
    inp = spec.input
    if inp.columns:
        rows = [[_code(c.name), markdown_text(c.dtype), markdown_text(c.json_type), _null_allowed(c.nullable, c.missing, inp.kind == "dataframe", c.present),
                 markdown_text(", ".join(map(str, c.categories))) if c.categories else ""] for c in inp.columns]
    else:
        rows = [["(each instance)", markdown_text(inp.dtype or ""), markdown_text(inp.json_type or ""), "yes" if inp.nullable else "no",
                 f"width {inp.width}" if inp.width else ""]]
    instance = runtime_module("kinds").describe_instance(inp.model_dump())
    sections.append((f"Request schema ({inp.kind}: each instance is {instance})", ["field", "dtype", "JSON type", "null allowed", "notes"], rows))
    out = spec.output
    sections.append((
        "Response schema",
        ["kind", "returned", "JSON type", "width"],
        [[markdown_text(out.kind), _code(out.container), markdown_text(out.json_type),
          str(out.width or "") + (f" (classes: {markdown_text(', '.join(map(str, out.labels)))})" if out.labels else "")]],
    ))
    batching = spec.batching
    sections.append((
        "Micro-batching (concurrent requests in one model call)",
        ["enabled", "why", "max instances per call", "max wait"],
        [["yes" if batching.enabled else "no", markdown_text(batching.reason or "not proven row-wise"),
          str(batching.max_batch) if batching.enabled else "—",
          f"{batching.max_wait_ms:g} ms" if batching.enabled else "—"]],
    ))
    if spec.reference is not None:  # monitoring (issue 10)
        sections.append(_reference_section(spec))
    sections.append(("Warnings", ["warning"], [[markdown_text(w)] for w in spec.warnings]))
    sections.append((
        "Secrets found",
        ["where", "line", "type", "name"],
        [[markdown_text(f.file), str(f.line or ""), markdown_text(f.type), _code(f.name) if f.name else ""] for f in spec.secrets_allowed],
    ))
    sections.append(("Devices", ["artifact", "ran on in the notebook", "served on", "no GPU in the service"],
                     _device_rows(spec)))
    sections.append(("Container image", ["base image", "why"], [list(_base_image_choice(spec))]))
    if verify is None:
        verify_rows = [["not run", "", "", ""]]
    else:
        verify_rows = [[
            "passed" if verify.passed else "FAILED", str(verify.tests_passed), str(verify.tests_failed),
            f"{verify.seconds:.1f} s ({verify.installer}{', reused environment' if verify.reused_environment else ''})",
        ]]
    sections.append(("Verification (tests in a clean environment)", ["result", "passed", "failed", "time"], verify_rows))
    return sections


MISSING_WORDS = {"nan": "as NaN", "none": "as None", "absent": "as the field left out"}


def _null_allowed(nullable: bool, missing: str | None, dataframe: bool = False, present: bool = False) -> str:
    """Whether a field takes null, and how a null reaches the entry function. A DataFrame's field that
    takes null may also be left out of an instance (the request schema's NotRequired): the same null. A
    record's field the code reads without a default must be sent, as null."""
    if not nullable:
        return "no"
    how = f", {MISSING_WORDS[missing]}" if missing in MISSING_WORDS else ""
    if present:
        return f"yes{how}; must be sent (as null), not left out"
    return f"yes{how}; may be left out" if dataframe else f"yes{how}"


def _reference_section(spec: ShipSpec) -> tuple[str, list[str], list[list[str]]]:
    """model/reference.json in a few columns: what drift and the skew guard will compare requests with."""
    reference = spec.reference or {}
    rows = []
    watched = list((reference.get("features") or {}).items())
    if reference.get("prediction"):
        watched.append(("(prediction)", reference["prediction"]))
    for name, profile in watched:
        if profile.get("kind") == "numeric" and "min" in profile:
            summary = f"{profile['min']:.4g} … {profile['max']:.4g}, {len(profile['fractions'])} bins"
        elif profile.get("kind") == "categorical" and "categories" in profile:
            top = ", ".join(f"{k} {v:.0%}" for k, v in list(profile["categories"].items())[:3])
            summary = f"{profile['distinct']} values: {top}" + (", …" if profile["distinct"] > 3 else "")
        else:
            summary = "null rate only"
        logged = ("not logged" if name in spec.monitoring.log_exclude
                  else "hashed" if name in spec.monitoring.log_hash else "")
        rows.append([f"`{name}`", profile.get("kind", ""), f"{profile.get('null_rate', 0):.1%}",
                     markdown_text(summary), logged])
    source = reference.get("source", "")
    title = (f"Reference profile (model/reference.json, from the {source}: {reference.get('rows')} rows; "
             f"guard: {spec.monitoring.guard})")
    return title, ["feature", "kind", "null rate", "range / top values", "inference log"], rows


def _device_rows(spec: ShipSpec) -> list[list[str]]:
    """Where each model runs in the service, and what happens where there is no GPU."""
    rows = []
    for artifact in spec.artifacts:
        if not artifact.device.startswith("cuda"):
            rows.append([f"`{artifact.name}`", artifact.device, "cpu", "runs on the CPU"])
            continue
        if spec.device_fallback:
            without = "falls back to the CPU (--allow-cpu-fallback): the entry must not name `cuda` itself"
        else:
            without = "not ready: /readyz 503 says why (export with --allow-cpu-fallback, or set MLSHIP_DEVICE=cpu)"
        rows.append([f"`{artifact.name}`", artifact.device,
                     f"{artifact.device} when visible (else cuda:0); MLSHIP_DEVICE overrides", without])
    return rows


def _base_image_choice(spec: ShipSpec) -> tuple[str, str]:
    from .cuda import cpu_only_reason, default_gpu_base

    gpu = default_gpu_base(spec)
    if gpu is not None:
        return _code(gpu.image), markdown_text(gpu.reason)
    slim = "python:" + ".".join(spec.python_version.split(".")[:2]) + "-slim"
    return _code(slim), markdown_text(f"the kernel's Python on a slim CPU image: {cpu_only_reason(spec)}")


def review_markdown(spec: ShipSpec, verify: Any | None) -> str:
    lines = [
        f"# Review: {markdown_text(spec.name)} {markdown_text(spec.version)}",
        "",
        f"Exported by jupyter-mlship {markdown_text(spec.source.mlship_version)} on {markdown_text(spec.source.captured_at)} "
        f"from {markdown_text(spec.source.notebook or 'a notebook')} (Python {markdown_text(spec.python_version)}). "
        f"Entry: {_code(spec.entry.name)}"
        + (f" = {_code(f'{spec.entry.model_var}.{spec.entry.method}')}" if spec.entry.kind == "method" else "")
        + f", golden sample of {len(spec.golden.instances)} instances.",
    ]
    for title, header, rows in review_tables(spec, verify):
        lines += ["", f"## {title}", ""]
        if not rows:
            lines.append("None.")
            continue
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "---|" * len(header))
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def review_html(spec: ShipSpec, verify: Any | None) -> str:
    parts = [f"<div class='mlship-review'><h3>Review: {html.escape(spec.name)} {html.escape(spec.version)}</h3>"]
    for title, header, rows in review_tables(spec, verify):
        parts.append(f"<h4>{html.escape(title)}</h4>")
        if not rows:
            parts.append("<p>None.</p>")
            continue
        parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>")
        for row in rows:
            cells = "".join(f"<td>{html.escape(_unescape(c))}</td>" for c in row)
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</tbody></table>")
    parts.append("</div>")
    return "".join(parts)
