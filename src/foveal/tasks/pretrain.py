"""Self-supervised pretraining on unlabeled images: SimCLR (Chen et al. 2020) for any model,
masked autoencoders (MAE, He et al. 2022) for models with a ``forward_masked`` hook (ViTs).

Each step takes a batch of raw images, draws two independent augmentations of it with the
batched on-device ops of `foveal.data.augment`, embeds both views with the backbone
(``forward_head(forward_features(x), pre_logits=True)`` of the model contract) and a small
projection MLP, and minimizes the NT-Xent loss: each view must pick its partner out of the
2B - 1 other views of the batch. MAE encodes a random 25% of the patches of one view and a
small transformer decoder reconstructs the (per-patch normalized) pixels of the rest. Labels are never used for training; when the data has
them, a weighted k-NN classifier (Wu et al. 2018) on the frozen embeddings is evaluated on
the validation split after every epoch, to watch representation quality.

The result is a run folder whose ``best.safetensors`` / ``last.safetensors`` hold the
backbone only (no classifier, no projector), which ``foveal train --pretrained RUN`` loads.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..card import ModelCard
from ..config import RunConfig, SSLConfig, TrainConfig, to_dict  # SSLConfig: re-exported
from ..data import Compose, DataBundle
from ..data.decode import is_image_name
from ..data.loader import Normalizer, epoch_seed
from ..data.preprocess import normalize_u8
from ..data.sources import bundle_from_items
from ..data.splits import concat
from ..io import write_json
from ..models import count_params, create_model
from ..training import runs
from ..training.checkpoint import model_card, save_weights
from ..runtime.device import resolve_device, seed_everything, warn_slow_cpu_bf16
from ..training.optim import Schedule, Shape, build_optimizer
from ..training.prepare import init_from_data, prepare_data
from ..training.loop import Progress, run_steps
from ..training.step import StepHook, StepOptions, TrainStep, compile_applied

UNLABELED = "unlabeled"  # the single pseudo-class of a folder of images without class subfolders


# ---- data -------------------------------------------------------------------------------------


def _flat_folder_bundle(root: Path, cfg: RunConfig, img_size: int) -> Optional[DataBundle]:
    """A folder of images without class subfolders -> one pseudo-class bundle, else None."""
    if not root.is_dir() or any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
        return None
    files = sorted(f for f in root.iterdir() if f.is_file() and is_image_name(f))
    if not files:
        raise ValueError(f"image folder '{root}' holds no image files to pretrain on")
    items = [(f, UNLABELED, "all") for f in files]
    return bundle_from_items(root.name, items, [UNLABELED], cfg.data, img_size, [])


def load_ssl_data(cfg: RunConfig, log: Callable[[str], None] = print) -> tuple[DataBundle, RunConfig, bool]:
    """(bundle, resolved config, labeled): a labeled dataset (labels ignored for training) or a
    flat folder of unlabeled images. The test split is left out of pretraining."""
    from ..training.prepare import default_img_size

    img_size = cfg.data.img_size or default_img_size(cfg)
    flat = _flat_folder_bundle(Path(cfg.data.source), cfg, img_size) if cfg.data.source else None
    bundle, cfg = prepare_data(cfg, flat, log=log)
    for name, s in bundle.splits.items():
        if not s.images.in_memory:
            raise ValueError(f"pretraining keeps images in memory; the '{name}' split of '{cfg.data.source}' is "
                             "streamed from files: set --data.in_memory true (or --img-size smaller)")
    return bundle, cfg, flat is None and len(bundle.classes) > 1


# ---- model and loss ---------------------------------------------------------------------------


class SimCLR(nn.Module):
    """Backbone (any model of the zoo, built with num_classes=0) + projection MLP."""

    def __init__(self, backbone: nn.Module, hidden: int, out: int, temperature: float = SSLConfig.temperature):
        super().__init__()
        self.backbone, self.temperature = backbone, temperature
        nf = backbone.num_features
        self.projector = nn.Sequential(nn.Linear(nf, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                       nn.Linear(hidden, out))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)  # (B, num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.embed(x))  # (B, proj_dim)

    def step_loss(self, make_view: Callable[[], torch.Tensor], g: torch.Generator,
                  net: Optional[nn.Module] = None) -> torch.Tensor:
        """NT-Xent of two fresh views; the forward runs through `net` (this module, compiled or wrapped)."""
        net = self if net is None else net
        v1, v2 = make_view(), make_view()
        z = net(torch.cat([v1, v2]))  # both views in one pass: BN sees the whole 2B batch
        return nt_xent(z[:len(v1)], z[len(v1):], self.temperature)


class MAE(nn.Module):
    """Masked autoencoder around a backbone with ``forward_masked(x, keep)`` (the vit family).

    The decoder (torch's pre-norm transformer layers) exists only for pretraining; the saved
    weights are the backbone's.
    """

    def __init__(self, backbone: nn.Module, mask_ratio: float = SSLConfig.mask_ratio, dim: int = SSLConfig.decoder_dim,
                 depth: int = SSLConfig.decoder_depth, heads: int = 4):
        super().__init__()
        if not hasattr(backbone, "forward_masked"):
            raise ValueError(f"ssl method 'mae' needs a model with forward_masked (the vit family); "
                             f"'{getattr(backbone, 'model_name', type(backbone).__name__)}' has none: use 'simclr'")
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        self.backbone, self.mask_ratio = backbone, mask_ratio
        self.p, (gh, gw) = backbone.patch_size, backbone.grid
        self.num_patches = gh * gw
        self.enc_to_dec = nn.Linear(backbone.num_features, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dec_pos = nn.Parameter(torch.randn(1, 1 + self.num_patches, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.decoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.dec_norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, self.p * self.p * backbone.in_chans)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        p = self.p
        x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1)  # (B, gh, gw, p, p, C)
        return x.reshape(B, (H // p) * (W // p), p * p * C)  # (B, N, p*p*C)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Pixels (B, N, p*p*C) predicted for every patch of x (B, C, H, W) from the patches `keep` (B, K)."""
        B, N = x.shape[0], self.num_patches
        tokens = self.enc_to_dec(self.backbone.forward_masked(x, keep))  # (B, 1 + K, dim)
        dim = tokens.shape[2]
        full = self.mask_token.to(tokens.dtype).expand(B, N, dim).clone()
        full.scatter_(1, keep[:, :, None].expand(-1, -1, dim), tokens[:, 1:])  # visible tokens back in place
        return self.pred(self.dec_norm(self.decoder(torch.cat([tokens[:, :1], full], 1) + self.dec_pos)))[:, 1:]

    def step_loss(self, make_view: Callable[[], torch.Tensor], g: torch.Generator,
                  net: Optional[nn.Module] = None) -> torch.Tensor:
        """Reconstruction loss of a random mask of one view; the forward runs through `net` (as SimCLR's)."""
        x = make_view()
        B, N = x.shape[0], self.num_patches
        keep = torch.rand(B, N, generator=g, device=x.device).argsort(1)[:, :max(1, round(N * (1 - self.mask_ratio)))]
        out = (self if net is None else net)(x, keep)  # (B, N, p*p*C)
        target = self.patchify(x)
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        hidden = torch.ones(B, N, device=x.device).scatter_(1, keep, 0.0)  # 1 on masked patches
        per_patch = ((out.float() - target) ** 2).mean(-1)  # (B, N)
        return (per_patch * hidden).sum() / hidden.sum()  # loss on masked patches only, as in the paper


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent: cross-entropy of each view against its partner among the other 2B - 1 views.

    Written out because torch has no contrastive loss; it is a masked cross-entropy.
    """
    # In fp32 even under bf16 autocast (which would run the matmul in bf16): the similarities
    # differ by less than bf16's 3 significant digits resolve.
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z = F.normalize(torch.cat([z1, z2]).float(), dim=1)  # (2B, D)
        sim = z @ z.T / temperature  # (2B, 2B) cosine similarities
        n = z1.shape[0]
        sim.fill_diagonal_(float("-inf"))  # a view is not its own positive
        target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
        return F.cross_entropy(sim, target)


# ---- k-NN monitor -----------------------------------------------------------------------------


@torch.no_grad()
def embed_images(model: nn.Module, images: torch.Tensor, mean: list[float], std: list[float],
                 device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """L2-normalized (N, num_features) embeddings of uint8 images through the model contract."""
    was = model.training
    model.eval()
    m, s = (torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (mean, std))  # once, not per batch
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize_u8(images[i:i + batch_size].to(device), m, s)
        out.append(F.normalize(model.forward_head(model.forward_features(x), pre_logits=True).float(), dim=1))
    model.train(was)
    return torch.cat(out)


def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, query: torch.Tensor, num_classes: int,
                k: int = 200, t: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """Weighted k-NN (Wu et al. 2018): each of the k most cosine-similar bank items votes for its
    class with weight exp(sim / t). Inputs are L2-normalized; returns (Q,) predicted classes."""
    k = min(k, len(bank))
    preds = []
    for i in range(0, len(query), chunk):
        sim, idx = (query[i:i + chunk] @ bank.T).topk(k, dim=1)  # (q, k)
        votes = torch.zeros(len(sim), num_classes, device=query.device)
        votes.scatter_add_(1, bank_labels[idx], (sim / t).exp())
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_accuracy(backbone: nn.Module, bundle: DataBundle, cfg: RunConfig, ssl: SSLConfig,
                 device: torch.device) -> float:
    """k-NN accuracy on the val split with (a subset of) the train split as the memory bank."""
    train, val = bundle.splits["train"], bundle.splits["val"]
    keep = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:ssl.knn_bank]
    d = cfg.data
    bank = embed_images(backbone, train.images.load(keep), d.mean, d.std, device)
    query = embed_images(backbone, val.images.load(), d.mean, d.std, device)
    pred = knn_predict(bank, train.labels[keep].to(device), query, len(bundle.classes), ssl.knn_k, ssl.knn_t)
    return (pred == val.labels.to(device)).float().mean().item()  # one sync per evaluation


# ---- the loop ---------------------------------------------------------------------------------


@dataclass
class PretrainResult:
    run_dir: Path
    backbone: nn.Module
    history: list[dict[str, Any]]


# train.* settings the pretrainer has no use for, with why: set, they stop it instead of being ignored
UNSUPPORTED: dict[str, str] = {
    "resume": "pretraining keeps no resume checkpoint; start a new run",
    "devices": "foveal pretrain runs in one process (its loss and k-NN are not distributed); fine-tune with "
               "`foveal train --pretrained RUN`, which does run on several processes",
    "tta": "test-time augmentation is for a classifier's test evaluation; set it when fine-tuning",
    "early_stop": "pretraining runs its epochs; pick the epoch by the saved best (k-NN) weights",
    "adv": "adversarial training needs labels; set it when fine-tuning",
    "corrupt_aug": "corruption training is for a classifier; use --views for the pretraining augmentations",
}


def check_supported(train: TrainConfig) -> None:
    """Raise ValueError naming every train setting that pretraining would otherwise ignore."""
    from ..runtime.distributed import env_info

    default = TrainConfig()
    bad = [(f"train.{k}={getattr(train, k)!r}", why) for k, why in UNSUPPORTED.items()
           if getattr(train, k) != getattr(default, k)]
    world = env_info().world
    if world > 1 and train.devices == default.devices:  # launched by torchrun directly
        bad.append((f"torchrun with {world} processes", UNSUPPORTED["devices"]))
    if bad:
        raise ValueError("foveal pretrain cannot honour " + "; ".join(f"{what}: {why}" for what, why in bad))


def build_ssl_model(backbone: nn.Module, ssl: SSLConfig) -> nn.Module:
    if ssl.method == "simclr":
        return SimCLR(backbone, ssl.proj_hidden, ssl.proj_dim, ssl.temperature)
    if ssl.method == "mae":
        return MAE(backbone, ssl.mask_ratio, ssl.decoder_dim, ssl.decoder_depth)
    raise ValueError(f"ssl method {ssl.method!r} is not available; use 'simclr' or 'mae'")


class Pretrainer:
    """SimCLR / MAE on the train + val images of a data source (labels unused), k-NN on val each epoch."""

    def __init__(self, cfg: RunConfig, ssl: SSLConfig = SSLConfig(), log: Callable[[str], None] = print):
        if ssl.method not in ("simclr", "mae"):
            raise ValueError(f"ssl method {ssl.method!r} is not available; use 'simclr' or 'mae'")
        self.cfg, self.ssl, self.log = cfg, ssl, log

    def setup(self) -> None:
        check_supported(self.cfg.train)
        self.device = resolve_device(self.cfg.train.device)
        warn_slow_cpu_bf16(self.device, self.cfg.train.cpu_bf16, self.log)
        seed_everything(self.cfg.train.seed, self.cfg.train.deterministic)
        self.data, self.cfg, self.labeled = load_ssl_data(self.cfg, self.log)
        cfg, d = self.cfg, self.cfg.data
        if cfg.train.name is None:
            cfg = self.cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, name=f"{runs.default_name(cfg)}-{self.ssl.method}"))
        self.run_dir = runs.new_run_dir(cfg)
        runs.write_config(self.run_dir, cfg)
        write_json(self.run_dir / "ssl.json", dataclasses.asdict(self.ssl))
        splits = self.data.splits
        pool = concat(splits["train"], splits["val"]).images
        self.images = pool.load(device=self.device)  # (N, C, H, W) uint8
        torch.manual_seed(cfg.train.seed)
        backbone = create_model(cfg.model.name, num_classes=0, in_chans=d.in_chans, img_size=d.img_size,
                                drop_rate=0.0, drop_path_rate=cfg.model.drop_path_rate, pretrained=None)
        init_from_data(backbone, pool, d.mean, d.std)  # e.g. AirNet's whitening filters
        self.model = build_ssl_model(backbone, self.ssl).to(self.device)
        self.optimizer = build_optimizer(self.model, cfg.optim)
        self.steps_per_epoch = len(self.images) // cfg.train.batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(f"{len(self.images)} images are fewer than one batch of {cfg.train.batch_size}; "
                             "lower --batch-size")
        total = cfg.train.epochs * self.steps_per_epoch
        self.schedule = Schedule(self.optimizer, Shape.from_config(cfg.optim, total, self.steps_per_epoch))
        # the loaders' augment-then-normalize step; each call draws a new view of the uint8 batch
        self.views = Normalizer(d.mean, d.std, Compose(self.ssl.views_augment, d, max(1, len(self.data.classes))),
                                self.device)
        self.generator = torch.Generator(device=self.device)
        # channels-last weights (the convs then run, and output, NHWC), compile, EMA, clipping: as in the Trainer
        # (check_compile off: the loss draws its views from self.generator, which a second forward would advance)
        self.train_step = TrainStep(self.model, self.optimizer, self._loss, self.device, StepOptions.from_config(cfg),
                                    [StepHook(before=self.schedule.set_step)], check_compile=False)
        self.history, self.best = [], None

    def _loss(self, net: nn.Module, idx: torch.Tensor, y: None) -> tuple[torch.Tensor, None]:
        """The step's compute. It gets the batch's positions (B,), not images: the views are augmented from
        the uint8 images inside the loss, so the step's memory-format switch has nothing to convert."""
        x = self.images[idx]  # (B, C, H, W) uint8
        unused = torch.zeros(len(x), dtype=torch.long, device=self.device)  # the ops carry labels
        return self.model.step_loss(lambda: self.views(x, unused, self.generator)[0], self.generator, net), None

    @property
    def eval_model(self) -> nn.Module:
        """What k-NN sees and the checkpoints hold: the EMA of the weights with train.ema, else the weights."""
        return self.train_step.ema.module if self.train_step.ema is not None else self.model

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, bs, step = self.cfg, self.cfg.train.batch_size, self.train_step
        (step.net if step.net is not None else step.wrap()).train()
        self.generator.manual_seed(epoch_seed(cfg.train.seed, epoch))
        order = torch.randperm(len(self.images), generator=self.generator, device=self.device)
        batches = ((order[i * bs:(i + 1) * bs],) for i in range(self.steps_per_epoch))  # image indices
        bar = Progress(f"pretrain {epoch + 1}/{cfg.train.epochs}", self.steps_per_epoch * bs,
                       cfg.train.log_every) if cfg.train.progress else None
        done = run_steps(step, batches, progress=bar)
        seconds = done.seconds
        return {"epoch": epoch + 1, "ssl_loss": done.mean_loss(), "seconds": seconds,
                "images_per_s": done.images / max(seconds, 1e-9),
                "lr": self.optimizer.param_groups[0]["lr"], "compiled": compile_applied(step.net)}

    def card(self, epoch: int) -> ModelCard:
        """The card of the backbone's weights after `epoch`: no classes (its outputs are features)."""
        return model_card(self.eval_model.backbone, [], self.cfg.data, to_dict(self.cfg), epoch=epoch,
                          extra={"ssl": dataclasses.asdict(self.ssl), "classes_seen": self.data.classes})

    def end_epoch(self, row: dict[str, Any]) -> None:
        """Save last (every epoch) and best (highest k-NN accuracy, else lowest loss) backbone weights."""
        key, sign = ("knn_acc", 1) if "knn_acc" in row else ("ssl_loss", -1)
        improved = self.best is None or sign * row[key] > sign * self.best
        backbone = self.eval_model.backbone
        if improved:
            self.best = row[key]
            save_weights(self.run_dir / "best.safetensors", backbone, self.card(row["epoch"]))
        save_weights(self.run_dir / "last.safetensors", backbone, self.card(row["epoch"]))
        self.history.append(row)
        runs.write_history(self.run_dir, self.history)

    def fit(self) -> PretrainResult:
        self.setup()
        cfg = self.cfg
        self.log(f"pretrain '{self.run_dir}': {self.ssl.method} on {cfg.model.name} "
                 f"({count_params(self.model.backbone):,} backbone parameters), {len(self.images)} images "
                 f"{cfg.data.img_size}px x{cfg.data.in_chans}, {self.device}")
        for epoch in range(cfg.train.epochs):
            row = self.train_epoch(epoch)
            if not math.isfinite(row["ssl_loss"]):
                raise FloatingPointError(f"pretraining diverged at epoch {epoch + 1}; lower --lr")
            if self.labeled:
                row["knn_acc"] = knn_accuracy(self.eval_model.backbone, self.data, cfg, self.ssl, self.device)
            self.end_epoch(row)
            knn = f"  knn_acc {row['knn_acc']:.4f}" if "knn_acc" in row else ""
            self.log(f"epoch {row['epoch']:>3}/{cfg.train.epochs}  ssl_loss {row['ssl_loss']:.4f}{knn}  "
                     f"lr {row['lr']:.2e}  {row['images_per_s']:.0f} img/s")
        self.log(f"backbone weights: {self.run_dir / 'best.safetensors'} (use with --pretrained {self.run_dir})")
        return PretrainResult(self.run_dir, self.eval_model.backbone, self.history)


def pretrain(cfg: RunConfig, ssl: SSLConfig = SSLConfig(), log: Callable[[str], None] = print) -> PretrainResult:
    """Run self-supervised pretraining; see the module docstring."""
    return Pretrainer(cfg, ssl, log).fit()
