"""Settings of the verbs beside `foveal train`: pretrain, lr-find, eval, predict, check, explain, embed, report,
and of the two short in-memory recipes: the label check's folds (CrossValConfig) and the fast recipe
(FastConfig, with its presets per data set, FAST_RECIPES).

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
    # model trained per fold, or the held-out model; None by image size: lenet5_modern up to 32 px, else resnet20 at
    # 32 px. With --pretrained: the architecture of weights given by name or as a plain state_dict (a foveal file names
    # its own)
    model: Optional[str] = None
    folds: Optional[int] = None  # folds of a K-fold --labels check; None: 4 (CrossValConfig.folds)
    epochs: Optional[int] = None  # epochs per model; None by training images: 20 / 10 / 6 for <=3k / <=30k / more
    # how flagged images are ranked, most likely wrong first (foveal.data.labels.confident_learning)
    rank_by: Literal["self_confidence", "normalized_margin"] = "self_confidence"
    # load images at this side for --labels; None: native, or 32 (with --pretrained: the weights' input size)
    img_size: Optional[int] = None
    out: Optional[str] = None  # folder for the --labels files; None: checks/<data name>-<split>/
    # --labels from pretrained weights instead of small models trained from scratch: what `foveal train --pretrained`
    # takes (a weights file or run folder, 'imagenet' with --model, 'tv:...', 'hf-hub:...'). The images are loaded
    # once at the weights' input size with their preprocessing, the frozen backbone gives each one feature vector,
    # and each fold fits a linear head (logistic regression) on the other folds' features
    pretrained: Optional[str] = None
    device: str = "auto"  # where --pretrained's backbone and linear heads run: 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'


@dataclass
class CrossValConfig:
    """The label check's K-fold recipe; `foveal.tasks.labels.crossval_defaults(side, n)` picks the model and length
    per input size."""

    model: str = "lenet5_modern"  # the model trained per fold (or the one held-out model), from scratch
    folds: int = 4  # stratified, seeded folds: each image is predicted by the model trained on the others
    epochs: int = 10  # passes over the fold's training images
    img_size: Optional[int] = None  # None: the images' own side, raised to the model's minimum
    batch_size: int = 128  # images per AdamW step (full batches only)
    lr: float = 4e-3  # AdamW peak, per batch
    weight_decay: float = 5e-4  # AdamW's decoupled decay, on every parameter
    translate: int = 2  # max px of random shift (batched, reflect padding); 0 disables
    eval_batch_size: int = 1024  # images per forward pass when a fold model predicts its held-out images
    seed: int = 0  # seeds the folds, each fold's weights (seed + k), shuffling and shifts
    workers: Optional[int] = None  # folds trained side by side (threads, 1 intra-op thread each); None: one per core
    # With pretrained weights (foveal check --labels --pretrained): each fold's linear head on the frozen features
    probe_steps: int = 500  # most L-BFGS iterations of a fold's head (full batch, from zero weights)
    probe_l2: float = 1e-3  # L2 penalty on the head's weights: mean cross-entropy + probe_l2 / 2 |W|^2


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


@dataclass
class FastConfig:
    """Hyper-parameters of the fast (speedrun) recipe, `foveal.training.fast`; units as in the speedruns
    (per 1024 examples). Its presets per data set are FAST_RECIPES (`fast.RECIPES`)."""

    model: str = "airnet_mnist"  # the network, a name from `foveal models`
    epochs: float = 10.0  # may be fractional: the last epoch is cut short
    batch_size: int = 1024  # images per step
    lr: float = 11.5  # per 1024 examples, on a loss summed over the batch
    momentum: float = 0.85  # Nesterov
    weight_decay: float = 0.0153  # per 1024 examples, decoupled from the lr
    bias_scaler: float = 64.0  # lr multiplier (and wd divisor) for BN shifts and the whitening bias
    label_smoothing: float = 0.2  # cross-entropy target smoothing
    whiten_bias_epochs: float = 3.0  # the whitening bias trains this many epochs, then freezes
    flip: bool = True  # horizontal flips (alternating per epoch); off for digits
    translate: int = 2  # max px of random translation (reflect padding)
    lookahead: bool = True  # every 5 steps pull the weights toward a slow EMA of themselves
    tta: list[str] = field(default_factory=lambda: ["flip", "shift"])  # test-time views, as train.tta
    eval_batch_size: int = 2000  # images per forward pass of the test evaluation
    amp: bool = True  # bf16 autocast (CUDA)
    channels_last: bool = True  # NHWC weights and inputs (CUDA; NCHW on the CPU)
    compile: bool = False  # torch.compile the training step's model once, reused by every seeded run
    compile_mode: str = "default"  # max-autotune-no-cudagraphs: maybe faster steps, minutes of autotuning
    min_accuracy: float = 0.0  # a run under this test accuracy is a failure, not a timing (the presets set it)


# The fast recipe's presets per data set; a preset is a starting point the bench script can override. Without flips
# in training, the test-time views are the shifts alone (no mirrored view). min_accuracy is the floor under which a
# run is a failure, not a result: well below what the preset reaches (Fashion-MNIST ~0.948, MNIST ~0.995, digits
# ~0.96), well above chance (0.10).
FAST_RECIPES: dict[str, FastConfig] = {
    "fashion-mnist": FastConfig(epochs=10.0, flip=True, min_accuracy=0.93),
    "mnist": FastConfig(epochs=5.0, flip=False, tta=["shift"], min_accuracy=0.99),
    "digits": FastConfig(model="airnet_tiny", epochs=12.0, batch_size=128, flip=False, translate=1, tta=["shift"],
                         min_accuracy=0.90),
}


__all__ = ["SSLConfig", "LRFindConfig", "EvalConfig", "PredictConfig", "CheckConfig", "CrossValConfig", "ExplainConfig",
           "EmbedConfig", "ReportConfig", "FastConfig", "FAST_RECIPES"]
