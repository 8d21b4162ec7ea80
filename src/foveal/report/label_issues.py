"""`label_issues.html`: the top label issues of a split as thumbnails, self-contained like the run
report (PNG data URIs, inline CSS, no script, no network): ``<section id=...>`` for the summary,
the issues (one ``<figure class="issue">`` each: given vs suggested, with probabilities) and the
estimated noise matrix, plus the shown numbers as an inert JSON block (``id="report-data"``).
"""

from __future__ import annotations

import html
import io
from typing import Any

import numpy as np
import torch
from PIL import Image

from .html import _img, note, render, section, table

THUMB_PX = 96  # shown side of a thumbnail; small images are enlarged with nearest-neighbour (pixels stay sharp)


def thumbnail_png(img_u8: torch.Tensor) -> bytes:
    """(C, H, W) uint8 -> PNG bytes, enlarged by an integer factor up to THUMB_PX."""
    a = img_u8.permute(1, 2, 0).numpy()
    im = Image.fromarray(a[:, :, 0] if a.shape[2] == 1 else a)
    f = max(1, THUMB_PX // max(im.size))
    if f > 1:
        im = im.resize((im.width * f, im.height * f), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def issues_html(check: Any, top: int = 60) -> str:
    """The page for a `foveal.tasks.labels.LabelCheck`; the first `top` ranked issues as thumbnails."""
    iss, classes, rows = check.issues, check.classes, check.rows()
    n = len(iss.given)
    summary = {"split": check.split, "images": n, "flagged": len(rows),
               "flagged share": f"{len(rows) / max(n, 1):.4f}", "estimated noise rate": f"{iss.noise_rate:.4f}",
               "ranked by": iss.rank_by, "seconds": round(check.seconds, 1)}
    summary["probabilities"] = check.method
    tiles = []
    for r in rows[:top]:
        i, p = r["index"], iss.probs[r["index"]]
        where = f"<br>{html.escape(r['path'])}" if r["path"] else f"<br>{html.escape(check.split)}[{i}]"
        tiles.append(f'<figure class="issue" data-index="{i}">{_img(thumbnail_png(check.images[i]), f"image {i}")}'
                     f"<figcaption>#{r['rank']} given <b>{html.escape(r['given'])}</b> "
                     f"(p={p[iss.given[i]]:.3f}), suggested <b>{html.escape(r['suggested'])}</b> "
                     f"(p={r['p_suggested']:.3f}){where}</figcaption></figure>")
    gallery = (note(f"The {min(top, len(rows))} most likely wrong labels of {len(rows)} flagged; p: out-of-sample "
                    "probability of a model that never saw the image. Every flagged image is in label_issues.csv; "
                    "fill its accept column and pass it as --data.relabel, or pass it as --data.exclude.")
               + f'<div class="gallery">{"".join(tiles)}</div>') if rows else note("no label issues found")
    nm = np.asarray(iss.noise_matrix)
    noise = note("P(given label = row | true label = column), from the calibrated confident joint.") + table(
        [[c] + [float(v) for v in row] for c, row in zip(classes, nm)], ["given \\ true"] + list(classes),
        "noise-matrix")
    sections = [section("summary", "Label check", table(summary.items(), ["", ""], "summary-table")),
                section("issues", "Top label issues", gallery), section("noise", "Estimated noise matrix", noise)]
    data = {"summary": summary, "issues": rows[:top], "noise_matrix": nm.tolist(), "classes": classes}
    return render(f"Label issues: {check.split}", sections, data)
