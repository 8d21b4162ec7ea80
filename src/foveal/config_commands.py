"""Settings of the verbs beside `foveal train`: pretrain, lr-find, eval, predict, check, explain, embed, report.

Each verb's flags are built from its dataclass here (foveal.cli.config_args.add_dataclass_flags),
so every default is written once, and the comment beside a field is that flag's `--help`
(foveal.config_help reads it). foveal.config re-exports every class; `from foveal.config import
EvalConfig` is the usual spelling. Nothing here imports torch or the rest of foveal: `foveal -h`
builds these flags, and config.py imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Union


@dataclass
class SSLConfig:
    """Settings of self-supervised pretraining (saved as ssl.json in the run folder)."""

    method: Literal["simclr", "mae"] = "simclr"  # 'mae': models with forward_masked only (the vit family)
    temperature: float = 0.5  # NT-Xent softmax temperature (0.5 in SimCLR's CIFAR experiments)
    proj_hidden: int = 512  # projection MLP hidden width
    proj_dim: int = 128  # projection output size (the loss works on it; the backbone output is kept)
    views_augment: list[str] = field(default_factory=lambda: ["rrc", "flip", "jitter"])  # augmentations of each view
    mask_ratio: float = 0.75  # MAE: fraction of patches hidden from the encoder
    decoder_dim: int = 128  # MAE decoder width
    decoder_depth: int = 2  # MAE decoder blocks
    knn_k: int = 200  # neighbours of the k-NN monitor on the val split (Wu et al. 2018)
    knn_t: float = 0.07  # temperature of the k-NN vote weights exp(sim / t)
    knn_bank: int = 10_000  # at most this many labeled train images as the k-NN memory bank


@dataclass
class LRFindConfig:
    """`foveal lr-find`: the learning rates the range test sweeps (foveal.training.lr_find)."""

    start_lr: float = 1e-7  # first learning rate of the sweep
    end_lr: float = 10.0  # last learning rate (the sweep stops early once the loss diverges)
    steps: int = 100  # training steps, the learning rate rising exponentially from start_lr to end_lr


@dataclass
class EvalConfig:
    """`foveal eval`: which data a trained model is scored on, and where the files go."""

    data: Optional[str] = None  # dataset name, image folder or CSV; None: the run's own data
    data_dir: Optional[str] = None  # folder with the official files of a named dataset
    split: str = "test"  # the split to evaluate
    device: str = "auto"  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
    # folder for eval.json/csv and the report; None: the run folder (for a weights file W.safetensors, eval-W/ beside it)
    out: Optional[str] = None


@dataclass
class PredictConfig:
    """`foveal predict`: how many classes per image, on which device."""

    topk: int = 5  # classes listed per image, most probable first
    device: str = "auto"  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps' (an .onnx file runs on ONNX Runtime's CPU)


@dataclass
class CheckConfig:
    """`foveal check`: the data report, an augmentation preview, and the label-error search (--labels)."""

    data_dir: Optional[str] = None  # folder with the official files of a named dataset
    preview: Optional[str] = None  # write a PNG grid of augmented training samples here
    augment: Optional[list[str]] = None  # augmentations for --preview (names as data.augment); None: data.augment's
    # also find label errors: out-of-sample probabilities (K-fold, or held out, see --holdout), then confident
    # learning; writes label_issues.csv (ranked), noise_matrix.csv, label_issues.html and check.json into --out
    labels: bool = False
    # split for --labels (None: train, or the source's only split); index = position in that split as loaded
    # (named datasets: the official order)
    split: Optional[str] = None
    # --labels judges the split by one model trained on the source's other splits (e.g. --split test of mnist:
    # trained on its 60,000 train images) instead of K folds of the split itself. None: held out for any --split
    # but train when the source has a train split; false (--no-holdout): always K-fold
    holdout: Optional[bool] = None
    # model trained per fold, or the held-out model; None by image size: lenet5_modern up to 32 px, else resnet20 at 32 px
    model: Optional[str] = None
    folds: Optional[int] = None  # folds of a K-fold --labels check; None: 4 (foveal.tasks.labels.CrossValConfig)
    epochs: Optional[int] = None  # epochs per model; None by training images: 20 / 10 / 6 for <=3k / <=30k / more
    # how flagged images are ranked, most likely wrong first (foveal.data.labels.confident_learning)
    rank_by: Literal["self_confidence", "normalized_margin"] = "self_confidence"
    img_size: Optional[int] = None  # load images at this side for --labels; None: native, or 32
    out: Optional[str] = None  # folder for the --labels files; None: checks/<data name>-<split>/


@dataclass
class ExplainConfig:
    """`foveal explain`: which attribution method, for which class, drawn how."""

    # attribution method: the names of foveal.explain's registry, written out so `foveal -h` needs no torch
    method: Literal["gradcam", "gradcampp", "ig", "occlusion", "rollout", "saliency", "smoothgrad"] = "gradcam"
    target: Optional[str] = None  # class to explain; None: each image's predicted class
    out: str = "explanations"  # folder for the overlay PNGs
    alpha: float = 0.5  # opacity of the heat map over the image
    batch_size: int = 32  # images per forward (and attribution) pass
    device: str = "auto"  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'


@dataclass
class EmbedConfig:
    """`foveal embed`: which split is embedded, its 2-D map, and where the files go."""

    data_dir: Optional[str] = None  # folder with the official files of a named dataset
    split: str = "test"  # the split to embed (a folder without splits: all its images)
    map: Literal["pca", "tsne"] = "pca"  # the 2-D map drawn in the report
    out: Optional[str] = None  # output folder; None: the run folder, so the report shows the map
    batch_size: Union[Literal["auto"], int] = "auto"  # images per forward pass; 'auto': sized by memory
    device: str = "auto"  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'


@dataclass
class ReportConfig:
    """`foveal report`: the page of a run folder, rebuilt."""

    out: Optional[str] = None  # HTML file to write; None: RUN/report.html
    split: str = "test"  # the split whose metrics, errors and plots the page shows
    device: str = "auto"  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'


__all__ = ["SSLConfig", "LRFindConfig", "EvalConfig", "PredictConfig", "CheckConfig", "ExplainConfig", "EmbedConfig",
           "ReportConfig"]
