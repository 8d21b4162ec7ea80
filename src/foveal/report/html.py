"""The run report: one self-contained HTML file (images embedded as data URIs, no network)."""

from __future__ import annotations

import base64
import html
import platform
from typing import Any

import torch

from .. import __version__
from ..io import write_text
from . import plots


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _table(rows: list[list[Any]], header: list[str]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{html.escape(title)}</h2>{body}</section>'


def summary_section(meta: dict[str, Any], metrics: dict[str, Any], n_params: int) -> str:
    cfg = meta.get("config", {})
    rows = [
        ["data", cfg.get("data", {}).get("source")], ["model", meta["model"]], ["parameters", f"{n_params:,}"],
        ["input", f"{meta['img_size']}px x {meta['in_chans']} channels"], ["classes", len(meta["classes"])],
        ["seed", cfg.get("train", {}).get("seed")], ["training time (s)", metrics.get("train_seconds", float("nan"))],
        ["best epoch", metrics.get("best_epoch")], ["hardware", f"{platform.processor() or platform.machine()}, "
                                                               f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}"],
        ["foveal / torch", f"{__version__} / {torch.__version__}"],
    ]
    return section("summary", "Run summary", _table(rows, ["", ""]))


def metrics_section(m: dict[str, Any]) -> str:
    keys = ["accuracy", "balanced_accuracy", "top5", "macro_precision", "macro_recall", "macro_f1",
            "weighted_precision", "weighted_recall", "weighted_f1", "loss"]
    overall = _table([[k, m[k]] for k in keys if k in m], ["metric", "value"])
    per_class = _table([[c, r["precision"], r["recall"], r["f1"], r["support"]] for c, r in m["per_class"].items()],
                       ["class", "precision", "recall", "F1", "support"])
    return section("metrics", f"Metrics ({m.get('split', 'test')} split)", overall + "<h3>Per class</h3>" + per_class)


def confusion_section(m: dict[str, Any]) -> str:
    cm, classes = m["confusion_matrix"], m["classes"]
    pairs = sorted(((cm[i][j], classes[i], classes[j]) for i in range(len(cm)) for j in range(len(cm)) if i != j
                    and cm[i][j] > 0), reverse=True)[:10]
    body = (_img(plots.confusion_heatmap(cm, classes), "confusion matrix counts")
            + _img(plots.confusion_heatmap(cm, classes, normalize=True), "confusion matrix normalized")
            + "<h3>Most confused pairs</h3>" + _table([[t, p, n] for n, t, p in pairs], ["true", "predicted", "count"]))
    return section("confusion", "Confusion matrix", body)


CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3}img{max-width:100%;margin:.3em}section{margin-bottom:2em}"""


def render(title: str, sections: list[str]) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{''.join(sections)}</body></html>")


def write_run_report(result) -> None:
    """report.html (and curves.png) in the run folder, from a finished RunResult."""
    from ..models import count_params

    sections = [summary_section(result.meta, result.test_metrics, count_params(result.model))]
    if result.history:
        png = plots.learning_curves(result.history)
        (result.run_dir / "curves.png").write_bytes(png)
        sections.append(section("curves", "Learning curves", _img(png, "learning curves")))
    sections += [metrics_section(result.test_metrics), confusion_section(result.test_metrics)]
    write_text(result.run_dir / "report.html", render(f"foveal run {result.run_dir.name}", sections))
