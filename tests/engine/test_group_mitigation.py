"""Mitigation (issue 21): group-balanced draws shared by both loaders, and the Group DRO loss."""

from __future__ import annotations

import json

import pytest
import torch

from foveal.config import OptimConfig
from foveal.data.bundle import Split
from foveal.data.loader import BatchPlan, DeviceLoader
from foveal.training.losses import GroupDROLoss, build_loss
from tests.engine.test_groups_run import write_group_manifest


def test_group_balanced_draws_equalize_groups():
    N = 1000
    groups = torch.zeros(N, dtype=torch.long)
    groups[:50] = 1  # a 5% minority group
    split = Split(torch.zeros(N, 1, 4, 4, dtype=torch.uint8), torch.randint(0, 2, (N,)))
    ld = DeviceLoader(split, BatchPlan(100, shuffle=True, balanced="groups"), torch.device("cpu"), [0.0], [1.0],
                      groups=groups)
    seen = torch.cat([g for _, _, g in ld])
    assert len(seen) == N and abs(seen.float().mean().item() - 0.5) < 0.06  # about half from the 5% group
    plain = DeviceLoader(split, BatchPlan(100, shuffle=True), torch.device("cpu"), [0.0], [1.0], groups=groups)
    assert torch.equal(torch.sort(torch.cat([g for _, _, g in plain]))[0], torch.sort(groups)[0])  # a permutation


def test_group_dro_matches_sagawa_update():
    torch.manual_seed(0)
    loss_fn = GroupDROLoss(3, step=0.5)
    logits, y = torch.randn(8, 2, requires_grad=True), torch.randint(0, 2, (8,))
    g = torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])  # group 2 absent from the batch
    per = torch.nn.functional.cross_entropy(logits.detach(), y, reduction="none")
    gl = torch.stack([per[g == 0].mean(), per[g == 1].mean(), torch.tensor(0.0)])
    q = torch.full((3,), 1 / 3) * torch.exp(0.5 * gl)
    q = q / q.sum()
    loss = loss_fn(logits, y, g)
    assert torch.allclose(loss_fn.q, q) and loss.item() == pytest.approx((gl @ q).item(), rel=1e-6)
    loss.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert loss_fn(logits, y).item() == pytest.approx(per.mean().item(), rel=1e-6)  # no groups: plain CE
    with pytest.raises(ValueError, match="group_dro needs groups"):
        build_loss(OptimConfig(loss="group_dro"))


def _thin_train_group(manifest, group: str, keep: int) -> None:
    """Drop all but `keep` training rows of `group` from the manifest: that group becomes rare in training."""
    lines = manifest.read_text().splitlines()
    rows, kept = [lines[0]], 0
    for line in lines[1:]:
        if line.endswith(f",train,{group}"):
            kept += 1
            if kept > keep:
                continue
        rows.append(line)
    manifest.write_text("\n".join(rows) + "\n")


@pytest.mark.parametrize("overrides", [{"data.balance": "groups"}, {"optim.loss": "group_dro", "optim.dro_step": 0.05},
                                       {"optim.loss": "group_dro", "data.in_memory": False}],
                         ids=["balance_groups", "group_dro", "group_dro_streamed"])
