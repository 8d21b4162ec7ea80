"""Typed run configuration: the only place defaults live (with config_commands.py, the other verbs' settings).

A run is described by :class:`RunConfig`, made of one dataclass per concern. YAML recipes
and CLI flags fill the same fields through :func:`from_dict` / :func:`apply_overrides`,
which check every key and type in one place and name the offending key on error.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

# the settings of pretrain, lr-find, eval, predict, check, explain, embed and report, and of the label check's
# folds and the fast recipe (with its presets), re-exported here
from .config_commands import (FAST_RECIPES, CheckConfig, CrossValConfig, EmbedConfig, EvalConfig,  # noqa: F401
                              ExplainConfig, FastConfig, LRFindConfig, PredictConfig, ReportConfig, SSLConfig)


@dataclass
class DataConfig:
    """Where images come from and how they are shaped before the model."""

    source: str = "digits"  # 'digits', a dataset name (mnist, ...), an image folder, or a CSV manifest
    data_dir: Optional[str] = None  # folder holding official dataset files (mnist, cifar10, ...)
    download: bool = False  # fetch a named dataset's official files (checksum-verified) into data_dir if missing
    img_size: Optional[int] = None  # square side in px; None: the model's default for the data
    in_chans: Optional[int] = None  # 1 or 3; None: inferred from the images
    # squash to img_size, or shorter side to img_size + centre crop; None: 'crop' when starting from
    # named pretrained weights (their eval transform), else 'squash'
    resize: Optional[Literal["squash", "crop"]] = None
    # 'crop': the centre square's side as a fraction of the shorter side (timm's crop_pct: shorter side to
    # img_size / crop_pct, then the centre img_size); None: the weights' own (0.875 for most ImageNet weights), else 1
    crop_pct: Optional[float] = None
    val_fraction: float = 0.1  # of all labeled images, when the source has no val split
    test_fraction: float = 0.2  # of all labeled images, when the source has no test split
    mean: Optional[list[float]] = None  # per channel in [0, 1]; None: computed on the train split
    std: Optional[list[float]] = None  # per channel in [0, 1]; None: computed on the train split
    # names from foveal.data.augment; None: ['crop'] from scratch, ['rrc', 'flip'] from pretrained weights
    augment: Optional[list[str]] = None
    pad: int = 2  # px of padding for the 'crop' augmentation (per 32 px of input)
    rotate: float = 10.0  # max degrees for 'rotate'
    noise_std: float = 0.05  # std of 'noise' in [0, 1] pixel units
    jitter: float = 0.4  # brightness/contrast/saturation strength for 'jitter'
    rrc_scale: float = 0.35  # smallest crop area (fraction of the image) for 'rrc' random-resized-crop
    erase_p: float = 0.25  # probability of one random-erasing rectangle per image for 'erase'
    randaug_n: int = 2  # ops per image for 'randaugment'
    randaug_m: int = 9  # magnitude (0-30 scale of Cubuk et al.) for 'randaugment'
    mixup: float = 0.0  # Beta(alpha, alpha) for mixup; 0 disables
    cutmix: float = 0.0  # Beta(alpha, alpha) for cutmix; 0 disables
    balance: Literal["none", "weights", "sampler", "groups"] = "none"  # class-weighted loss, or balanced draws
    # over classes ('sampler') or over the train split's groups ('groups', e.g. a CSV 'group' column)
    limit: Optional[int] = None  # keep at most this many training images (quick experiments)
    # Label errors (`foveal check --labels`). Both name images by position in the source's own split
    # (named datasets: official order; the `split` column, else 'train', else the only split) or by path,
    # and apply before val/test are carved (data/splits.py make_splits), so a dropped image is gone from
    # every split made from it.
    exclude: Optional[str] = None  # a label_issues.csv, or a text file of paths / indices / split:index, one a line
    relabel: Optional[str] = None  # a label_issues.csv: rows whose `accept` is 1/true/yes get their `suggested` class
    workers: int = 2  # decoder threads for folders, in memory or streamed (worker processes when streaming to CUDA)
    gpu_decode: bool = True  # streaming to CUDA: JPEGs decoded in batches on the GPU (foveal.data.gpu_decode)
    # Loader path for folders/CSV: True keeps all decoded images as one uint8 tensor on the training device; False
    # streams them through `workers` decoders each epoch; None (auto): in memory when N x C x img_size^2 bytes fit.
    in_memory: Optional[bool] = None
    max_pixels: int = 64_000_000  # refuse images declaring more pixels (decompression bombs)


@dataclass
class ModelConfig:
    """Which network, and how it is built."""

    name: str = "lenet5"  # a name from `foveal models`
    drop_rate: float = 0.0  # dropout before the classifier
    drop_path_rate: float = 0.0  # stochastic depth, for models that have residual blocks
    # start from: a safetensors file or run folder, or weights by name ('imagenet', 'tv:resnet50.IMAGENET1K_V2',
    # 'hf-hub:timm/convnext_tiny.in12k_ft_in1k'; see foveal.models.hub), whose preprocessing then applies
    pretrained: Optional[str] = None
    # How --pretrained weights are trained: 'full' (every layer), 'linear' (linear probe: backbone
    # frozen, its batch-norm statistics too; only the classifier learns), 'gradual' (the classifier
    # first, then one more depth of model.layer_ids() unfrozen from the top every `unfreeze_every` epochs),
    # 'staged' (the classifier alone for `freeze_epochs`, then every layer at lr x `unfrozen_lr_scale`, as
    # fastai's fine_tune); 'auto': 'staged' from pretrained weights, 'full' from scratch.
    finetune: Literal["auto", "full", "linear", "gradual", "staged"] = "auto"
    unfreeze_every: int = 1  # epochs per stage of 'gradual'
    freeze_epochs: int = 1  # 'staged': epochs of the classifier alone before every layer trains
    unfrozen_lr_scale: float = 0.1  # 'staged': learning-rate multiplier once every layer trains


@dataclass
class OptimConfig:
    """Optimizer, schedule and regularization."""

    name: Literal["sgd", "adam", "adamw"] = "adamw"  # the optimizer
    lr: float = 3e-3  # peak learning rate, per batch (no automatic scaling)
    momentum: float = 0.9  # SGD momentum, or Adam beta1
    nesterov: bool = True  # Nesterov momentum (SGD only)
    beta2: float = 0.999  # Adam/AdamW second-moment decay
    weight_decay: float = 5e-4  # applied to weights only; norms and biases are exempt
    # layer-wise lr decay: depth d of L (model.layer_ids()) gets lr * layer_decay**(L - d);
    # None: 0.75 for the 'staged' fine-tune of pretrained weights, else 1.0 (off)
    layer_decay: Optional[float] = None
    schedule: Literal["cosine", "onecycle", "constant"] = "cosine"  # learning-rate schedule over all steps
    warmup_epochs: float = 1.0  # linear warm-up length for 'cosine'
    min_lr_ratio: float = 0.01  # final lr as a fraction of `lr`
    label_smoothing: float = 0.0  # probability mass spread evenly over all classes in the targets
    grad_clip: Optional[float] = None  # max global gradient norm
    loss: Literal["ce", "focal", "group_dro"] = "ce"  # cross-entropy, focal (Lin et al. 2017), Group DRO (Sagawa 2020)
    focal_gamma: float = 2.0  # focusing exponent of the focal loss (0: cross-entropy)
    dro_step: float = 0.01  # Group DRO step size eta of the group weights q <- q exp(eta loss_g), per step


@dataclass
class TrainConfig:
    """The loop: length, batching, devices, checkpoints, selection."""

    epochs: int = 15  # passes over the training split
    batch_size: int = 64  # images per optimizer step, over all processes (the global batch)
    # images per forward pass in validation and test; 'auto': sized by memory (foveal.batching)
    eval_batch_size: Union[Literal["auto"], int] = "auto"
    seed: int = 0  # seeds splits, model init, shuffling, augmentation and dropout
    device: str = "auto"  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
    amp: bool = True  # bf16 autocast (CUDA only; ignored on CPU)
    # bf16 autocast for the CPU training (and `foveal pretrain`) step, each depthwise-conv pass in its faster
    # precision (runtime/device.py); validation, test and k-NN stay fp32: pays off on CPUs with native bf16
    # (AVX512-BF16, AMX; ResNet-18 at 224 px 2.6x, BENCHMARKS.md), slower than fp32 on the others.
    # None (auto): `foveal train` turns it on in channels-last (>= 160 px) on a CPU with native bf16, as `amp` is on
    # CUDA; off elsewhere, and in `foveal pretrain`
    cpu_bf16: Optional[bool] = None
    compile: bool = False  # torch.compile the training model (pays off on CUDA after a minute of compiling)
    # the torch.compile mode: "reduce-overhead" adds CUDA graphs, "max-autotune" tunes kernels (slow to compile)
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    # NHWC memory format: cuDNN's tensor-core conv kernels run without transposes; None (auto): on for CPU training at
    # >= 160 px, where oneDNN's NHWC kernels make 224-px convnet steps 10-30% faster (EfficientNet-Lite0 1.39x, ResNet-18
    # 1.12x on a 2-core Xeon) while small inputs get slower (ResNet-18 at 32 px: 3.5x), off elsewhere
    channels_last: Optional[bool] = None
    ema: bool = False  # keep an exponential moving average of weights, evaluated instead
    ema_decay: float = 0.999  # per step
    # Test-time views ('flip', 'shift') of the test evaluation, saved with the weights for eval/predict/report
    tta: list[str] = field(default_factory=list)
    early_stop: Optional[int] = None  # stop after this many epochs without improvement
    # 'last' keeps the final epoch as `best` (a fixed schedule decided up front, e.g. one-cycle to zero;
    # the val split is then only watched, so it can be tiny, and early_stop never fires)
    # 'worst_group_accuracy': the lowest accuracy over the val split's groups (a CSV 'group' column or a dataset's
    # groups; Sagawa et al. 2020 / Liu et al. 2021 select models this way)
    best_metric: Literal["val_acc", "val_macro_f1", "val_loss", "worst_group_accuracy", "last"] = "val_acc"
    name: Optional[str] = None  # run folder name under out_dir; default from data and model
    out_dir: str = "runs"  # folder holding the run folders
    resume: bool = False  # continue the run folder `name` from its last checkpoint
    deterministic: bool = True  # deterministic kernels where the backend has them
    progress: bool = True  # progress bar on stderr
    log_every: int = 20  # steps between progress-bar refreshes (each one syncs the device)
    devices: int = 1  # processes on this machine; >1 launches torchrun (batch_size stays the global batch)
    # SyncBatchNorm under DDP (global-batch statistics: N processes compute what one does); None: on when N > 1
    sync_bn: Optional[bool] = None
    dist_timeout: int = 300  # seconds a collective may wait before the job fails instead of hanging
    # Robust training (foveal.robustness.training): attacks and corruptions in [0, 1] pixel units.
    adv: Literal["none", "fgsm", "pgd"] = "none"  # fgsm: fast FGSM with random start (Wong 2020); pgd: Madry 2018
    adv_eps: float = 0.3  # L-inf radius, pixel units
    adv_alpha: float = 0.375  # step size, pixel units (Wong: 1.25 eps for fgsm; Madry: ~2.5 eps / steps for pgd)
    adv_steps: int = 7  # PGD steps per batch
    adv_ramp_epochs: float = 0.0  # eps grows linearly from 0 over these epochs (0: full eps from the start)
    corrupt_aug: Literal["none", "noise", "blur", "augmix"] = "none"  # corruption-style batch augmentation
    corrupt_p: float = 0.5  # fraction of each batch corrupted
    # Where metrics also go: 'tensorboard' event files in RUN/tensorboard/, 'mlflow' to mlflow.get_tracking_uri()
    # (params, per-epoch metrics, the report and weights as artifacts); 'auto': tensorboard when importable.
    logger: Literal["auto", "none", "tensorboard", "mlflow"] = "auto"
    # Just Train Twice (Liu et al. 2021): > 0 first trains this many epochs as configured, then trains a new model
    # from scratch on the train split with that model's training errors repeated `jtt_upweight` times (group labels
    # are not read in training; pair with best_metric worst_group_accuracy when val has groups)
    jtt_epochs: int = 0
    jtt_upweight: int = 6  # JTT's lambda_up: copies of each stage-1 error in the second model's train split
    report: bool = True  # write report.html and its plots at the end; false for quick fits (cross-validation)


@dataclass
class RunConfig:
    """Everything a training run needs; saved as config.yaml in its run folder."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# The names users guess first, mapped to config fields: `foveal train --lr` and `Classifier(lr=...)`
