"""What an evaluation leaves for its reader: the metric files and the HTML report.

Everything the page shows is computed here (metrics, calibration, the Grad-CAM error gallery,
model size and cost, results read back from the run folder) into a `ReportInputs`; `foveal.report`
only renders it. Three entry points gather the same inputs, so they render the same page:
the end of training (`write_run_report`), `foveal eval` (`evaluate_to_folder`) and `foveal report
RUN` (`report_from_run`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..card import ModelCard
from ..data.bundle import DataBundle, Split
from ..data.preprocess import normalize_u8
from ..io import atomic_path, read_json, read_result_json
from ..metrics.calibration import calibration_report
from ..report.inputs import ReportInputs
from ..training.callbacks import Callback, RunResult
from ..training import runs
from .embed import read_embedding_map

GALLERY_SIZE = 12  # most confident mistakes shown with their Grad-CAM maps


def read_robustness(run_dir: Path) -> Optional[dict[str, Any]]:
    """robustness.json of the run (written by foveal.robustness), or None; a broken file is an error."""
    return read_result_json(Path(run_dir) / "robustness.json", "the robustness evaluation (`foveal robust`)")


def model_stats(model: nn.Module, card: ModelCard) -> dict[str, str]:
    """Parameters and GFLOPs of one image, as the report's summary table prints them."""
    from ..models import count_gflops, count_params

    stats = {"parameters": f"{count_params(model):,}"}
    try:
        stats["GFLOPs (one image)"] = f"{count_gflops(model, card.preprocessing.img_size, card.in_chans):.4f}"
    except Exception as e:  # a model the FLOP counter cannot trace still gets its report
        stats["GFLOPs (one image)"] = f"n/a ({type(e).__name__})"
    return stats


def error_gallery(model: nn.Module, card: ModelCard, logits: torch.Tensor, part: Split,
                  k: int = GALLERY_SIZE) -> list[dict[str, Any]]:
    """The k most confident mistakes on `part` (whose rows `logits` (N, K) score, in order): PNGs
    of each image and its Grad-CAM overlay for the predicted class (gradient saliency for a model
    without a feature map, e.g. an MLP, which declares no `cam_layer`), with true and predicted class."""
    from ..explain import explain, overlay_png

    probs = torch.softmax(logits.float().cpu() / card.temperature, dim=1)
    conf, pred = probs.max(1)
    labels = part.labels.cpu()
    wrong = (pred != labels).nonzero().flatten()
    idx = wrong[conf[wrong].argsort(descending=True)][:k]
    if len(idx) == 0:
        return []
    device = next(model.parameters()).device
    images = part.images.load(idx)  # (k, C, H, W) uint8: decodes only these k when streamed
    x = normalize_u8(images.to(device), card.preprocessing.mean, card.preprocessing.std)
    method = "gradcam" if getattr(model, "cam_layer", "") else "saliency"
    maps = explain(model, x, method, target=pred[idx].to(device)).cpu()
    classes = card.classes
    return [{"image": overlay_png(images[n], torch.zeros(maps.shape[-2:]), alpha=0.0),
             "overlay": overlay_png(images[n], maps[n]), "true": classes[int(labels[i])],
             "pred": classes[int(pred[i])], "conf": float(conf[i]), "method": method,
             "path": part.paths[i] if part.paths else None} for n, i in enumerate(idx.tolist())]


def report_inputs(title: str, card: ModelCard, metrics: dict[str, Any], history: list[dict[str, Any]],
                  model: Optional[nn.Module], logits: Optional[torch.Tensor], part: Optional[Split],
                  run_dir: Optional[Path]) -> ReportInputs:
    """The page's inputs from one evaluation: `part` is the evaluated split (None when its images
    are not at hand), `run_dir` the run folder whose robustness and embedding results to show."""
    gallery = None
    if model is not None and logits is not None and part is not None:
        gallery = error_gallery(model, card, logits, part)
    return ReportInputs(title, card, metrics, history, model_stats(model, card) if model is not None else {},
                        gallery, read_robustness(run_dir) if run_dir else None,
                        read_embedding_map(run_dir) if run_dir else None)


class RunReport(Callback):
    """Writes the run's report page when its training ends (added by `tasks.fit` unless train.report is off)."""

    def on_train_end(self, trainer: Any, result: RunResult) -> None:
        write_run_report(result)


