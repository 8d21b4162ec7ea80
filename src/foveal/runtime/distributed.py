"""Distributed training on PyTorch's own engine (torchrun + DistributedDataParallel).

The only module that knows about processes: callers ask the `DistInfo` that `setup` returns
whether they are rank 0, reduce through `all_reduce_sum`, and wrap their model with `wrap_model`.
Under torchrun the environment holds RANK, WORLD_SIZE and LOCAL_RANK; without it, all of this is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def env_info() -> DistInfo:
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def setup(device: torch.device, timeout_s: int = 300) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched by torchrun; pick this rank's device."""
    info = env_info()
    if not info.enabled:
        return info, device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(seconds=timeout_s))
    return info, device


def _differentiable_all_reduce(t: torch.Tensor) -> torch.Tensor:
    """Sum over processes with a backward that sums gradients (torch.distributed.nn's all_reduce)."""
    import warnings

    from torch.distributed.nn.functional import all_reduce

    with warnings.catch_warnings():  # deprecated for a private module, but still the public API
        warnings.simplefilter("ignore", FutureWarning)
        return all_reduce(t)


class GlooSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span all processes, for CPU (gloo) jobs.

    torch's nn.SyncBatchNorm runs on CUDA only. This one all-reduces per-channel sum, sum of
    squares and count through the differentiable `torch.distributed.nn` all_reduce, so the
    gradient flows through the global statistics exactly as in one process with the whole
    batch. Parameters and buffers keep BatchNorm2d's names: checkpoints are interchangeable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        C = x.shape[1]
        xd = x.double()  # float64 sums: E[x^2] - E[x]^2 loses too much in float32
        n = torch.tensor([x.numel() / C], dtype=torch.float64, device=x.device)
        stats = _differentiable_all_reduce(torch.cat([xd.sum((0, 2, 3)), (xd * xd).sum((0, 2, 3)), n]))  # (2C + 1,) global sums
        count = stats[-1]
        mean = stats[:C] / count
        var = (stats[C:2 * C] / count - mean * mean).to(x.dtype)  # biased, as BatchNorm normalizes with
        mean = mean.to(x.dtype)
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * float(count / (count - 1).clamp_min(1)), m)
                self.num_batches_tracked += 1
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None] if self.affine else y


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """torch's SyncBatchNorm on CUDA; GlooSyncBatchNorm (same state_dict) on the CPU."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            new = GlooSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                    child.track_running_stats).to(device)
            new.load_state_dict(child.state_dict())
            setattr(model, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return model


def wrap_model(model: nn.Module, info: DistInfo, device: torch.device) -> nn.Module:
    """DDP around `model`; the model itself when not distributed.

    DDP hooks the parameters that require grad when it is built: wrap again after changing
    which parameters train (the trainer does, for linear probes and gradual unfreezing), never
    before; `find_unused_parameters` is not needed, and its per-step graph walk is not paid."""
    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (one element when not distributed)."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def rank_seed(seed: int, rank: int) -> int:
    """A seed for draws that are not sliced from a global batch (dropout, drop-path, the adversarial
    perturber's random starts): `seed` itself on rank 0, so one process is unchanged, and an
    unrelated stream on every other rank, so ranks do not repeat each other's masks."""
    return (seed + rank * 0x9E3779B97F4A7C15) % (2**63)


def all_reduce_sum(tensors: list[torch.Tensor]) -> None:
    """Sum tensors in place across processes (metric states: confusion counts, loss sums)."""
    if dist.is_initialized():
        for t in tensors:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (run folder paths and the like)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
