"""Using a trained model: evaluate it on a data set, or predict classes of image files.

Both paths read images through `foveal.data.decode.read_for` with the size, channels,
resize rule and normalization of the weights' model card, so `predict` on a file and
`eval` on a folder holding it see the very same pixels.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np
import torch

from ..batching import resolve_batch_size
from ..card import ModelCard
from ..config import DataConfig
from ..data import load_source
from ..data.decode import list_images  # re-exported
from ..data.preprocess import Normalized
from ..data.bundle import DataBundle
from ..metrics import ConfusionMeter
from ..metrics.groups import add_group_metrics
from ..models.fold_bn import fold_batchnorm
from ..predictor import ImagePredictor
from ..training.checkpoint import load_model
from ..runtime.device import resolve_device
from ..training.prepare import match_format
from ..training.scoring import score_with_logits
from ..training.tta import check_views, tta_logits


class Predictor(ImagePredictor):
    """A trained model with its preprocessing, run by PyTorch: the `ImagePredictor` of the 'torch' backend
    (`predict_files(paths)` gives top-k classes per image), with tensors in and out for `eval` and `explain`."""

    name = "torch"

    def __init__(self, model: torch.nn.Module, card: ModelCard, device: torch.device):
        self.model, self.card, self.device = model.to(device).eval(), card, device
        pre = card.preprocessing
        self.normalized = Normalized(self.model, pre.mean, pre.std).to(device)  # uint8 -> logits
        self.temperature = card.temperature  # fitted by calibration, 1.0 if not
        self.tta: list[str] = check_views(card.tta)  # test-time views the run was evaluated with
        self._auto_batch: Optional[int] = None  # 'auto' resolved once: the server calls per micro-batch
        self._net: Optional[torch.nn.Module] = None  # `model` with its batch norms folded, from the first batch

    @classmethod
    def load(cls, source: str | Path, device: str = "auto") -> "Predictor":
        dev = resolve_device(device)
        model, card = load_model(source, dev)
        return cls(model, card, dev)

    def load_images(self, paths: Iterable[Path]) -> torch.Tensor:
        """(N, C, H, W) uint8 of image files, read as the card says (`read`); raises DecodeError naming a file."""
        return torch.stack([torch.from_numpy(self.read(p)) for p in paths])

    def normalize(self, images_u8: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) uint8 -> what the model sees, on the predictor's device."""
        return self.normalized.normalize(images_u8.to(self.device))

    def batch_size(self, batch_size: int | str | None = "auto") -> int:
        """`batch_size`, or for 'auto' (or None) the evaluation batch sized by memory (foveal.batching)."""
        if batch_size not in ("auto", None):
            return int(batch_size)
        if self._auto_batch is None:
            c, size = self.card.in_chans, self.card.preprocessing.img_size
            self._auto_batch = resolve_batch_size("auto", self.model, (c, size, size), self.device)
        return self._auto_batch

    @torch.no_grad()
    def probabilities(self, images_u8: torch.Tensor, batch_size: int | str = "auto") -> torch.Tensor:
        """(N, C, H, W) uint8 -> (N, K) class probabilities (temperature-scaled)."""
        batch_size = self.batch_size(batch_size)
        out = []
        for i in range(0, len(images_u8), batch_size):
            x = images_u8[i:i + batch_size].to(self.device)
            if self._net is None:  # as `eval` scores it (training/scoring.py); `model` stays as loaded for `explain`
                self._net = fold_batchnorm(self.normalized, x[:2])
            # the views of the uint8 pixels, each normalized at the model's edge, as the exported graph
            # takes them (export/runtime.py): the same floats as views of the normalized batch
            logits = tta_logits(self._net, x, self.tta)
            out.append(torch.softmax(logits / self.temperature, dim=1).cpu())
        return torch.cat(out)

    def predict_images(self, images_u8: Any, batch_size: int | str | None = "auto") -> np.ndarray:
        """(N, C, H, W) uint8 (numpy or torch) -> (N, K) float32 probabilities, as `probabilities`."""
        return self.probabilities(torch.as_tensor(images_u8), batch_size).numpy()