def write_run_report(result: RunResult) -> Path:
    """report.html and curves.png in the run folder, from a finished training `RunResult`."""
    from ..report import learning_curves, write_report

    test = result.data.splits["test"] if result.data is not None else None
    if test is not None and result.test_logits is not None and len(result.test_logits) != len(test):
        test = None  # streamed test files failed to decode (data_problems.json): no per-image sections
    inp = report_inputs(f"foveal run {result.run_dir.name}", result.card, result.test_metrics, result.history,
                        result.model, result.test_logits, test, result.run_dir)
    if result.history:
        with atomic_path(result.run_dir / "curves.png") as tmp:
            tmp.write_bytes(learning_curves(result.history))
    return write_report(inp, result.run_dir / "report.html")


def write_eval_report(source: str | Path, metrics: dict[str, Any], logits: torch.Tensor, bundle: DataBundle,
                      path: Path, device: str = "auto", history_from: Optional[Path] = None) -> Path:
    """Report of an evaluation: metrics and logits on `bundle`'s one split.

    The model is reloaded from `source` for the Grad-CAM gallery; when `history_from` is a run
    folder, its learning curves, training time and robustness results are included.
    """
    from ..report import write_report
    from ..training.checkpoint import load_model
    from ..runtime.device import resolve_device

    model, card = load_model(source, resolve_device(device))
    (_, part), = bundle.splits.items()
    metrics = dict(metrics)
    metrics.setdefault("calibration", calibration_report(logits, part.labels, card.temperature))
    run_dir = Path(history_from) if history_from else None
    history = runs.read_history(run_dir) if run_dir else []
    if run_dir and (run_dir / "test.json").is_file() and "train_seconds" not in metrics:
        saved = read_json(run_dir / "test.json")
        metrics.update({k: saved[k] for k in ("train_seconds", "best_epoch") if k in saved})
    name = run_dir.name if run_dir else Path(source).stem
    inp = report_inputs(f"foveal run {name}: {metrics.get('data')}, {metrics.get('split')} split", card, metrics,
                        history, model, logits, part, run_dir)
    return write_report(inp, path)


def report_from_run(run: str | Path, out: Optional[Path] = None, split: str = "test", device: str = "auto") -> Path:
    """Rebuild report.html of a run folder: re-evaluates the best weights on its own split
    (same seed, so the same images) and reads history and robustness results from disk."""
    from .inference import evaluate_model

    run_dir = Path(run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"'{run}' is not a run folder (expected runs/NAME with best.safetensors)")
    metrics, logits, bundle = evaluate_model(run_dir, None, split, device)
    return write_eval_report(run_dir, metrics, logits, bundle, out or run_dir / "report.html", device,
                             history_from=run_dir)


@dataclass
class EvalFiles:
    """What `evaluate_to_folder` computed and where it wrote it."""

    metrics: dict[str, Any]
    out_dir: Path  # eval.json, eval.csv, eval_confusion.csv
    page: Path  # the HTML report


def evaluate_to_folder(source: str | Path, data: Optional[str] = None, split: str = "test", device: str = "auto",
                       data_dir: Optional[str] = None, out: Optional[str | Path] = None) -> EvalFiles:
    """`foveal eval`: evaluate a trained model, write its metric files and a report page.

    The folder is `out`, else the run folder, else (for a weights file W.safetensors) eval-W/ beside
    it: never the working directory. In the run folder itself the training report.html is kept
    and the page is eval_report.html beside it.
    """
    from .inference import evaluate_model

    metrics, logits, bundle = evaluate_model(source, data, split, device, data_dir=data_dir)
    weights = Path(source)
    run_dir = weights if weights.is_dir() else None
    out_dir = Path(out) if out else (run_dir or weights.with_name(f"eval-{weights.stem}"))
    runs.write_eval(out_dir, metrics, prefix="eval")
    in_run = run_dir is not None and out_dir.resolve() == run_dir.resolve()
    page = out_dir / ("eval_report.html" if in_run else "report.html")
    write_eval_report(source, metrics, logits, bundle, page, device, history_from=run_dir)
    return EvalFiles(metrics, out_dir, page)
