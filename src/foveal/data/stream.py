"""The streaming loader, for folders too large to hold decoded in memory.

Images stay in their files (`foveal.data.images.FileImages`, the same interface as an in-memory
split's images). Each epoch, `data.workers` decoder threads decode whole batches ahead of the
training loop: JPEGs at a reduced scale through Pillow's draft mode (a 2000-px photo going to
224 px is decoded at 1/8 size, skipping most of the inverse DCT), then resized to `img_size` as
uint8. Batches are copied to the device (from pinned memory on CUDA) and go through the very same
batched augmentation as the in-memory `DeviceLoader`, so both paths train identically.

On the CPU (and MPS), threads, not DataLoader worker processes (written by hand for that reason):
Pillow releases the GIL while it decodes and resizes, so threads decode in parallel, and they share
the trainer's memory instead of a forked copy of it. Forked workers that stay alive (persistent, one
set per loader) share the parent's heap copy-on-write, so every page the trainer writes afterwards
faults and is copied: on a 2-core CPU a one-epoch 224-px EfficientNet-Lite0 fine-tune of 280
streamed photos spent 54 s of its 66 s wall in the kernel with 2 worker processes, against 3 s with
decoder threads (BENCHMARKS, "Streamed folders"). On CUDA the trainer's tensors live on the GPU,
and decoding for a fast GPU may need more cores than threads sharing one GIL get, so CUDA uses
persistent DataLoader worker processes, but only for a split of at least `PROCESS_MIN_BATCHES`
batches per epoch: each loader starts its own set, and on a small run that start dominates (on one
H200, 400 streamed photos took 56 s wall against 20.5 s in memory, 4.7 s of it training; on this
2-core CPU, 3 loaders of 400 photos reach their first batches in 1.2-1.3 s with processes against
0.55-0.6 s with threads). Threads decode the small splits there too.

`make_loader` picks the path from the split: images in memory -> `DeviceLoader`, files -> `StreamLoader`.
"""

from __future__ import annotations

import sys
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .bundle import Split
from .decode import DecodeError
from .images import FileImages, fits_in_memory  # noqa: F401  (fits_in_memory: re-exported)
from .loader import BatchPlan, DeviceLoader, GlobalRows, Normalizer, PlannedBatches


def decode_batch(images: FileImages, indices: Sequence[int], pin: bool = False
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
    """(B, C, H, W) uint8 of the images at `indices`, (B,) readable flags, the indices, and the errors of the
    unreadable ones (their slots stay zero). Filled through numpy: no torch kernel runs in a decoder
    thread beside the training step's intra-op pool."""
    C, S = images.in_chans, images.img_size
    out = np.zeros((len(indices), C, S, S), dtype=np.uint8)
    ok = np.ones(len(indices), dtype=bool)
    errors = []
    for k, i in enumerate(indices):
        try:
            out[k] = images.decode(i).numpy()
        except DecodeError as e:
            ok[k] = False
            errors.append(str(e))
    x = torch.from_numpy(out)
    return (x.pin_memory() if pin else x), torch.from_numpy(ok), torch.as_tensor(indices, dtype=torch.int64), errors


PREFETCH_PER_WORKER = 2  # batches decoded ahead per decoder thread
PROCESS_MIN_BATCHES = 50  # CUDA: worker processes only for splits of at least this many batches per epoch


def use_processes(device: torch.device, n_batches: int, workers: int, processes: Optional[bool] = None) -> bool:
    """Whether a streaming loader decodes in worker processes (else threads): `processes` when given; by
    default on CUDA for splits large enough to repay starting them (see the module docstring)."""
    if workers <= 0:
        return False
    if processes is not None:
        return processes
    return device.type == "cuda" and n_batches >= PROCESS_MIN_BATCHES


class _BatchDecoder(Dataset):
    """For worker processes (CUDA): a whole batch per worker call (`__getitems__`), so one pickle crosses
    the process boundary per batch instead of one per image."""

    def __init__(self, images: FileImages):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images.decode(i)

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        return decode_batch(self.images, indices)  # pinned by the DataLoader on CUDA


class _EpochBatches:
    """Batch sampler over the index lists `StreamLoader` sets before each epoch; a persistent
    DataLoader iterates it afresh every epoch (in the main process; workers only receive index lists)."""

    def __init__(self, n_batches: int):
        self.n_batches = n_batches
        self.batches: list[list[int]] = []

    def __len__(self) -> int:
        return self.n_batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)


def _as_is(batch: Any) -> Any:
    return batch  # the dataset already returns a collated batch


