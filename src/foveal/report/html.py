"""The evaluation report: one self-contained HTML file (PNG images as data URIs, inline CSS,
no script, no network), with one ``<section id=...>`` per part so tests and readers can find
them: summary, curves, metrics, confusion, calibration, errors, and robustness when the run
folder holds ``robustness.json``.

The numbers behind the tables are embedded too, as a JSON block (``<script
type="application/json" id="report-data">``, inert: browsers never execute that type), so a
test or a script can read exactly what the page shows.
"""

from __future__ import annotations

import base64
import html
import json
import math
from typing import Any, Iterable

from . import plots
from .inputs import ReportInputs, summary_rows

SECTION_IDS = ("summary", "curves", "metrics", "confusion", "calibration", "errors", "robustness")
OPTIONAL_SECTION_IDS = ("embedding", "groups")  # embedding: after `foveal embed`; groups: data with groups
ROBUSTNESS_DEPTH = 3  # nesting levels of robustness.json rendered as headings before falling back to JSON


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return html.escape(str(v))


def table(rows: Iterable[Iterable[Any]], header: list[str], tid: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    ident = f' id="{tid}"' if tid else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{html.escape(title)}</h2>{body}</section>'


def note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def summary_section(inp: ReportInputs) -> str:
    return section("summary", "Run summary", table(summary_rows(inp).items(), ["", ""], "summary-table"))


def curves_section(history: list[dict[str, Any]]) -> str:
    if not history:
        return section("curves", "Learning curves", note("no training history in this run folder (metrics.jsonl)"))
    return section("curves", "Learning curves", _img(plots.learning_curves(history), "learning curves"))


OVERALL = [("accuracy (top-1)", "accuracy"), ("balanced accuracy", "balanced_accuracy"), ("top-5 accuracy", "top5"),
           ("macro precision", "macro_precision"), ("macro recall", "macro_recall"), ("macro F1", "macro_f1"),
           ("weighted precision", "weighted_precision"), ("weighted recall", "weighted_recall"),
           ("weighted F1", "weighted_f1"), ("loss", "loss"), ("images", "support")]


def metrics_section(m: dict[str, Any]) -> str:
    overall = table([[label, m[k]] for label, k in OVERALL if k in m], ["metric", "value"], "overall-metrics")
    per_class = table([[c, r["precision"], r["recall"], r["f1"], r["support"]] for c, r in m["per_class"].items()],
                      ["class", "precision", "recall", "F1", "support"], "per-class")
    return section("metrics", f"Metrics ({m.get('split', 'test')} split)", overall + "<h3>Per class</h3>" + per_class)


def confused_pairs(cm: list[list[int]], classes: list[str], k: int = 10) -> list[tuple[str, str, int, float]]:
    """The k largest off-diagonal counts: (true, predicted, count, share of the true class)."""
    K = len(cm)
    pairs = [(cm[i][j], i, j) for i in range(K) for j in range(K) if i != j and cm[i][j] > 0]
    pairs.sort(key=lambda t: (-t[0], t[1], t[2]))
    return [(classes[i], classes[j], n, n / max(1, sum(cm[i]))) for n, i, j in pairs[:k]]


def confusion_section(m: dict[str, Any]) -> str:
    cm, classes = m["confusion_matrix"], m["classes"]
    pairs = confused_pairs(cm, classes)
    body = (_img(plots.confusion_heatmap(cm, classes), "confusion matrix counts")
            + _img(plots.confusion_heatmap(cm, classes, normalize=True), "confusion matrix normalized")
            + "<h3>Most confused pairs</h3>"
            + (table(pairs, ["true", "predicted", "count", "share of true class"], "confused-pairs") if pairs
               else note("no mistakes")))
    return section("confusion", "Confusion matrix", body)


def calibration_section(cal: dict[str, Any] | None) -> str:
    if not cal:
        return section("calibration", "Calibration", note("no logits available to measure calibration"))
    t, before, after = cal["temperature"], cal["before"], cal.get("after")
    rows = [["fitted temperature T (validation split)", t], ["ECE before scaling", before["ece"]]]
    if after:
        rows.append([f"ECE after scaling (logits / {t:.3f})", after["ece"]])
    body = (note("Expected calibration error over 15 equal-width confidence bins, on the evaluated split; the "
                 "temperature is fitted on the validation split, saved with the weights and used by predict.")
            + table(rows, ["", "value"], "calibration-table")
            + _img(plots.reliability_diagram(before, after, t), "reliability diagram"))
    return section("calibration", "Calibration", body)


def errors_section(inp: ReportInputs) -> str:
    items = inp.gallery
    if items is None:
        return section("errors", "Worst errors", note("no images or model available for the error gallery"))
    if not items:
        return section("errors", "Worst errors", note("no mistakes on this split"))
    method = items[0].get("method", "gradcam")
    method = {"gradcam": "Grad-CAM", "saliency": "gradient saliency"}.get(method, method)
    tiles = "".join(
        f'<figure>{_img(it["image"], "image")}{_img(it["overlay"], method)}<figcaption>true <b>'
        f'{html.escape(it["true"])}</b>, predicted <b>{html.escape(it["pred"])}</b> ({it["conf"]:.3f})'
        f'{"<br>" + html.escape(it["path"]) if it.get("path") else ""}</figcaption></figure>' for it in items)
    return section("errors", "Worst errors (most confident mistakes)",
                   note(f"Each pair: the image and its {method} map for the predicted class (red: what the "
                        "prediction rests on). Confidence after temperature scaling.")
                   + f'<div class="gallery">{tiles}</div>')


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _render_value(key: str, v: Any, depth: int) -> str:
    """Generic rendering of one robustness.json entry: tables of numbers get a table and a
    line plot; scalars are listed by the caller; deeper structures recurse, then fall back to JSON."""
    title = html.escape(key.replace("_", " "))
    if isinstance(v, dict) and v and all(isinstance(r, dict) and r and all(_is_num(x) for x in r.values())
                                         for r in v.values()):
        cols = list(dict.fromkeys(c for r in v.values() for c in r))
        rows = [[name] + [r.get(c, float("nan")) for c in cols] for name, r in v.items()]
        return (f"<h3>{title}</h3>" + table(rows, [""] + cols, f"robustness-{key}")
                + _img(plots.line_table(key, {n: {c: r[c] for c in cols if c in r} for n, r in v.items()}), key))
    if isinstance(v, dict) and v and all(_is_num(x) for x in v.values()):
        return (f"<h3>{title}</h3>" + table(v.items(), ["", "value"], f"robustness-{key}")
                + (_img(plots.line_table(key, {key: v}), key) if len(v) > 1 else ""))
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return f"<h3>{title}</h3>" + ("<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in v) + "</ul>" if v
                                       else note("none"))
    if isinstance(v, dict) and depth < ROBUSTNESS_DEPTH:
        return f"<h3>{title}</h3>" + _render_mapping(v, depth + 1)
    return f"<h3>{title}</h3><pre>{html.escape(json.dumps(v, indent=1)[:4000])}</pre>"


def _render_mapping(d: dict[str, Any], depth: int) -> str:
    scalars = [(k, v) for k, v in d.items() if _is_num(v) or isinstance(v, (str, bool)) or v is None]
    out = table(scalars, ["", "value"]) if scalars else ""
    return out + "".join(_render_value(k, v, depth) for k, v in d.items() if (k, v) not in scalars)


def robustness_section(rob: dict[str, Any]) -> str:
    """Rendered generically (see _render_value), so new measurements show up without a change
    here; the gradient-masking verdict of foveal.robustness is put first when it is raised."""
    warn = ""
    if rob.get("suspect_gradient_masking"):
        warn = ('<p class="warn">Suspected gradient masking: the attack accuracies below are not evidence of '
                'robustness (see warnings).</p>')
    return section("robustness", "Robustness", warn + _render_mapping(rob, 0))


def embedding_section(info: dict[str, Any]) -> str:
    """The 2-D map written by `foveal embed` (embedding_map.json in the run folder)."""
    rows = [["method", info.get("method")], ["split", f"{info.get('split')} ({info.get('images')} images)"],
            ["embedding size", info.get("dim")]]
    if "explained_variance_ratio" in info:
        rows.append(["variance explained by the 2 axes", sum(info["explained_variance_ratio"])])
    return section("embedding", "Embeddings", note("Pre-logit features of each image, mapped to 2-D by `foveal embed` "
                                                   "(embeddings.npy and embeddings.csv beside this page).")
                   + table(rows, ["", "value"], "embedding-table") + _img(plots.embedding_scatter(info), "embedding map"))


GROUP_COLUMNS = ["n", "accuracy", "balanced accuracy", "macro F1", "ECE"]


def _group_rows(stats: dict[str, dict[str, Any]]) -> list[list[Any]]:
    return [[name, r["n"], r["accuracy"], r["balanced_accuracy"], r["macro_f1"], r["ece"],
             ", ".join(f"{c} {v:.3f}" for c, v in r["recall"].items())]
            + ([] if r.get("in_training", True) else ["not in training"]) for name, r in stats.items()]


def groups_section(m: dict[str, Any]) -> str:
    """Per-group metrics (`foveal.metrics.groups`): one table of groups, then one per attribute."""
    head = note(f"Worst group: {m['worst_group']} (accuracy {m['worst_group_accuracy']:.4f}); largest accuracy gap "
                f"between groups: {m['accuracy_gap']:.4f}.")
    cols = ["group", *GROUP_COLUMNS, "recall per class", ""]
    body = head + table(_group_rows(m["groups"]), cols, "groups-table")
    for attr, stats in m.get("attributes", {}).items():
        body += f"<h3>By {html.escape(attr)}</h3>" + table(_group_rows(stats), [attr, *cols[1:]], f"groups-{attr}")
    if "fairness" in m:
        rows = [[k, v["demographic_parity_difference"], v["equalized_odds_difference"]]
                for k, v in m["fairness"].items()]
        body += ("<h3>Fairness (binary task, positive class " + html.escape(m["classes"][1]) + ")</h3>"
                 + table(rows, ["sensitive feature", "demographic parity difference", "equalized odds difference"],
                         "fairness-table"))
    return section("groups", "Groups", body)


CSS = """body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child{text-align:left}th{background:#f3f3f3}img{max-width:100%;margin:.3em}
section{margin-bottom:2.5em}nav a{margin-right:1em}.note{color:#555;font-size:.92em}
.gallery{display:flex;flex-wrap:wrap;gap:.6em}figure{margin:0;border:1px solid #ddd;padding:.3em;width:340px}
figure img{width:160px;image-rendering:pixelated}figcaption{font-size:.85em}
pre{background:#f6f6f6;padding:.5em;overflow:auto}
.warn{color:#a00;font-weight:bold}"""


def render(title: str, sections: list[str], data: dict[str, Any]) -> str:
    ids = [s.split('"', 2)[1] for s in sections]
    nav = "<nav>" + "".join(f'<a href="#{i}">{i}</a>' for i in ids) + "</nav>"
    blob = json.dumps(data, default=float).replace("</", "<\\/")  # never closes the script element early
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<link rel='icon' href='data:,'>"  # no favicon request (offline, and no console error)
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>{nav}{''.join(sections)}"
            f'<script type="application/json" id="report-data">{blob}</script></body></html>')


def build_html(inp: ReportInputs) -> str:
    """The whole page for one evaluation."""
    m = inp.metrics
    sections = [summary_section(inp), curves_section(inp.history), metrics_section(m), confusion_section(m),
                calibration_section(m.get("calibration")), errors_section(inp)]
    if inp.robustness is not None:
        sections.append(robustness_section(inp.robustness))
    if inp.embedding is not None:
        sections.append(embedding_section(inp.embedding))
    if m.get("groups"):
        sections.append(groups_section(m))
    data = {"metrics": {k: v for k, v in m.items()}, "history": inp.history, "robustness": inp.robustness}
    return render(inp.title, sections, data)