def test_mitigations_train_on_group_manifest(tmp_path, overrides, monkeypatch):
    """Each mitigation through the Trainer, on a manifest where one of the 4 training groups is rare (4 of
    58 images): group-balanced draws give the step every group about equally often; Group DRO gets each
    batch's group ids, and its loss and q are Sagawa et al.'s update of the losses it was given."""
    from foveal.config import RunConfig, apply_overrides
    from foveal.training import Callback, Trainer

    manifest = write_group_manifest(tmp_path / "d")
    _thin_train_group(manifest, "site=B|sex=M", keep=4)
    drawn, dro_calls = [], []

    class SeeGroups(Callback):  # the group ids of every batch the step gets
        def on_train_begin(self, trainer) -> None:
            compute = trainer.run.step.compute

            def spy(net, x, y, *extra):
                drawn.append(extra[0].clone())
                return compute(net, x, y, *extra)

            trainer.run.step.compute = spy

    forward = GroupDROLoss.forward

    def dro_spy(self, logits, target, groups=None):
        loss = forward(self, logits, target, groups)
        dro_calls.append((logits.detach().float().clone(), target.clone(), groups, loss.detach().clone()))
        return loss

    monkeypatch.setattr(GroupDROLoss, "forward", dro_spy)
    cfg = apply_overrides(RunConfig(), {"data.source": str(manifest), "train.epochs": 2, "train.name": "m",
                                        "train.batch_size": 16, "train.out_dir": str(tmp_path / "runs"),
                                        "train.device": "cpu", "train.progress": False, "train.report": False,
                                        **overrides})
    trainer = Trainer(cfg, callbacks=(SeeGroups(),), log=lambda m: None)
    run = trainer.fit().run_dir
    test = json.loads((run / "test.json").read_text())
    assert test["worst_group_accuracy"] == pytest.approx(min(r["accuracy"] for r in test["groups"].values()))
    assert trainer.run.loaders.group_names == sorted(f"site={s}|sex={x}" for s in "AB" for x in "FM")
    train_groups = trainer.run.data.splits["train"].group_index()[1]
    rare = trainer.run.loaders.group_names.index("site=B|sex=M")
    assert len(train_groups) == 58 and (train_groups == rare).sum() == 4
    g = torch.cat(drawn)
    assert len(drawn) == trainer.state.step == 2 * (58 // 16)
    freq = torch.bincount(g, minlength=4).float() / len(g)
    if cfg.data.balance == "groups":  # the draws, not the data: every group about 1/4, the rare one included
        assert (freq - 0.25).abs().max() < 0.15 and freq[rare] > 0.17, freq  # (class-balanced: 0.08)
    else:  # shuffled without replacement: the rare group as rare as in the data
        assert freq[rare] == pytest.approx(4 / 58, abs=0.05), freq
    if cfg.optim.loss == "group_dro":  # replay Sagawa et al.'s Algorithm 1 on what the loss was given
        grouped = [c for c in dro_calls if c[2] is not None]
        assert len(grouped) == trainer.state.step and all(torch.equal(c[2], d) for c, d in zip(grouped, drawn))
        q = torch.full((4,), 0.25)
        for logits, y, groups, loss in grouped:
            per = torch.nn.functional.cross_entropy(logits, y, reduction="none")
            gl = torch.stack([per[groups == k].mean() if (groups == k).any() else torch.tensor(0.0)
                              for k in range(4)])
            q = q * torch.exp(cfg.optim.dro_step * gl)
            q = q / q.sum()
            assert loss.item() == pytest.approx((gl @ q).item(), rel=1e-5)
        torch.testing.assert_close(trainer.run.criterion.q, q)
        assert not torch.allclose(q, torch.full((4,), .25))


def test_group_mitigation_without_groups_says_how(tmp_path, digit_folder):
    from foveal.config import RunConfig, apply_overrides
    from foveal.training import Trainer

    cfg = apply_overrides(RunConfig(), {"data.source": str(digit_folder), "data.balance": "groups",
                                        "train.out_dir": str(tmp_path), "train.device": "cpu"})
    with pytest.raises(ValueError, match="'group' column"):
        Trainer(cfg, log=lambda m: None).setup()


def test_jtt_upsamples_stage_one_errors(tmp_path):
    from foveal.config import RunConfig, apply_overrides
    from foveal.training.jtt import fit_jtt

    manifest = write_group_manifest(tmp_path / "d")
    cfg = apply_overrides(RunConfig(), {"data.source": str(manifest), "train.epochs": 1, "train.name": "j",
                                        "train.out_dir": str(tmp_path / "runs"), "train.device": "cpu",
                                        "train.progress": False, "train.report": False,
                                        "train.jtt_epochs": 1, "train.jtt_upweight": 3})
    logs = []
    result = fit_jtt(cfg, log=logs.append)
    n_wrong = int(next(m for m in logs if m.startswith("JTT:")).split()[1])
    train = result.data.splits["train"]
    assert len(train) == 72 + 2 * n_wrong and len(train.groups) == len(train)  # 72 images + 2 extra copies of errors
    assert "worst_group_accuracy" in result.test_metrics


def test_meter_worst_group_accuracy_matches_direct_count():
    from foveal.metrics import ConfusionMeter

    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(200, 3, generator=g), torch.randint(0, 3, (200,), generator=g)
    groups = torch.randint(0, 4, (200,), generator=g)  # group 4 of 5 never appears: left out of the minimum
    meter = ConfusionMeter(3, num_groups=5)
    for s in range(0, 200, 64):
        meter.update(logits[s:s + 64], y[s:s + 64], None, groups[s:s + 64])
    hit = logits.argmax(1) == y
    expected = min(hit[groups == k].float().mean().item() for k in range(4))
    assert meter.compute()["worst_group_accuracy"] == pytest.approx(expected)
    assert "worst_group_accuracy" not in ConfusionMeter(3).compute()


def test_cli_jtt_selects_on_worst_val_group(tmp_path):
    """`foveal train --train.jtt_epochs 1 --train.best_metric worst_group_accuracy`: two stages through the CLI, each
    epoch's worst val group in the history, and `best` is the epoch with the highest of them."""
    import csv

    from foveal.cli.main import main

    manifest = write_group_manifest(tmp_path / "d")
    rc = main(["train", "--data.source", str(manifest), "--train.epochs", "3", "--train.name", "j",
               "--train.out_dir", str(tmp_path / "runs"), "--train.device", "cpu", "--train.progress", "false",
               "--train.report", "false", "--train.logger", "none", "--train.jtt_epochs", "1",
               "--train.jtt_upweight", "3", "--train.best_metric", "worst_group_accuracy"])
    assert rc == 0
    assert (tmp_path / "runs" / "j-jtt-id" / "best.safetensors").is_file()  # stage 1 ran, as its own run
    rows = list(csv.DictReader(open(tmp_path / "runs" / "j" / "metrics.csv")))
    worst = [float(r["val_worst_group_acc"]) for r in rows]
    test = json.loads((tmp_path / "runs" / "j" / "test.json").read_text())
    assert len(worst) == 3 and test["best_epoch"] == 1 + worst.index(max(worst))


def test_worst_group_selection_without_val_groups_says_how(tmp_path, digit_folder):
    from foveal.config import RunConfig, apply_overrides
    from foveal.training import Trainer

    cfg = apply_overrides(RunConfig(), {"data.source": str(digit_folder), "train.best_metric": "worst_group_accuracy",
                                        "train.out_dir": str(tmp_path), "train.device": "cpu"})
    with pytest.raises(ValueError, match="worst_group_accuracy needs groups in the val split"):
        Trainer(cfg, log=lambda m: None).setup()


def _dro_rank(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as tdist

    tdist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    g = torch.Generator().manual_seed(0)
    logits, y, groups = torch.randn(16, 2, generator=g), torch.randint(0, 2, (16,), generator=g), \
        torch.randint(0, 3, (16,), generator=g)
    rows = slice(rank * 8, rank * 8 + 8)  # this rank's half of the global batch
    x = logits[rows].clone().requires_grad_(True)
    loss_fn = GroupDROLoss(3, step=0.5)
    loss = loss_fn(x, y[rows], groups[rows])
    loss.backward()
    # DDP averages the ranks' parameter gradients: each rank's rows enter that mean as grad / world
    torch.save({"q": loss_fn.q, "grad": x.grad / world, "loss": loss.detach()}, f"{out}.{rank}")
    tdist.destroy_process_group()


def test_group_dro_two_processes_equal_one(tmp_path):
    """Group DRO under DDP: q moves by the global batch's group losses (all-reduced), and the averaged
    gradient equals the single-process gradient of the whole batch."""
    import torch.multiprocessing as mp

    out = str(tmp_path / "r")
    mp.spawn(_dro_rank, args=(2, f"file://{tmp_path / 'init'}", out), nprocs=2)
    g = torch.Generator().manual_seed(0)
    logits, y, groups = torch.randn(16, 2, generator=g), torch.randint(0, 2, (16,), generator=g), \
        torch.randint(0, 3, (16,), generator=g)
    x = logits.clone().requires_grad_(True)
    one = GroupDROLoss(3, step=0.5)
    loss = one(x, y, groups)
    loss.backward()
    ranks = [torch.load(f"{out}.{r}") for r in range(2)]
    for r in ranks:
        assert torch.allclose(r["q"], one.q, atol=1e-6)
    assert torch.allclose(ranks[0]["grad"], x.grad[:8], atol=1e-6)
    assert torch.allclose(ranks[1]["grad"], x.grad[8:], atol=1e-6)
    assert (ranks[0]["loss"] + ranks[1]["loss"]).item() / 2 == pytest.approx(loss.item(), rel=1e-5)
