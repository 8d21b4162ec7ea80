"""Class imbalance: focal loss against hand computations, the balanced sampler's statistics and
sharding, and a small end-to-end check that sampler and focal loss help the rare classes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from foveal.config import OptimConfig, RunConfig, apply_overrides
from foveal.data.loader import BatchPlan, DeviceLoader, balanced_indices
from foveal.data.sources import Split
from foveal.training.losses import FocalLoss, build_loss, inverse_frequency_weights
from foveal.training.step import StepHook
from tests.conftest import digits_arrays, write_digit_folder


def test_focal_gamma_zero_is_cross_entropy() -> None:
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(32, 5, generator=g), torch.randint(0, 5, (32,), generator=g)
    w = torch.rand(5, generator=g) + 0.5
    torch.testing.assert_close(FocalLoss(0.0)(logits, y), F.cross_entropy(logits, y))
    torch.testing.assert_close(FocalLoss(0.0, label_smoothing=0.1)(logits, y),
                               F.cross_entropy(logits, y, label_smoothing=0.1))
    soft = torch.softmax(torch.randn(32, 5, generator=g), 1)
    torch.testing.assert_close(FocalLoss(0.0)(logits, soft), F.cross_entropy(logits, soft))
    # per-class alphas: the weighted sum of -log p_t, averaged over the batch (not re-normalized)
    expect = (F.cross_entropy(logits, y, reduction="none") * w[y]).mean()
    torch.testing.assert_close(FocalLoss(0.0, w)(logits, y), expect)


def test_focal_matches_a_hand_computation() -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    y = torch.tensor([0, 0])
    p0 = math.exp(2) / (math.exp(2) + 2)  # well classified
    p1 = 1 / (2 + math.exp(3))  # badly classified
    expect = (-(1 - p0) ** 2 * math.log(p0) - (1 - p1) ** 2 * math.log(p1)) / 2
    assert FocalLoss(2.0)(logits, y).item() == pytest.approx(expect, rel=1e-5)
    # the easy example is down-weighted far more than the hard one
    per = [FocalLoss(2.0)(logits[i:i + 1], y[i:i + 1]).item() / F.cross_entropy(logits[i:i + 1], y[i:i + 1]).item()
           for i in range(2)]
    assert per[0] < 0.1 < 0.9 < per[1]


def test_build_loss_and_inverse_frequency_weights() -> None:
    labels = torch.tensor([0] * 90 + [1] * 10)
    w = inverse_frequency_weights(labels, 2)
    torch.testing.assert_close(w, torch.tensor([100 / 180, 100 / 20]))
    assert (w[labels].mean() - 1).abs() < 1e-6, "mean weight over samples is 1"
    assert isinstance(build_loss(OptimConfig(loss="focal", focal_gamma=1.0), w), FocalLoss)
    ce = build_loss(OptimConfig(), w)
    torch.testing.assert_close(ce.weight, w)


def _imbalanced(n_major: int = 900, n_minor: int = 30) -> Split:
    labels = torch.tensor([0] * n_major + [1] * n_minor + [2] * (n_minor * 2))
    images = torch.arange(len(labels), dtype=torch.int64).remainder(256).to(torch.uint8).view(-1, 1, 1, 1)
    return Split(images.expand(-1, 1, 2, 2).contiguous(), labels)


def test_balanced_indices_draw_classes_equally_and_are_seeded() -> None:
    split = _imbalanced()
    idx = balanced_indices(split.labels, torch.Generator().manual_seed(0))
    assert len(idx) == len(split)
    freq = torch.bincount(split.labels[idx], minlength=3).float() / len(idx)
    assert (freq - 1 / 3).abs().max() < 0.05, freq
    again = balanced_indices(split.labels, torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)
    assert len(idx.unique()) < len(idx), "drawn with replacement: rare images repeat"


def test_device_loader_sampler_epochs_and_shards() -> None:
    split = _imbalanced()
    kw = dict(device=torch.device("cpu"), mean=[0.0], std=[1.0])
    plan = dict(shuffle=True, seed=5, balanced=True)
    whole = DeviceLoader(split, BatchPlan(30, **plan), **kw)
    ys = torch.cat([y for _, y in whole])
    freq = torch.bincount(ys, minlength=3).float() / len(ys)
    assert len(ys) == len(split) and (freq - 1 / 3).abs().max() < 0.05
    whole.set_epoch(1)
    assert not torch.equal(ys, torch.cat([y for _, y in whole])), "each epoch draws anew"
    whole.set_epoch(0)
    # two ranks take alternate draws of the same sequence: together they are the whole epoch
    ranks = [DeviceLoader(split, BatchPlan(30, **plan, rank=r, world=2), **kw) for r in range(2)]
    per_rank = [torch.cat([x.flatten(1)[:, 0] for x, _ in ld]) for ld in ranks]
    joint = torch.stack(per_rank, 1).flatten()
    ref = torch.cat([x.flatten(1)[:, 0] for x, _ in whole])
    assert torch.equal(joint, ref[:len(joint)])


def _digits_rare(frac: float, rare: tuple[int, ...]) -> tuple[Split, torch.Tensor, torch.Tensor]:
    """sklearn digits: a stratified-ish 1100-image train set with `rare` classes cut to `frac`; the rest is test."""
    x, y = digits_arrays()
    X, Y = torch.from_numpy(x)[:, None], torch.from_numpy(y).long()
    perm = torch.randperm(len(Y), generator=torch.Generator().manual_seed(0))
    tr, te = perm[:1100], perm[1100:]
    keep = [tr[Y[tr] == c][:max(1, round(frac * (Y[tr] == c).sum().item()))] if c in rare else tr[Y[tr] == c]
            for c in range(10)]
    tr = torch.cat(keep)
    return Split(X[tr], Y[tr]), X[te], Y[te]


def _rare_f1(mode: str, seed: int, data: tuple, rare: tuple[int, ...]) -> float:
    """Mean F1 of the rare classes of a small MLP trained 15 epochs with `mode` (ce, sampler, focal)."""
    from sklearn.metrics import f1_score

    split, x_te, y_te = data
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    loss = build_loss(OptimConfig(loss="focal" if mode == "focal" else "ce"))
    plan = BatchPlan(32, shuffle=True, drop_last=True, seed=seed, balanced=mode == "sampler")
    loader = DeviceLoader(split, plan, torch.device("cpu"), [0.3], [0.4])
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for epoch in range(15):
        loader.set_epoch(epoch)
        for x, y in loader:
            opt.zero_grad()
            loss(model(x), y).backward()
            opt.step()
    with torch.no_grad():
        pred = model((x_te.float() / 255 - 0.3) / 0.4).argmax(1)
    return float(f1_score(y_te, pred, average=None, labels=list(range(10)))[list(rare)].mean())


def test_sampler_and_focal_raise_rare_class_f1_on_digits() -> None:
    """Three digit classes cut to 5% of their images (~6 each): averaged over 2 seeds, the balanced
    sampler and focal loss both raise the rare classes' F1 over plain cross-entropy (measured
    margins about +0.15 and +0.07; the floors leave room for seed noise)."""
    torch.set_num_threads(1)
    rare = (1, 3, 8)
    data = _digits_rare(0.05, rare)
    assert torch.bincount(data[0].labels)[list(rare)].max() <= 7
    f1 = {m: sum(_rare_f1(m, s, data, rare) for s in (0, 1)) / 2 for m in ("ce", "sampler", "focal")}
    assert f1["sampler"] > f1["ce"] + 0.05, f1
    assert f1["focal"] > f1["ce"] + 0.01, f1


def _imbalanced_digit_folder(root) -> str:
    """Digits 0, 1, 2 as 16-px PNGs, 150 / 25 / 25 of them: class 0 is three quarters of the data."""
    for c, n in ((0, 150), (1, 25), (2, 25)):
        write_digit_folder(root, per_class=n, classes=(c,), size=16)
    return str(root)


def spy_on_step(trainer) -> dict[str, list]:
    """Record what the trainer's step receives (after `trainer.setup()`): the batches before mixup/cutmix
    and the perturber ("pre", as the loader gave them), after every batch hook ("post", what the forward
    sees), and the targets the loss is called with ("loss")."""
    seen: dict[str, list] = {"pre": [], "post": [], "loss": []}

    def record(key):
        def hook(x, y, step):
            seen[key].append((x.detach().clone(), y.clone()))
            return x, y
        return hook

    step = trainer.run.step
    step.hooks.insert(1, StepHook(batch=record("pre")))  # after the lr schedule, before the others
    step.hooks.append(StepHook(batch=record("post")))
    compute = step.compute  # logits, then the loss of (logits, y)

    def spy(net, x, y, *extra):
        seen["loss"].append(y.clone())
        return compute(net, x, y, *extra)

    step.compute = spy
    return seen


def _mix_kind(x0: torch.Tensor, y0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> str:
    """'mixup' or 'cutmix': which of the two made (x1, t) from the batch (x0, y0); fails if neither did."""
    hard = F.one_hot(y0, t.shape[1]).to(t.dtype)
    pair = torch.nonzero(y0 != y0.flip(0))[0, 0]  # a row whose partner has another label
    lam = t[pair, y0[pair]].item()
    torch.testing.assert_close(t, lam * hard + (1 - lam) * hard.flip(0))  # soft targets, weighted by lam
    assert 0.0 < lam < 1.0, lam
    if torch.allclose(x1, lam * x0 + (1 - lam) * x0.flip(0), atol=1e-5):
        return "mixup"
    box = (x1 != x0).any(0).any(0)  # (H, W) pixels replaced, in one box shared by the batch
    assert box.any() and torch.equal(x1, torch.where(box, x0.flip(0), x0)), "neither mixup nor cutmix"
    assert box.sum().item() <= round((1 - lam) * box.numel()), "cutmix box larger than its target weight"
    return "cutmix"


def test_trainer_steps_see_balanced_mixed_randaugmented_batches(tmp_path) -> None:
    """data.balance=sampler, mixup + cutmix and RandAugment through the Trainer: the step draws the classes
    equally from data that is 3/4 one class, its forward sees mixup- or cutmix-mixed images (each batch one
    of the two), the loss gets their soft targets, and the images it gets are RandAugment's, not the files'."""
    from foveal.training import Trainer

    cfg = apply_overrides(RunConfig(), {
        "data.source": _imbalanced_digit_folder(tmp_path / "d"), "data.img_size": 20, "model.name": "lenet5_modern",
        "train.batch_size": 16, "train.out_dir": str(tmp_path / "runs"), "train.progress": False,
        "train.device": "cpu", "data.balance": "sampler", "data.mixup": 0.4, "data.cutmix": 1.0,
        "data.augment": ["randaugment"]})
    trainer = Trainer(cfg, log=lambda m: None)
    trainer.setup()
    seen = spy_on_step(trainer)
    for epoch in range(3):
        trainer.train_epoch(epoch)
    train = trainer.run.data.splits["train"]
    assert (train.labels == 0).float().mean() > 0.7  # the data: mostly class 0
    drawn = torch.cat([y for _, y in seen["pre"]])
    freq = torch.bincount(drawn, minlength=3).float() / len(drawn)
    assert len(drawn) == 3 * len(trainer.run.loaders.train) * 16 and (freq - 1 / 3).abs().max() < 0.1, freq  # the sampler's draws: balanced
    kinds = [_mix_kind(x0, y0, x1, t) for (x0, y0), (x1, t) in zip(seen["pre"], seen["post"])]
    assert {"mixup", "cutmix"} == set(kinds), kinds  # each batch one of the two, both used
    assert len(seen["loss"]) == len(seen["post"])
    assert all(torch.equal(t, t_loss) for (_, t), t_loss in zip(seen["post"], seen["loss"]))  # soft targets reach the loss
    # RandAugment: the images the step gets are (almost) never one of the training images as decoded
    d = trainer.run.cfg.data  # mean and std measured on the training images
    files = ((train.images.load().float() / 255 - d.mean[0]) / d.std[0]).flatten(1)  # (N, H*W) normalized
    x = torch.cat([x0 for x0, _ in seen["pre"]]).flatten(1)
    dist = torch.cdist(x, files, compute_mode="donot_use_mm_for_euclid_dist").min(1).values  # exact for equal rows
    as_decoded = (dist < 1e-3).float().mean().item()
    assert as_decoded < 0.2, f"{as_decoded:.0%} of the step's images are the files' pixels: RandAugment did not run"
