"""The review: what an export contains, for the person who signs it off.

One content, two renderings: Markdown (REVIEW.md, the CLI, the lab panel) and HTML (the magic's
output in Jupyter, made from the same Markdown tables).
"""

from __future__ import annotations

import html
from typing import Any

from .spec import ShipSpec


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _cell(cell: int | None) -> str:
    return f"In[{cell}]" if cell else "—"


def _escape(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def review_tables(spec: ShipSpec, verify: Any | None) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for each section; both renderings use these."""
    sections: list[tuple[str, list[str], list[list[str]]]] = []
    sections.append((
        "Captured names",
        ["name", "kind", "cell", "size", "detail"],
        [[f"`{c.name}`", c.kind, _cell(c.cell), _size(c.size_bytes), f"`{_escape(c.detail)}`"] for c in spec.captured],
    ))
    sections.append((
        "Artifacts",
        ["name", "file", "format", "size", "sha256", "type"],
        [[f"`{a.name}`", f"model/{a.file}", a.format, _size(a.size_bytes), f"`{a.sha256}`", f"`{a.type}`"]
         for a in spec.artifacts],
    ))
    sections.append((
        "Dependencies (requirements.txt)",
        ["distribution", "version", "needed by"],
        [[r.name, r.version, ", ".join(r.because)] for r in spec.requirements],
    ))
    inp = spec.input
    if inp.columns:
        rows = [[f"`{c.name}`", c.dtype, c.json_type, "yes" if c.nullable else "no",
                 ", ".join(map(str, c.categories)) if c.categories else ""] for c in inp.columns]
    else:
        rows = [["(each instance)", inp.dtype or "", inp.json_type or "", "yes" if inp.nullable else "no",
                 f"width {inp.width}" if inp.width else ""]]
    sections.append((f"Request schema ({inp.kind})", ["field", "dtype", "JSON type", "null allowed", "notes"], rows))
    out = spec.output
    sections.append((
        "Response schema",
        ["kind", "returned", "JSON type", "width"],
        [[out.kind, f"`{out.container}`", out.json_type, str(out.width or "")]],
    ))
    sections.append(("Warnings", ["warning"], [[_escape(w)] for w in spec.warnings]))
    sections.append((
        "Secrets found",
        ["where", "line", "type", "name"],
        [[f.file, str(f.line or ""), f.type, f"`{f.name}`" if f.name else ""] for f in spec.secrets_allowed],
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
    from .build.gpu import cpu_only_reason, default_gpu_base

    gpu = default_gpu_base(spec)
    if gpu is not None:
        return f"`{gpu.image}`", _escape(gpu.reason)
    slim = "python:" + ".".join(spec.python_version.split(".")[:2]) + "-slim"
    return f"`{slim}`", _escape(f"the kernel's Python on a slim CPU image: {cpu_only_reason(spec)}")


def review_markdown(spec: ShipSpec, verify: Any | None) -> str:
    lines = [
        f"# Review: {spec.name} {spec.version}",
        "",
        f"Exported by jupyter-mlship {spec.source.mlship_version} on {spec.source.captured_at} "
        f"from {spec.source.notebook or 'a notebook'} (Python {spec.python_version}). "
        f"Entry: `{spec.entry.name}`"
        + (f" = `{spec.entry.model_var}.{spec.entry.method}`" if spec.entry.kind == "method" else "")
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
            cells = "".join(f"<td>{html.escape(c.strip('`').replace(chr(92) + '|', '|'))}</td>" for c in row)
            parts.append(f"<tr>{cells}</tr>")
        parts.append("</tbody></table>")
    parts.append("</div>")
    return "".join(parts)
