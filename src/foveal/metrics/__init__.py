"""Metrics accumulated on the device and reduced across processes."""

from .classification import ConfusionMeter, format_report, report_from_confusion

__all__ = ["ConfusionMeter", "format_report", "report_from_confusion"]
