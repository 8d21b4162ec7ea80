"""Plots and the self-contained HTML evaluation report: renders a `ReportInputs`, computes nothing
(`foveal.tasks.reporting` builds the inputs)."""

from .html import SECTION_IDS, build_html
from .inputs import ReportInputs
from .plots import learning_curves
from .write import write_report

__all__ = ["SECTION_IDS", "ReportInputs", "build_html", "learning_curves", "write_report"]
