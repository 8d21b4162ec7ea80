"""Plots and the self-contained HTML evaluation report of a run."""

from .html import SECTION_IDS, build_html
from .inputs import ReportInputs
from .write import report_from_run, write_eval_report, write_report, write_run_report

__all__ = ["SECTION_IDS", "ReportInputs", "build_html", "report_from_run", "write_eval_report", "write_report",
           "write_run_report"]