class StreamLoader(PlannedBatches):
    """Iterate (x, y) batches like `DeviceLoader`: x float (B, C, H, W) normalized on `device`, y (B,)
    or (B, K) soft. Order, sharding (`rank_batches`) and augmentation draw from one generator seeded
    per epoch exactly as in `DeviceLoader`, so on the same device both loaders give the same batches.

    Images that fail to decode are named in `problems` (and on stderr, once each). An evaluation
    loader drops them from their batch. A training loader (`refill`, the default when shuffling)
    keeps every batch full instead, repeating readable images of the batch in their place, so that
    all ranks of a distributed job take the same number of steps of the same size.

    On CUDA, JPEGs are decoded on the device in batches (`foveal.data.gpu_decode`; `device_decode`), the
    threads reading their bytes ahead. Otherwise `workers` decode ahead of the loop: threads on the CPU and
    MPS, persistent DataLoader worker processes on CUDA for large splits (`processes` True/False chooses; see
    `use_processes`); none: in this thread.
    """

    def __init__(self, split: Split, plan: BatchPlan, device: torch.device, mean: list[float], std: list[float],
                 augment: Any = None, groups: Optional[torch.Tensor] = None, workers: int = 2,
                 refill: Optional[bool] = None, processes: Optional[bool] = None,
                 device_decode: Optional[bool] = None):
        super().__init__(plan, split.labels, groups, device)
        self.images: FileImages = split.images
        self.normalize = Normalizer(mean, std, augment, device)  # augmentation included
        self.refill = plan.shuffle or plan.balanced if refill is None else refill
        self.problems: list[str] = []
        self.workers = workers
        self._pool: Optional[ThreadPoolExecutor] = None  # started at the first epoch, kept for the next ones
        self._loader: Optional[DataLoader] = None  # worker processes instead: `processes`, default on CUDA only
        self._batches = _EpochBatches(len(self))
        # JPEGs decoded on the device (foveal.data.gpu_decode): default on CUDA; the threads then only read bytes
        self.device_decode = device.type == "cuda" if device_decode is None else device_decode
        if not self.device_decode and use_processes(device, len(self), workers, processes):
            self._loader = DataLoader(_BatchDecoder(self.images), batch_sampler=self._batches, collate_fn=_as_is,
                                      num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=True,
                                      prefetch_factor=4)

    def _decoded(self, batches: list[list[int]]) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]]:
        """`decode_batch` of each batch, in order: by the persistent worker processes (CUDA), in this thread
        with no workers, else by the decoder threads, `PREFETCH_PER_WORKER` batches ahead per thread."""
        if self._loader is not None:
            self._batches.batches = batches
            yield from self._loader
            return
        if self.device_decode:  # the threads read bytes ahead; each batch is decoded here, on the device
            from .gpu_decode import decode_batch_on, read_batch

            for idx, datas in zip(batches, self._ahead(lambda idx: read_batch(self.images, idx), batches)):
                yield decode_batch_on(self.images, idx, datas, self.device)
            return
        pin = self.device.type == "cuda"
        yield from self._ahead(lambda idx: decode_batch(self.images, idx, pin), batches)

    def _ahead(self, fn: Any, batches: list[list[int]]) -> Iterator[Any]:
        """`fn(batch)` of each batch, in order: in this thread with no workers, else by the decoder threads,
        `PREFETCH_PER_WORKER` batches ahead per thread."""
        if self.workers <= 0:
            yield from map(fn, batches)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="foveal-decode")
        ahead: deque[Future] = deque()
        todo = iter(batches)
        try:
            for idx in todo:
                ahead.append(self._pool.submit(fn, idx))
                if len(ahead) >= self.workers * PREFETCH_PER_WORKER:
                    break
            while ahead:
                done = ahead.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    ahead.append(self._pool.submit(fn, nxt))
                yield done
        finally:  # a loop left early (an exception, early stop): drop what was queued
            for f in ahead:
                f.cancel()

    def _report(self, errors: list[str]) -> None:
        for e in errors:
            if e not in self.problems:
                self.problems.append(e)
                print(f"data: skipped unreadable image {e}", file=sys.stderr)

    def _refill(self, x: torch.Tensor, ok: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Put readable images of the batch (or, when none is, the first readable of the split,
        decoded here) into the slots of the unreadable ones; the batch keeps its size."""
        good = ok.nonzero().flatten()
        if len(good) == 0:
            x0, i0 = self._first_readable()
            x, idx = x.clone(), idx.clone()
            x[:], idx[:] = x0, i0
            return x, idx
        src = good[torch.arange(len(ok)) % len(good)]  # (B,) a readable slot for every slot
        src = torch.where(ok, torch.arange(len(ok)), src)
        return x[src], idx[src]

    def _first_readable(self) -> tuple[torch.Tensor, int]:
        for i in range(len(self.images)):
            try:
                return self.images.decode(i), i
            except DecodeError:
                continue
        raise ValueError(f"none of the {len(self.images)} images of this split can be decoded "
                         f"(first: '{self.images.paths[0]}')")

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        plan = [(idx.tolist(), draw) for idx, draw in self.epoch_batches()]  # one sync per epoch
        plan = [(idx, draw) for idx, draw in plan if idx]  # empty: a short last evaluation batch
        for (x, ok, idx, errors), (_, draw) in zip(self._decoded([idx for idx, _ in plan]), plan):
            if errors:
                self._report(errors)
                if self.refill:
                    x, idx = self._refill(x, ok, idx)
                else:
                    x, idx = x[ok], idx[ok]
                    if len(idx) == 0:
                        continue
                    draw = None if draw is None else GlobalRows(draw.rows[ok.to(draw.rows.device)], draw.size)
            rows = idx.to(self.device, non_blocking=True)
            x, y = self.normalize(x.to(self.device, non_blocking=True), self.labels[rows], self.generator, draw)
            yield (x, y) if self.groups is None else (x, y, self.groups[rows])


def make_loader(split: Split, batch_size: int, device: torch.device, mean: list[float], std: list[float],
                workers: int = 2, augment: Any = None, groups: Optional[torch.Tensor] = None,
                refill: Optional[bool] = None, gpu_decode: bool = True, **plan: Any) -> DeviceLoader | StreamLoader:
    """The loader for `split`: `DeviceLoader` for images in memory, `StreamLoader` for files;
    `plan`: the other `BatchPlan` fields (shuffle, drop_last, seed, rank, world, balanced).
    `gpu_decode`: JPEGs decoded on CUDA devices (data.gpu_decode); False keeps decoding on the CPU."""
    batches = BatchPlan(batch_size, **plan)
    if split.images.in_memory:
        return DeviceLoader(split, batches, device, mean, std, augment, groups)
    return StreamLoader(split, batches, device, mean, std, augment, groups, workers, refill,
                        device_decode=None if gpu_decode else False)
