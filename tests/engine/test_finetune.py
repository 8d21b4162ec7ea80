"""Fine-tuning from weights files: torchvision state_dicts, linear probe, gradual unfreezing, layer decay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from foveal.config import RunConfig, apply_overrides
from foveal.training import Trainer
from foveal.training.finetune import Finetuner, layer_decay_groups, load_for_finetune
from foveal.training.trainer import Callback
from foveal.models import create_model

torchvision = pytest.importorskip("torchvision")


def _cfg(tmp_path: Path, **over) -> RunConfig:
    base = {"data.source": "digits", "train.epochs": 1, "train.batch_size": 32, "train.out_dir": str(tmp_path),
            "train.progress": False, "train.device": "cpu", "optim.warmup_epochs": 0.0}
    return apply_overrides(RunConfig(), {**base, **over})


class Snapshot(Callback):
    """Keeps a copy of the model's state right after set-up (after weights were loaded)."""

    def on_train_begin(self, trainer) -> None:
        self.state = {k: v.clone() for k, v in trainer.run.model.state_dict().items()}


def test_torchvision_resnet18_state_dict_loads_and_head_is_replaced(tmp_path: Path) -> None:
    torch.manual_seed(123)
    tv = torchvision.models.resnet18(weights=None, num_classes=1000)
    with torch.no_grad():  # BN statistics unlike a fresh model's, so a silent re-init would show
        for m in tv.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
    tv_sd = tv.state_dict()
    path = tmp_path / "tv_resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in tv_sd.items()}, str(path))
    snap = Snapshot()
    # 16 px uses the small-input 3x3 stem, so torchvision's 7x7 conv1 does not fit: it must be listed
    cfg = _cfg(tmp_path, **{"model.name": "resnet18", "model.pretrained": str(path), "data.img_size": 16,
                            "data.limit": 96, "data.val_fraction": 0.04, "train.epochs": 2, "train.batch_size": 16,
                            "data.test_fraction": 0.04, "train.name": "tv", "train.report": False})
    result = Trainer(cfg, callbacks=(snap,)).fit()
    report = json.loads((result.run_dir / "pretrained.json").read_text())
    assert report["mismatched"] == ["conv1.weight is (64, 3, 7, 7) in the file, (64, 1, 3, 3) in the model"]
    assert sorted(report["head_replaced"]) == ["fc.bias", "fc.weight"]
    assert report["missing"] == [] and report["unexpected"] == []
    loaded = set(report["loaded"])
    assert len(loaded) == len(tv_sd) - 3  # all but conv1 and the 1000-class fc
    for key in loaded:  # loaded as they are, not re-initialized
        assert torch.equal(snap.state[key], tv_sd[key].to(snap.state[key].dtype)), key
    assert not torch.equal(snap.state["conv1.weight"][:, :1, :3, :3], tv_sd["conv1.weight"][:, :1, :3, :3])
    assert result.model.fc.weight.shape == (10, 512)  # the new head, for digits' 10 classes
    assert report["loaded_fraction"] == round(len(loaded) / (len(snap.state) - 2), 4)  # of the backbone, head apart
    # Training starts from these weights and learns: the loss falls (measured 4.8 -> 2.7). Test accuracy stays
    # near chance this early (measured 0.10-0.17 after 24 to 40 steps, the BN statistics of 16-px batches
    # still catching up), so its floor would need ten times the steps; the linear probe below has one.
    first, last = (h["train_loss"] for h in (result.history[0], result.history[-1]))
    assert last < 0.8 * first, (first, last)
    moved = [k for k in loaded if k.endswith("weight") and not torch.equal(result.model.state_dict()[k], snap.state[k])]
    assert len(moved) > 0.9 * sum(k.endswith("weight") for k in loaded)  # full fine-tuning: the loaded weights train


def test_wrong_architecture_is_refused_with_every_problem_listed(tmp_path: Path) -> None:
    path = tmp_path / "lenet.safetensors"
    save_file(create_model("lenet5_modern", num_classes=10, in_chans=1, img_size=32).state_dict(), str(path))
    model = create_model("resnet20", num_classes=10, in_chans=1, img_size=32)
    with pytest.raises(ValueError, match="another architecture") as e:
        load_for_finetune(model, str(path), log=lambda m: None)
    msg = str(e.value)
    assert "missing: conv1.weight" in msg and "unexpected: features.0.weight" in msg and "more" in msg


def _lenet_weights(tmp_path: Path, num_classes: int = 5) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(7)
    m = create_model("lenet5_modern", num_classes=num_classes, in_chans=1, img_size=20)
    m.train()
    with torch.no_grad():  # some batch-norm statistics, so freezing them is observable
        m(torch.rand(64, 1, 20, 20))
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    save_file(sd, str(tmp_path / "lenet.safetensors"))
    return tmp_path / "lenet.safetensors", sd


