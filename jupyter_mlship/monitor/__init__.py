"""Offline monitoring of a service's inference log: `mlship monitor` (DuckDB + an HTML report)."""

from .report import MonitorError, MonitorReport, build_report, terminal_table

__all__ = ["MonitorError", "MonitorReport", "build_report", "terminal_table"]
