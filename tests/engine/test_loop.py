"""The one step loop (training/loop.py): what it sums, where it stops, and that each loop's batches reach it."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from foveal.metrics import ConfusionMeter
from foveal.training.loop import Progress, run_steps
from foveal.training.step import StepOptions, TrainStep, classify


def _step(seed: int = 0) -> TrainStep:
    torch.manual_seed(seed)
    model = nn.Linear(6, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    return TrainStep(model, opt, classify(F.cross_entropy), torch.device("cpu"), StepOptions.plain())


def _batches(sizes, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)) for n in sizes]


def test_sums_are_weighted_by_images_and_match_a_plain_loop():
    batches = _batches([4, 7, 5])
    ref, losses = _step(), []
    for x, y in batches:  # the loop every caller used to write
        losses.append(ref(x, y).loss * len(y))
    step, meter = _step(), ConfusionMeter(3, "cpu", topk=0)
    done = run_steps(step, batches, meter=meter)
    assert (done.images, done.steps, step.count) == (16, 3, 3)
    assert torch.equal(done.loss_sum, sum(losses, torch.zeros(())))  # same order: bit-equal
    assert done.mean_loss() == done.loss_sum.item() / 16
    assert int(meter.sums[1]) == 16  # every step's predictions reached the meter
    for a, b in zip(ref.model.parameters(), step.model.parameters()):
        assert torch.equal(a, b)  # the same weights as the plain loop


def test_until_stops_before_the_batch_and_on_step_after_the_step():
    step = _step()
    done = run_steps(step, _batches([2] * 10), until=4)
    assert done.steps == 4 and step.count == 4
    again = run_steps(step, _batches([2] * 10), until=6)  # `until` counts the step's steps, not this call's
    assert again.steps == 2 and step.count == 6
    seen = []
    stopped = run_steps(_step(), _batches([3] * 10), on_step=lambda res: seen.append(res.loss) or len(seen) == 3)
    assert stopped.steps == 3 and len(seen) == 3


def test_progress_shows_the_loss_at_its_log_points(capsys):
    run_steps(_step(), _batches([5] * 4), progress=Progress("epoch 1/1", 20, every=2))
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and "loss=" in err