def test_loaded_fraction_counts_the_backbone_only(tmp_path: Path) -> None:
    """A file of the same architecture and classes loads every tensor, its head included: the fraction of
    the backbone loaded is 1, not 1.17 (lenet5_modern's 14 tensors over its 12 backbone ones)."""
    path, sd = _lenet_weights(tmp_path, num_classes=10)
    model = create_model("lenet5_modern", num_classes=10, in_chans=1, img_size=20)
    report = load_for_finetune(model, str(path), tmp_path, log=lambda m: None)
    assert sorted(report.loaded) == sorted(sd) and report.head_replaced == []
    assert json.loads((tmp_path / "pretrained.json").read_text())["loaded_fraction"] == 1.0
    model = create_model("lenet5_modern", num_classes=3, in_chans=1, img_size=20)  # another head: replaced
    load_for_finetune(model, str(path), tmp_path, log=lambda m: None)
    assert json.loads((tmp_path / "pretrained.json").read_text())["loaded_fraction"] == 1.0


def test_linear_probe_freezes_backbone_and_bn_statistics(tmp_path: Path) -> None:
    path, sd = _lenet_weights(tmp_path)
    cfg = _cfg(tmp_path, **{"model.name": "lenet5_modern", "model.pretrained": str(path), "data.img_size": 20,
                            "model.finetune": "linear", "data.augment": "crop", "train.epochs": 4, "optim.lr": 1e-2, "train.name": "probe"})
    result = Trainer(cfg).fit()
    after = result.model.state_dict()
    for key, before in sd.items():
        if not key.startswith("head."):
            assert torch.equal(after[key], before), f"{key} changed under a linear probe"
    assert after["head.weight"].shape == (10, 84)
    assert result.test_metrics["accuracy"] > 0.5  # the probe learned on frozen random features (chance 0.1)


def test_gradual_unfreezing_goes_top_down() -> None:
    from foveal.config import ModelConfig

    model = create_model("resnet20", num_classes=10, in_chans=1, img_size=16)
    ft = Finetuner(model, ModelConfig(finetune="gradual", unfreeze_every=2))
    ids = model.layer_ids()
    top = max(ids.values())
    for epoch, low in [(0, top), (1, top), (2, top - 1), (4, top - 2), (10 * top, 0)]:
        model.train()
        ft.start_epoch(model, epoch)
        assert ft.lowest_trainable_depth(epoch) == low
        for name, p in model.named_parameters():
            assert p.requires_grad == (ids[name] >= low), (epoch, name)
    model.train()
    ft.start_epoch(model, 0)
    assert not model.bn1.training and model.fc.training  # frozen BN keeps its statistics


def test_layer_decay_lowers_lr_with_depth() -> None:
    from foveal.config import OptimConfig

    model = create_model("resnet20", num_classes=10, in_chans=1, img_size=16)
    cfg = OptimConfig(lr=0.1, layer_decay=0.5)
    groups = layer_decay_groups(model, cfg)
    by_depth = {g["layer_id"]: g["lr"] for g in groups}
    depths = sorted(by_depth)
    assert len(depths) >= 5
    lrs = [by_depth[d] for d in depths]
    assert all(a < b for a, b in zip(lrs, lrs[1:]))  # strictly increasing toward the head
    assert lrs[-1] == pytest.approx(0.1) and lrs[0] == pytest.approx(0.1 * 0.5 ** depths[-1])
    head_ids = {g["layer_id"] for g in groups if any(p is model.fc.weight for p in g["params"])}
    assert head_ids == {depths[-1]}
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert all(g["weight_decay"] == 0.0 for g in groups for p in g["params"] if p.ndim <= 1)


def test_layer_decay_reaches_the_trainer_optimizer(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, **{"model.name": "lenet5_modern", "data.img_size": 20, "optim.layer_decay": 0.7,
                            "train.name": "ld"})
    t = Trainer(cfg)
    t.setup()
    lrs = sorted({round(g["base_lr"], 12) for g in t.run.optimizer.param_groups})
    assert len(lrs) > 3 and max(lrs) == pytest.approx(cfg.optim.lr)


def test_vit_layer_ids_put_embeddings_first_and_head_last() -> None:
    model = create_model("vit_tiny", num_classes=10, in_chans=1, img_size=16)
    ids = model.layer_ids()
    assert ids["cls_token"] == ids["pos_embed"] == ids["patch_embed.proj.weight"] == 0
    assert ids["blocks.0.attn.qkv.weight"] == 1 and ids["blocks.11.mlp.fc2.weight"] == 12
    assert ids["norm.weight"] == 13 and ids["head.weight"] == 14