def eval_data(card: ModelCard, data: Optional[str], split: str, data_dir: Optional[str] = None) -> DataBundle:
    """The images to evaluate: the run's own split (same seed), or every image of `data`."""
    dcfg: DataConfig = card.data_config()
    img_size = card.preprocessing.img_size
    if data is None:
        from ..data import make_splits

        if dcfg.source == "arrays":
            raise ValueError("this run was trained on numpy arrays (Classifier.fit(x, y)), which are not saved with "
                             "it: pass the images to use with --data (a folder, CSV manifest or dataset name), or "
                             "call Classifier.evaluate(x, y) / predict(x) in Python")

        bundle = make_splits(load_source(dcfg, img_size), dcfg, card.seed or 0)
        chosen = {split: bundle.splits[split]}
    else:
        dcfg = dataclasses.replace(dcfg, source=data, data_dir=data_dir or dcfg.data_dir, limit=None)
        bundle = load_source(dcfg, img_size)
        if split in bundle.splits:
            chosen = {split: bundle.splits[split]}
        elif "all" in bundle.splits:
            chosen = {"all": bundle.splits["all"]}
        else:
            raise ValueError(f"data '{data}' has no '{split}' split (it has: {', '.join(bundle.splits)})")
    out = DataBundle(bundle.name, bundle.classes, chosen, bundle.problems)
    if card.classes and out.classes != list(card.classes):  # no classes: a pretrained backbone
        out = remap_classes(out, list(card.classes))
    return match_format(out, card.in_chans, img_size)


def remap_classes(bundle: DataBundle, classes: list[str]) -> DataBundle:
    """Relabel `bundle` into the model's class order; unknown classes are an error."""
    unknown = sorted(set(bundle.classes) - set(classes))
    if unknown:
        raise ValueError(f"data has classes the model does not know: {', '.join(unknown)} "
                         f"(model classes: {', '.join(classes)})")
    lut = torch.tensor([classes.index(c) for c in bundle.classes])
    splits = {k: dataclasses.replace(s, labels=lut[s.labels]) for k, s in bundle.splits.items()}
    return DataBundle(bundle.name, list(classes), splits, bundle.problems)


def evaluate_model(source: str | Path, data: Optional[str] = None, split: str = "test", device: str = "auto",
                   batch_size: int | str = "auto",
                   data_dir: Optional[str] = None) -> tuple[dict[str, Any], torch.Tensor, DataBundle]:
    """Metrics of a trained model on a split: (metrics, logits (N, K), the data evaluated)."""
    pred = Predictor.load(source, device)
    if not pred.classes:  # its outputs are features: scoring them as logits would index past the classes
        raise ValueError(f"'{source}' is a backbone without a classifier (a `foveal pretrain` run): there are no "
                         f"classes to evaluate or report on. Fine-tune it (`foveal train --pretrained {source}`), "
                         f"or map its features with `foveal embed {source}`")
    bundle = eval_data(pred.card, data, split, data_dir)
    metrics, logits = evaluate_bundle(pred, bundle, batch_size)
    metrics["data"] = data or pred.card.data_source
    return metrics, logits, bundle


def evaluate_bundle(pred: Predictor, bundle: DataBundle, batch_size: int | str = "auto",
                    classes: Optional[list[Any]] = None) -> tuple[dict[str, Any], torch.Tensor]:
    """Metrics and logits (N, K) of `pred` on the one split of `bundle` (labels in the model's class order), with
    its TTA and per-group rows; `classes` names the per-class rows (default: the model's class names). What
    `foveal eval` and `Classifier.evaluate` both compute."""
    (name, part), = bundle.splits.items()
    from ..data.stream import make_loader  # streams when the data is too large to hold in memory

    pre = pred.card.preprocessing
    loader = make_loader(part, pred.batch_size(batch_size), pred.device, pre.mean, pre.std)
    meter, logits, labels = score_with_logits(pred.model, loader, len(pred.classes), pred.device, tta=pred.tta)
    if len(labels) != len(part):  # the report pairs logits with the split's files one to one
        raise ValueError(f"{len(part) - len(labels)} of {len(part)} images in '{bundle.name or name}' could not be "
                         "decoded: " + "; ".join(getattr(loader, "problems", [])[:5])
                         + ". Fix or remove them, then evaluate again.")
    names = list(classes) if classes is not None else pred.classes
    metrics = meter.compute(names)
    add_group_metrics(metrics, logits, labels, part.groups, names)  # per-group rows when the data has groups
    metrics["split"] = name
    return metrics, logits


__all__ = ["Predictor", "evaluate_bundle", "evaluate_model", "list_images", "ConfusionMeter"]
