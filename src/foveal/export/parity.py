"""Export a run and check every exported file against the eager model on the evaluation set.

`export_run` is what `foveal export` calls: ONNX float32 (always, it is the source of int8),
int8 on request, then one parity report: top-1 agreement and max logit difference of float32
ONNX vs eager, accuracies of all three and the int8 accuracy change, with batch-1 and batch-32
latencies side by side and the faster graph that passes named. int8's calibration method and
float layers are chosen on held-out training images (`search.py`), never on the test split the
report measures. The report is printed, saved as `parity.json` and raises when a check fails, so
a broken export never ships silently.
"""

from __future__ import annotations

import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from ..card import ModelCard
from ..data.splits import stratified_indices
from ..tasks.inference import eval_data
from ..config import ExportConfig, ParityLimits
from ..data.preprocess import Normalized
from ..io import write_json
from .onnx_export import export_onnx
from .quantize import copy_meta
from .runtime import OnnxPredictor, median_latency_ms
from .qat import finetune_qat
from .search import Holdout, meets, search_int8


class ExportCheckError(ValueError):
    """An exported model disagrees with the eager one beyond the allowed thresholds."""


def _split_arrays(card: ModelCard, split: str, limit: Optional[int] = None, seed: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images, labels) of the run's own `split`, decoded exactly as for evaluation; `limit`
    images drawn at random, each class in its share (all of them when `limit` is None)."""
    (part,) = eval_data(card, None, split).splits.values()
    n = len(part)
    idx = torch.arange(n)
    if limit is not None and limit < n:
        idx = stratified_indices(part.labels, [limit / n], seed)[0]
    x, kept, errors = part.images.load_readable(idx)  # a streamed split may hold unreadable files
    for e in errors:
        print(f"export: skipped unreadable image {e}")
    return x.numpy(), part.labels[idx][kept].numpy()


def int8_images(card: ModelCard, n: int, seed: int = 1) -> tuple[np.ndarray, Holdout]:
    """Calibration images (`n` of the training split, spread over the classes) and the held-out images
    int8's choices are scored on: the run's validation split (carved from the training data when the
    source has none, never empty, and never the test split the parity check reports)."""
    calib, _ = _split_arrays(card, "train", n, seed)
    return calib, Holdout(*_split_arrays(card, "val"), source="val split")


@torch.inference_mode()
def eager_logits(wrapped: torch.nn.Module, images_u8: np.ndarray, batch_size: int | str = "auto") -> np.ndarray:
    """Logits of the eager model on uint8 images; batch_size 'auto' is sized by memory (foveal.batching)."""
    from ..batching import resolve_batch_size

    batch_size = resolve_batch_size(batch_size, wrapped, images_u8.shape[1:], "cpu")
    return np.concatenate([wrapped(torch.from_numpy(images_u8[i:i + batch_size])).numpy()
                           for i in range(0, len(images_u8), batch_size)])


def compare(ref: np.ndarray, got: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Agreement of top-1 with the reference, max |logit diff| (absolute and relative), accuracy."""
    diff = float(np.abs(ref - got).max()) if len(ref) else 0.0
    return {"top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()),
            "max_logit_diff": diff, "max_logit_diff_rel": diff / max(float(np.abs(ref).max()), 1.0),
            "accuracy": float((got.argmax(1) == labels).mean())}


def _latency(fn: Any, images: np.ndarray, n: int = 30) -> float:
    return median_latency_ms(fn, [images[i:i + 1] for i in range(min(n, len(images)))])


def _latencies(fn: Any, images: np.ndarray, rounds: int = 5) -> dict[str, float]:
    """Median ms per call at batch 1 (30 images) and batch 32 (`rounds` calls; the images repeated
    when there are fewer than 32)."""
    b32 = np.ascontiguousarray(np.resize(images, (32, *images.shape[1:])))
    return {"latency_ms_b1": _latency(fn, images), "latency_ms_b32": median_latency_ms(fn, [b32] * rounds, warmup=1)}


def fastest(report: dict[str, Any], limits: ParityLimits) -> tuple[dict[str, str], list[str]]:
    """Per batch size, the faster of float32 and int8 ONNX among those that pass; and a note wherever
    int8 is the slower one (depthwise convolutions are the usual case on x86)."""
    passing = [k for k in ("onnx", "int8") if k in report and not check({k: report[k]}, limits)]
    best, notes = {}, []
    for b in ("b1", "b32"):
        key = f"latency_ms_{b}"
        if passing:
            best[b] = min(passing, key=lambda k: report[k][key])
        if "int8" in report and report["int8"][key] > report["onnx"][key]:
            notes.append(f"int8 is slower than float32 ONNX at batch {b[1:]}: "
                         f"{report['int8'][key]:.2f} ms vs {report['onnx'][key]:.2f} ms")
    return best, notes


