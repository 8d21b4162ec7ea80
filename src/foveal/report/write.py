"""The three ways to get a report: at the end of training, after `foveal eval`, and from a
run folder (`foveal report RUN`). All gather a ReportInputs and render the same page."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch

from ..io import write_text
from .html import build_html
from ..engine.embed import read_embedding_map
from .inputs import ReportInputs, calibration_of, read_history, read_robustness


def write_report(inp: ReportInputs, path: Path) -> Path:
    """Render and write the page atomically; returns its path."""
    write_text(path, build_html(inp))
    return path


def write_run_report(result) -> Path:
    """report.html in the run folder, from a finished training RunResult (trainer.finish)."""
    test = result.data.splits["test"] if result.data is not None else None
    if test is not None and result.test_logits is not None and len(result.test_logits) != len(test):
        test = None  # streamed test files failed to decode (data_problems.json): no per-image sections
    inp = ReportInputs(
        title=f"foveal run {result.run_dir.name}", meta=result.meta, metrics=result.test_metrics,
        history=result.history, logits=result.test_logits, images=test.images if test is not None else None,
        labels=test.labels if test is not None else None, paths=test.paths if test is not None else None,
        model=result.model, robustness=read_robustness(result.run_dir), embedding=read_embedding_map(result.run_dir))
    if result.history:
        from ..io import atomic_path
        from .plots import learning_curves

        with atomic_path(result.run_dir / "curves.png") as tmp:
            tmp.write_bytes(learning_curves(result.history))
    return write_report(inp, result.run_dir / "report.html")


def write_eval_report(source: str | Path, metrics: dict[str, Any], logits: torch.Tensor, bundle, path: Path,
                      device: str = "auto", history_from: Optional[Path] = None) -> Path:
    """Report of an evaluation (`foveal eval`): metrics and logits on `bundle`'s one split.

    The model is reloaded from `source` for the Grad-CAM gallery; when `history_from` is a run
    folder, its learning curves, training time and robustness results are included.
    """
    from ..engine.checkpoint import load_model
    from ..engine.device import resolve_device

    model, meta = load_model(source, resolve_device(device))
    (_, part), = bundle.splits.items()
    metrics = dict(metrics)
    metrics.setdefault("calibration", calibration_of(logits, part.labels, float(meta.get("temperature", 1.0))))
    run_dir = Path(history_from) if history_from else None
    history = read_history(run_dir) if run_dir else []
    if run_dir and (run_dir / "test.json").is_file() and "train_seconds" not in metrics:
        from ..io import read_json

        saved = read_json(run_dir / "test.json")
        metrics.update({k: saved[k] for k in ("train_seconds", "best_epoch") if k in saved})
    name = run_dir.name if run_dir else Path(source).stem
    inp = ReportInputs(title=f"foveal run {name}: {metrics.get('data')}, {metrics.get('split')} split",
                       meta=meta, metrics=metrics, history=history, logits=logits, images=part.images,
                       labels=part.labels, paths=part.paths, model=model,
                       robustness=read_robustness(run_dir) if run_dir else None,
                       embedding=read_embedding_map(run_dir) if run_dir else None)
    return write_report(inp, path)


def report_from_run(run: str | Path, out: Optional[Path] = None, split: str = "test", device: str = "auto") -> Path:
    """Rebuild report.html of a run folder: re-evaluates the best weights on its own split
    (same seed, so the same images) and reads history and robustness results from disk."""
    from ..engine.inference import evaluate_model

    run_dir = Path(run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"'{run}' is not a run folder (expected runs/NAME with best.safetensors)")
    metrics, logits, bundle = evaluate_model(run_dir, None, split, device)
    return write_eval_report(run_dir, metrics, logits, bundle, out or run_dir / "report.html", device,
                             history_from=run_dir)
