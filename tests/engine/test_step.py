"""The one training step every loop runs: what it computes, in what order, without host reads."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from foveal.training.step import StepHook, StepOptions, TrainStep, classify
from foveal.models import create_model

CPU = torch.device("cpu")
OPTS = StepOptions.plain(grad_clip=0.5, ema_decay=0.9)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("lenet5_modern", num_classes=10, in_chans=1, img_size=20)  # with batch norm


def _batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(8, 1, 20, 20, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(n)]


def _sgd(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, foreach=True)


def test_step_is_the_hand_written_step_bit_for_bit() -> None:
    """forward, loss, zero_grad, backward, clip, optimizer step, EMA update: exactly, in that order."""
    a, b = _model(), _model()
    opt_a, opt_b = _sgd(a), _sgd(b)
    step = TrainStep(a, opt_a, classify(F.cross_entropy), CPU, OPTS)
    ema = AveragedModel(b, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for x, y in _batches(3):
        res = step(x, y)
        logits = b(x)
        loss = F.cross_entropy(logits, y)
        opt_b.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(b.parameters(), 0.5)
        opt_b.step()
        ema.update_parameters(b)
        assert torch.equal(res.loss, loss.detach()) and torch.equal(res.out, logits.detach()) and res.y is y
        assert not res.loss.requires_grad and not res.out.requires_grad
    assert step.count == 3
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    for (k, v), w in zip(step.ema.state_dict().items(), ema.state_dict().values()):
        assert torch.equal(v, w), k
    assert any(not torch.equal(e, p) for e, p in zip(step.ema.module.parameters(), a.parameters()))  # it lags


def test_hooks_run_in_order_and_see_the_step_index() -> None:
    model, calls = _model(), []
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def before(i: int) -> None:
        calls.append(("before", i))
        opt.param_groups[0]["lr"] = 0.0 if i == 1 else 0.1  # the schedule of step i applies to step i

    def batch(x: torch.Tensor, y: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(("batch", i, x.is_contiguous(memory_format=torch.channels_last)))
        return x, F.one_hot(y, 10).float()  # soft targets, as mixup makes

    def compute(net: nn.Module, x: torch.Tensor, y: torch.Tensor):
        calls.append(("compute", tuple(y.shape)))
        logits = net(x)
        return F.cross_entropy(logits, y), logits

    hooks = [StepHook(before=before, batch=batch), StepHook(after=lambda n: calls.append(("after", n)))]
    step = TrainStep(model, opt, compute, CPU, dataclasses.replace(OPTS, channels_last=True, ema_decay=None), hooks)
    conv = next(p for p in model.parameters() if p.ndim == 4 and p.shape[1] > 1)  # a 1-channel one is both
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()  # NHWC weights
    (x0, y0), (x1, y1) = _batches(2)
    res = step(x0, y0)
    assert res.y.shape == (8, 10)  # the targets after the batch hooks come back
    weights = [p.detach().clone() for p in model.parameters()]
    step(x1, y1)
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), weights))  # lr 0 at step 1: no move
    assert calls == [("before", 0), ("batch", 0, True), ("compute", (8, 10)), ("after", 1),
                     ("before", 1), ("batch", 1, True), ("compute", (8, 10)), ("after", 2)]


def _forbid(*_a, **_k):
    raise AssertionError("host read inside the training step")


def test_step_never_reads_the_device(monkeypatch) -> None:
    """With clipping, EMA, channels-last and hooks: no .item()/bool()/float() (each a sync on a GPU)."""
    model = _model()
    opts = dataclasses.replace(OPTS, channels_last=True)
    step = TrainStep(model, _sgd(model), classify(F.cross_entropy), CPU, opts,
                     [StepHook(before=lambda i: None, batch=lambda x, y, i: (x.flip(3), y), after=lambda n: None)])
    batches = _batches(3)
    step(*batches[0])  # the first step reads the EMA's count once
    for name in ("item", "tolist", "__bool__", "__float__", "__int__", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, _forbid)
    for x, y in batches[1:]:
        step(x, y)


def test_a_resumed_ema_continues_its_average() -> None:
    """A new step over restored weights, optimizer and EMA state (what resume does) averages on from
    the saved count instead of starting the average over with a copy."""
    batches = _batches(3)
    model = _model()
    opt = _sgd(model)
    run = TrainStep(model, opt, classify(F.cross_entropy), CPU, OPTS)
    for x, y in batches[:2]:
        run(x, y)
    again = _model()
    opt_again = _sgd(again)
    resumed = TrainStep(again, opt_again, classify(F.cross_entropy), CPU, OPTS)
    again.load_state_dict(model.state_dict())
    opt_again.load_state_dict(copy.deepcopy(opt.state_dict()))  # loading alone would share the momentum tensors
    resumed.ema.load_state_dict(run.ema.state_dict())
    resumed.count = run.count
    for step in (run, resumed):
        torch.manual_seed(5)  # the same dropout masks
        step(*batches[2])
    assert int(resumed.ema.n_averaged) == 3
    for (k, v), w in zip(run.ema.state_dict().items(), resumed.ema.state_dict().values()):
        assert torch.equal(v, w), k


def test_cpu_bf16_autocasts_each_step_once(autocast_calls: list) -> None:
    model = _model()
    step = TrainStep(model, _sgd(model), classify(F.cross_entropy), CPU, dataclasses.replace(OPTS, cpu_bf16=True))
    for x, y in _batches(2):
        res = step(x, y)
    assert autocast_calls == [("cpu", torch.bfloat16, True)] * 2
    assert res.out.dtype == torch.bfloat16 and res.loss.dtype == torch.float32  # cross-entropy runs in fp32
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_cpu_bf16_gives_depthwise_convs_their_own_policy() -> None:
    """oneDNN's bf16 depthwise backward kernels are the slow ones (runtime/device.py): under CPU bf16 each
    depthwise conv runs in `_DepthwiseBF16` (bf16 out), the pointwise ones under plain autocast; gradients
    reach every weight, the state_dict keys stay, and the EMA's deepcopy runs its own weights, not the model's."""
    torch.manual_seed(0)
    seen = {}
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.BatchNorm2d(8), nn.ReLU6(), nn.Conv2d(8, 8, 3, padding=1, groups=8),
                          nn.Conv2d(8, 4, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    for name in ("0", "3", "4"):
        model.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.grad_fn))
    keys = list(model.state_dict())
    step = TrainStep(model, _sgd(model), classify(F.cross_entropy), CPU,
                     dataclasses.replace(OPTS, cpu_bf16=True, channels_last=True))
    x, y = torch.randn(4, 3, 12, 12), torch.randint(0, 4, (4,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    step(x, y)
    assert "DepthwiseBF16" in type(seen["3"]).__name__ and "Convolution" in type(seen["4"]).__name__
    assert list(model.state_dict()) == keys
    for k in ("0.weight", "3.weight", "4.weight"):
        assert not torch.equal(before[k], model.state_dict()[k]), k  # every conv learned
    ema_net = step.ema.module
    with torch.no_grad():
        ema_net[3].weight.zero_()  # the copy's depthwise conv, not the model's, must run
        ema_net.eval(), model.eval()
        assert torch.equal(ema_net[3](x[:, :1].expand(4, 8, 12, 12).contiguous()), torch.zeros(4, 8, 12, 12)
                           + ema_net[3].bias.view(1, -1, 1, 1))
    assert "forward" in vars(model[3]) and "forward" not in vars(model[4])
    plain = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8))
    TrainStep(plain, _sgd(plain), classify(F.cross_entropy), CPU, OPTS)  # fp32: the model is left as it is
    assert "forward" not in vars(plain[0])


@pytest.mark.parametrize("stride,k,same", [(1, 3, False), (2, 3, False), (1, 5, False), (2, 5, False), (2, 3, True),
                                           (2, 5, True)])
def test_depthwise_bf16_policy_matches_fp32_gradients(stride: int, k: int, same: bool) -> None:
    """Every branch of the policy (bf16 or fp32 input gradient by stride, weight gradient by kernel size,
    timm's TF-"same" padding) gives the fp32 layer's output and gradients to bf16 precision; outside
    autocast the layer is exactly the plain one."""
    from foveal.runtime.device import cpu_bf16_depthwise

    torch.manual_seed(stride * 10 + k)
    if same:
        create_conv2d = pytest.importorskip("timm.layers").create_conv2d
        conv = create_conv2d(6, 6, k, stride=stride, padding="same", depthwise=True)
        assert type(conv).__name__ == "Conv2dSame"
    else:
        conv = nn.Conv2d(6, 6, k, stride, padding=k // 2, groups=6, bias=True)
    ref = copy.deepcopy(conv)
    assert cpu_bf16_depthwise(conv) == 1 and "forward" in vars(conv)
    x = torch.randn(3, 6, 14, 14).contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(ref(x))
    xr, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref = ref(xr)
    out_ref.backward(g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(xb)
    assert out.dtype == torch.bfloat16 and out.shape == out_ref.shape
    out.backward(g.bfloat16())

    def close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
        a, b = a.detach().float(), b.detach()
        err = float((a - b).abs().max() / b.abs().max())
        assert err < 0.03, (what, err)

    close(out, out_ref, "output")
    close(xb.grad, xr.grad, "input gradient")
    close(conv.weight.grad, ref.weight.grad, "weight gradient")
    if conv.bias is not None:
        close(conv.bias.grad, ref.bias.grad, "bias gradient")
    assert conv.weight.grad.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(conv(x), ref(x))  # fp32 outside autocast: the layer as it was


def test_cpu_bf16_auto_is_on_for_nhwc_training_on_native_bf16_cpus(monkeypatch) -> None:
    from foveal.runtime import device as dev

    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: True)
    assert dev.resolve_cpu_bf16(None, CPU, channels_last=True) is True
    assert dev.resolve_cpu_bf16(None, CPU, channels_last=False) is False  # small inputs: fp32
    assert dev.resolve_cpu_bf16(None, torch.device("cuda"), channels_last=True) is False  # CUDA has train.amp
    assert dev.resolve_cpu_bf16(False, CPU, channels_last=True) is False
    monkeypatch.setattr(dev, "cpu_has_native_bf16", lambda: False)
    assert dev.resolve_cpu_bf16(None, CPU, channels_last=True) is False
    assert dev.resolve_cpu_bf16(True, CPU, channels_last=False) is True


def test_compile_wraps_the_module_the_step_calls_and_rewraps_on_request(monkeypatch) -> None:
    compiled = []

    class Spy(nn.Module):  # stands in for torch.compile's OptimizedModule
        def __init__(self, inner: nn.Module):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return self.inner(x)

    def fake_compile(model, mode, dynamic):
        compiled.append((mode, dynamic))
        return Spy(model)

    monkeypatch.setattr(torch, "compile", fake_compile)
    model = _model()
    opts = dataclasses.replace(OPTS, compile=True, compile_mode="max-autotune")
    step = TrainStep(model, _sgd(model), classify(F.cross_entropy), CPU, opts)
    assert step.net is None
    (x, y), = _batches(1)
    step(x, y)
    first = step.net
    assert isinstance(first, Spy) and first.inner is model and first.calls == 1
    assert compiled == [("max-autotune", False)]  # static shapes: eval batches do not turn the graph symbolic
    step.wrap()  # e.g. after the trainable set changed
    step(x, y)
    assert step.net is not first and step.net.calls == 1 and len(compiled) == 2
    with pytest.raises(ValueError, match="compile mode 'fastest' is not one of"):
        TrainStep(model, _sgd(model), classify(F.cross_entropy), CPU, dataclasses.replace(opts, compile_mode="fastest"))


def test_step_options_come_from_the_run_config() -> None:
    from foveal.config import RunConfig, apply_overrides

    cfg = apply_overrides(RunConfig(), {"train.ema": True, "train.ema_decay": 0.99, "optim.grad_clip": 2.0,
                                        "train.cpu_bf16": True, "train.channels_last": True})
    opts = StepOptions.from_config(cfg)
    assert (opts.ema_decay, opts.grad_clip, opts.cpu_bf16, opts.channels_last) == (0.99, 2.0, True, True)
    assert StepOptions.from_config(RunConfig()).ema_decay is None  # train.ema off: no average kept