def check(report: dict[str, Any], limits: ParityLimits) -> list[str]:
    """The failed checks of a parity report, as sentences (empty when all pass)."""
    fails = []
    fp = report.get("onnx")
    if fp is not None:
        if fp["top1_agreement"] < limits.min_fp32_agreement:
            fails.append(f"float32 ONNX agrees with eager on {fp['top1_agreement']:.2%} of top-1 "
                         f"(required {limits.min_fp32_agreement:.2%})")
        if fp["max_logit_diff_rel"] > limits.max_fp32_logit_diff:
            fails.append(f"float32 ONNX logits differ from eager by {fp['max_logit_diff']:.3g} "
                         f"({fp['max_logit_diff_rel']:.3g} relative, limit {limits.max_fp32_logit_diff:g})")
    q = report.get("int8")
    if q is not None and q["accuracy_drop_points"] > limits.max_int8_drop:
        fails.append(f"int8 loses {q['accuracy_drop_points']:.2f} accuracy points (limit {limits.max_int8_drop:g})")
    if q is not None and q["top1_agreement"] < limits.min_int8_agreement:
        fails.append(f"int8 agrees with eager on {q['top1_agreement']:.2%} of top-1 "
                     f"(required {limits.min_int8_agreement:.2%})")
    return fails


def export_run(run: str | Path, opts: ExportConfig | None = None) -> dict[str, Any]:
    """Export `run` to float32 ONNX and `opts.formats`, check parity, write `parity.json`; returns the report.

    Raises ExportCheckError (after writing the files and the report) when a check fails.
    """
    from ..training.checkpoint import load_model

    opts = opts or ExportConfig()
    unknown = set(opts.formats) - {"onnx", "int8"}
    if unknown:
        raise ValueError(f"unknown export format(s) {', '.join(sorted(unknown))}; choose from onnx, int8")
    model, card = load_model(run, "cpu")
    out = Path(opts.out_dir) if opts.out_dir else (Path(run) if Path(run).is_dir() else Path(run).parent) / "export"
    wrapped = Normalized(model, card.preprocessing.mean, card.preprocessing.std).eval()
    fp32_path = export_onnx(model, card, out / "model.onnx")
    x, y = _split_arrays(card, "test", opts.eval_limit)
    ref = eager_logits(wrapped, x)
    report: dict[str, Any] = {"run": str(run), "model": card.model, "eval_images": int(len(x)),
                              "eager": {"accuracy": float((ref.argmax(1) == y).mean())},
                              "files": {"onnx": str(fp32_path)}, "limits": asdict(opts.limits)}
    with torch.inference_mode():
        report["eager"]["latency_ms_b1"] = _latency(lambda b: wrapped(torch.from_numpy(b)), x)
    fp32 = OnnxPredictor.load(fp32_path, opts.threads)
    report["onnx"] = {**compare(ref, fp32.logits(x), y), **_latencies(fp32.logits, x)}
    if "int8" in opts.formats:
        report["int8"] = _int8(card, model, fp32_path, out / "model.int8.onnx", opts, ref, x, y)
        report["files"]["int8"] = report["int8"].pop("file")
    report["failures"] = check(report, opts.limits)
    report["passed"] = not report["failures"]
    report["fastest_passing"], report["speed_notes"] = fastest(report, opts.limits)
    write_json(out / "parity.json", report)
    if report["failures"]:
        raise ExportCheckError(f"export of '{run}' failed its parity check: " + "; ".join(report["failures"])
                               + f" (report: {out / 'parity.json'})")
    return report


