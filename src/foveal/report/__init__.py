"""Plots and the self-contained HTML report of a run."""

from .html import write_run_report

__all__ = ["write_run_report"]
