"""Write a rendered report page; the inputs are computed by `foveal.tasks.reporting`."""

from __future__ import annotations

from pathlib import Path

from ..io import write_text
from .html import build_html
from .inputs import ReportInputs


def write_report(inp: ReportInputs, path: Path) -> Path:
    """Render and write the page atomically; returns its path."""
    write_text(path, build_html(inp))
    return path
