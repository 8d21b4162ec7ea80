"""'auto' batch sizes: sized by activation memory on the CPU, today's fixed size on CUDA."""

from __future__ import annotations

import torch

from foveal.batching import activation_bytes, resolve_batch_size
from foveal.config import BatchSizing
from foveal.models import create_model


def test_a_number_is_kept():
    assert resolve_batch_size(12, None, (3, 224, 224), "cpu") == 12
    assert resolve_batch_size("12", None, (3, 224, 224), "cpu") == 12  # as a flag's value arrives


def test_cuda_keeps_the_fixed_size_without_probing():
    # No model is needed (none is run): on CUDA 'auto' is the size the GPU path always used.
    assert resolve_batch_size("auto", None, (3, 224, 224), "cuda") == BatchSizing().max_batch


def test_cpu_batch_shrinks_with_the_input_and_for_attacks():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10, img_size=224).eval()
    small = resolve_batch_size("auto", model, (3, 28, 28), "cpu")
    large = resolve_batch_size("auto", model, (3, 224, 224), "cpu")
    attack = resolve_batch_size("auto", model, (3, 224, 224), "cpu", grad=True)
    assert small == BatchSizing().max_batch  # 28 px: tiny activations, the cap applies
    assert 1 <= attack < large < small  # 64x the pixels; a backward keeps every activation
    budget = BatchSizing().cpu_activation_mb * 2 ** 20
    assert large * activation_bytes(model, (3, 224, 224), "cpu", grad=False) <= budget
    tight = BatchSizing(cpu_activation_mb=1.0)
    assert resolve_batch_size("auto", model, (3, 224, 224), "cpu", sizing=tight) == 1  # never 0


def test_the_probe_leaves_the_model_as_it_was():
    model = create_model("resnet18", num_classes=10, img_size=32).train()
    bn = model.bn1 if hasattr(model, "bn1") else next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    assert activation_bytes(model, (3, 32, 32), "cpu", grad=True) > activation_bytes(model, (3, 32, 32), "cpu", False)
    assert model.training and torch.equal(bn.running_mean, before)
    assert not any(m._forward_hooks for m in model.modules())  # the probe's hooks are gone