# (keywords with '_' for '-') take them, beside every full path ('--optim.lr', `**{"optim.lr": ...}`).
SHORT_NAMES = {
    "data": "data.source", "data-dir": "data.data_dir", "model": "model.name", "epochs": "train.epochs",
    "batch-size": "train.batch_size", "lr": "optim.lr", "img-size": "data.img_size", "seed": "train.seed",
    "name": "train.name", "device": "train.device", "pretrained": "model.pretrained", "out-dir": "train.out_dir",
    "optimizer": "optim.name", "augment": "data.augment", "devices": "train.devices",
    "download": "data.download", "weight-decay": "optim.weight_decay", "progress": "train.progress",
    "report": "train.report", "logger": "train.logger",
}


class ConfigError(ValueError):
    """A key or value in a recipe or on the command line is not valid."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` as type `tp`, or raise ConfigError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        if isinstance(value, str):  # CLI form: comma-separated
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, Path)):
            return str(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported field type {_type_name(tp)}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unknown(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return ConfigError(f"unknown key '{where}{key}'{hint}; valid keys: {', '.join(known)}")


def from_dict(d: dict[str, Any] | None, cls: type = RunConfig, where: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, checking every key and type."""
    d = d or {}
    if not isinstance(d, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {d!r}")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in d.items():
        if key not in names:
            raise _unknown(key, names, where)
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(value, tp, f"{where}{key}.")
        else:
            kwargs[key] = _coerce(value, tp, f"{where}{key}")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (for YAML/JSON)."""
    return dataclasses.asdict(cfg)


def field_paths(cls: type = RunConfig, prefix: str = "") -> dict[str, Any]:
    """Map every leaf field's dotted path ('optim.lr') to its type."""
    out: dict[str, Any] = {}
    for name, tp in _hints(cls).items():
        if dataclasses.is_dataclass(tp):
            out.update(field_paths(tp, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = tp
    return out


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return a copy of `cfg` with dotted-path overrides ({'optim.lr': 0.1}) checked and set."""
    d = to_dict(cfg)
    paths = field_paths(type(cfg))
    for path, value in overrides.items():
        if path not in paths:
            raise _unknown(path, sorted(paths), "")
        section, _, leaf = path.rpartition(".")
        target = d
        for part in section.split(".") if section else []:
            target = target[part]
        target[leaf] = value
    return from_dict(d, type(cfg))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML recipe as a dict, with the file named in any error."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe '{path}' does not exist")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe '{path}' is not valid YAML: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"recipe '{path}' must be a mapping of sections (data, model, optim, train)")
    return d


def load_config(recipe: str | Path | None = None, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults, then the recipe's values, then the overrides, each checked."""
    try:
        cfg = from_dict(load_yaml(recipe)) if recipe else RunConfig()
    except ConfigError as e:
        raise ConfigError(f"{recipe}: {e}") from None
    return apply_overrides(cfg, overrides or {})


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


# ---- the commands beyond training: serve, export, robust (the other verbs: config_commands.py) ------
# Their flags are built from these fields (foveal.cli.config_args.add_dataclass_flags), so a default
# is written here once and `--help` shows it.


@dataclass
class BatchSizing:
    """How an 'auto' evaluation or attack batch size is picked (foveal.batching)."""

    # the most images per batch: the fixed size evaluation and attacks used before sizing by memory,
    # and what CUDA still gets (a GPU's memory is not the limit there, and larger batches keep it busy)
    max_batch: int = 256
    # CPU: activation memory one batch may hold, measured by a probe forward of two images. Past a few
    # dozen images at 224 px a CPU is busy anyway, and larger batches only add page faults (BENCHMARKS.md).
    cpu_activation_mb: float = 512.0
    # ONNX Runtime, which has no torch to probe the model with: images per session call in `foveal
    # predict` / `serve` on an .onnx file and in the export parity check
    onnx_batch: int = 64


@dataclass
class ServeConfig:
    """`foveal serve`: micro-batching, and the limits that keep the server answering."""

    host: str = "127.0.0.1"  # address to listen on (0.0.0.0: every interface)
    port: int = 8000  # TCP port
    max_batch: int = 32  # images per model call; 1 serves one at a time
    max_wait_ms: float = 5.0  # longest the first image of a batch waits for company
    backend: Optional[Literal["torch", "onnx"]] = None  # None: onnx for .onnx files, else torch
    max_upload_mb: float = 20.0  # whole request body, refused from Content-Length or while streaming in
    max_uploads_in_flight_mb: float = 256.0  # request bodies held at once, all requests together; past it 503
    # per image, checked from the header before decoding; below data.max_pixels because uploads are
    # untrusted and decoded side by side (one 40 MP RGB image is 120 MB decoded)
    max_pixels: int = 40_000_000
    max_files: int = 64  # images per request
    max_in_flight: int = 512  # concurrent /predict requests before 503
    threads: Optional[int] = None  # inference threads; None: the backend's default
    topk: int = 5  # classes per image in the answer


@dataclass
class QuantConfig:
    """int8 static quantization of an exported model (ONNX Runtime's quantizer)."""

    format: Literal["qdq", "qoperator"] = "qdq"  # qdq: fused into integer kernels by ORT; qoperator: for `bench infer`
    per_channel: bool = True  # weights quantized per output channel
    reduce_range: bool = False  # 7-bit weights: avoids VPMADDUBSW saturation on pre-VNNI x86, costs a little accuracy
    # how activation ranges are measured; auto: all three tried, the most accurate on held-out images kept (search.py)
    calibration: Literal["auto", "minmax", "entropy", "percentile"] = "auto"
    batch_size: int = 16  # images per calibration run
    float_ends: bool = True  # keep the first and last quantizable layers in float (the usual accuracy fix)
    max_float_nodes: int = 8  # more layers a per-layer sensitivity pass may keep in float; 0: no pass
    # quantization-aware fine-tuning before int8 (export/qat.py); auto: only when PTQ misses the limits
    qat: Literal["off", "auto", "on"] = "off"
    qat_epochs: int = 2  # epochs of it on the run's training split, with the run's optimizer
    qat_lr: float = 1e-4  # its peak learning rate (cosine to 0)


@dataclass
class ParityLimits:
    """Thresholds of the parity check of every exported file against the eager model."""

    min_fp32_agreement: float = 1.0  # top-1 agreement of float32 ONNX with eager (fraction)
    max_fp32_logit_diff: float = 1e-3  # relative to max |logit| (and at least 1e-3 absolute)
    max_int8_drop: float = 1.0  # accuracy points int8 may lose against eager
    min_int8_agreement: float = 0.97  # top-1 agreement of int8 with eager (fraction)


@dataclass
class ExportConfig:
    """`foveal export`: which files, and how each is checked against the eager model."""

    formats: list[Literal["onnx", "int8"]] = field(default_factory=lambda: ["onnx", "int8"])  # float32 ONNX always
    out_dir: Optional[str] = None  # None: RUN/export
    calib_images: int = 256  # training images for int8 calibration (spread over the classes), at most as many held out
    eval_limit: Optional[int] = None  # check on at most this many test images (None: all)
    threads: Optional[int] = None  # ONNX Runtime intra-op threads of the check
    quant: QuantConfig = field(default_factory=QuantConfig)  # how int8 is quantized
    limits: ParityLimits = field(default_factory=ParityLimits)  # what the parity check lets pass


@dataclass
class RobustConfig:
    """`foveal robust`: what to measure and on how many images; the defaults suit 28-64 px data (MNIST, CIFAR)."""

    split: str = "test"  # the split of the run's data (or of --data) to measure on
    limit: int = 2000  # evaluate on N images drawn at random, every class in its share; 0: all
    attack_limit: int = 500  # attack N of those, drawn the same way (each costs steps x a forward-backward)
    corruptions: list[str] = field(default_factory=list)  # subset of the 15 common corruptions; empty: all
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])  # corruption severities, 1..5
    # Gaussian noise stds, pixel units
    noise_stds: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3, 0.5])
    occlusion_sizes: list[float] = field(default_factory=lambda: [0.25, 0.5])  # patch side, fraction of the image side
    occlusion_grid: int = 3  # occluder positions per axis
    occlusion_fill: float = 0.5  # gray level of the occluder, pixel units
    # L-inf attack radii, pixel units
    eps_linf: list[float] = field(default_factory=lambda: [0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 0.1, 0.2, 0.3])
    eps_l2: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0])  # L2 attack radii, pixel units
    pgd_steps: int = 20  # steps of each PGD attack
    skip: list[Literal["corruptions", "noise", "occlusion", "attacks"]] = field(default_factory=list)  # parts left out
    device: str = "auto"  # 'auto', 'cpu', 'cuda', 'cuda:1', 'mps'
    # images per forward (and attack) pass; 'auto': sized by memory (foveal.batching). Results do not
    # depend on it: every random draw is keyed on the image's index.
    batch_size: Union[Literal["auto"], int] = "auto"
    seed: int = 0  # seeds the image subsets, the noise, the corruptions and the attacks' random starts
    # NHWC weights and inputs; None (auto): `foveal robust` turns it on on the CPU at >= 160 px, as `train.channels_last`
    # (`evaluate_robustness` itself reads None as off). The attacks'
    # gradient passes at 224 px run ~1.25x faster with oneDNN's NHWC kernels; accuracies match NCHW's on the
    # benchmark's 16 and 49 images, losses to ~1e-3 relative (BENCHMARKS.md).
    channels_last: Optional[bool] = None


# Each verb beside `foveal train` and the dataclass its flags are built from (`--help` shows the fields' comments).
VERB_CONFIGS: dict[str, type] = {
    "pretrain": SSLConfig, "lr-find": LRFindConfig, "eval": EvalConfig, "predict": PredictConfig, "check": CheckConfig,
    "explain": ExplainConfig, "embed": EmbedConfig, "report": ReportConfig, "serve": ServeConfig,
    "export": ExportConfig, "robust": RobustConfig,
}
