"""`jupyter nbconvert --to mlship NOTEBOOK`: the headless export as an nbconvert exporter.

Registered under the `nbconvert.exporters` entry point, so JupyterLab's File → Save and Export
Notebook As lists it. The output document is the review of each exported service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nbconvert.exporters import Exporter
from traitlets import Unicode

from .headless import export_notebook


class MlshipExporter(Exporter):
    export_from_notebook = "Service (mlship)"
    output_mimetype = "text/markdown"
    out_dir = Unicode(
        "", help="Folder that receives one service project per ship cell (default: the cells' own --out)."
    ).tag(config=True)

    def _file_extension_default(self) -> str:
        return ".mlship.md"

    def from_notebook_node(self, nb: Any, resources: dict[str, Any] | None = None, **kw: Any) -> tuple[str, dict[str, Any]]:
        nb_copy, resources = super().from_notebook_node(nb, resources, **kw)
        folder = Path(resources.get("metadata", {}).get("path") or ".")
        name = resources.get("metadata", {}).get("name") or "notebook"
        out = Path(self.out_dir) if self.out_dir else None
        result = export_notebook(nb_copy, folder / f"{name}.ipynb", out, on_progress=self.log.info)
        lines = [f"# mlship export of {name}.ipynb", ""]
        for export in result.exports:
            status = "ok" if export.ok else "FAILED"
            lines.append(f"- **{export.name}**: {status}: {export.message}")
            review = Path(export.project or "") / "REVIEW.md"
            if export.ok and review.is_file():
                lines += ["", review.read_text(encoding="utf-8"), ""]
        if not result.ok:
            failed = [e for e in result.exports if not e.ok]
            raise RuntimeError(failed[0].message if failed else "no ship cell exported")
        return "\n".join(lines) + "\n", resources