def _int8(card: ModelCard, model: torch.nn.Module, fp32_path: Path, q_path: Path, opts: ExportConfig,
          ref: np.ndarray, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Quantize with the method and float layers chosen on held-out training images, then measure
    it on the test images `x` against the eager logits `ref`; with `quant.qat` 'on', or 'auto' when
    that int8 misses the limits, quantize a QAT fine-tuned copy of `model` instead (export/qat.py),
    measured against the same eager logits of the original."""
    calib, hold = int8_images(card, opts.calib_images)
    q = _quantized(fp32_path, fp32_path, q_path, calib, hold, opts, ref, x, y)
    mode = opts.quant.qat
    if mode == "off":
        return {**q, **_latencies(OnnxPredictor.load(q_path, opts.threads).logits, x)}
    c = q["choices"]
    missed = [why for why, miss in (
        ("missed the limits on the held-out images", not meets(c["holdout_int8"], c["holdout"]["float32"]["accuracy"],
                                                              opts.limits)),
        ("failed the parity check", bool(check({"int8": q}, opts.limits)))) if miss]
    record: dict[str, Any] = {"mode": mode, "ran": mode == "on" or bool(missed),
                              "reason": "qat 'on'" if mode == "on" else "PTQ " + " and ".join(missed) if missed
                              else "PTQ met the limits on the held-out images and in the parity check"}
    before = {k: q[k] for k in ("accuracy", "top1_agreement", "accuracy_drop_points", "mean_sq_logit_diff")}
    if record["ran"]:
        student, trained = finetune_qat(model, card, opts.quant)
        wrapped = Normalized(student, card.preprocessing.mean, card.preprocessing.std).eval()
        record.update(trained, float_after_qat=compare(ref, eager_logits(wrapped, x), y))
        with tempfile.TemporaryDirectory() as td:
            qat_fp32 = export_onnx(student, card, Path(td) / "model.qat.onnx")
            q = _quantized(qat_fp32, fp32_path, q_path, calib, hold, opts, ref, x, y,
                           {"qat_trained": {"epochs": opts.quant.qat_epochs, "lr": opts.quant.qat_lr}})
        record.update(ptq_int8=before, int8_after_qat={k: q[k] for k in before})
    else:
        record["ptq_int8"] = before
    return {**q, **_latencies(OnnxPredictor.load(q_path, opts.threads).logits, x), "qat": record}


def _quantized(src: Path, fp32_path: Path, q_path: Path, calib: np.ndarray, hold: Holdout, opts: ExportConfig,
               ref: np.ndarray, x: np.ndarray, y: np.ndarray, meta: Optional[dict[str, Any]] = None
               ) -> dict[str, Any]:
    """int8 of the float graph `src` searched on `hold`, written to `q_path` with `fp32_path`'s metadata
    (+ `meta`), and compared with the eager logits `ref` on `x` (latencies left to the caller)."""
    choices = search_int8(src, q_path, calib, hold, opts.quant, opts.limits, opts.threads)
    copy_meta(fp32_path, q_path, {"precision": "int8", "quantization": {
        **asdict(opts.quant), "calibration": choices["calibration"]["chosen"],
        "float_nodes": choices["float_nodes"]["ends"] + choices["float_nodes"]["sensitive"], **(meta or {})}})
    got = OnnxPredictor.load(q_path, opts.threads).logits(x)
    r = {**compare(ref, got, y), "mean_sq_logit_diff": float(((got - ref) ** 2).mean())}
    r["accuracy_drop_points"] = 100.0 * (float((ref.argmax(1) == y).mean()) - r["accuracy"])
    return {**r, "settings": asdict(opts.quant), "choices": choices, "file": str(q_path)}


def format_parity(r: dict[str, Any]) -> str:
    """Side-by-side table of accuracy, agreement and latency for eager / ONNX / int8, and the int8 choices."""
    lines = [f"{r['model']} on {r['eval_images']} evaluation images",
             f"{'':8} {'accuracy':>9} {'top-1 agree':>11} {'max |dlogit|':>12} {'b1 ms':>8} {'b32 ms':>8}"]
    lines.append(f"{'eager':8} {r['eager']['accuracy']:>9.4f} {'':>11} {'':>12} {r['eager']['latency_ms_b1']:>8.3f}")
    for k in ("onnx", "int8"):
        if k in r:
            v = r[k]
            lines.append(f"{k:8} {v['accuracy']:>9.4f} {v['top1_agreement']:>11.2%} {v['max_logit_diff']:>12.3g} "
                         f"{v['latency_ms_b1']:>8.3f} {v['latency_ms_b32']:>8.2f}")
    if "int8" in r:
        c = r["int8"]["choices"]
        lines.append(f"int8 accuracy change: {-r['int8']['accuracy_drop_points'] + 0.0:+.2f} points; calibration "
                     f"{c['calibration']['chosen']} (of {', '.join(c['calibration']['tried'])}, on "
                     f"{c['holdout']['images']} held-out images of the {c['holdout']['source']}); "
                     f"{len(c['float_nodes']['sensitive'])} sensitive layer(s) kept in float")
    qat = r.get("int8", {}).get("qat")
    if qat and qat["ran"]:
        b, a = qat["ptq_int8"], qat["int8_after_qat"]
        lines.append(f"QAT ({qat['reason']}): {qat['epochs']} epoch(s) at lr {qat['lr']:g} on {qat['train_images']} "
                     f"training images; int8 agreement {b['top1_agreement']:.2%} -> {a['top1_agreement']:.2%}, "
                     f"accuracy {b['accuracy']:.4f} -> {a['accuracy']:.4f}")
    elif qat:
        lines.append(f"QAT ({qat['mode']}) not run: {qat['reason']}")
    lines += r.get("speed_notes", [])
    if r.get("fastest_passing"):
        lines.append("fastest passing graph: " + ", ".join(f"batch {b[1:]}: {k}" for b, k in r["fastest_passing"].items()))
    lines.append("parity check: " + ("passed" if r["passed"] else "FAILED: " + "; ".join(r["failures"])))
    return "\n".join(lines)
