"""Micro-batcher: concurrent requests share model calls and each gets its own row back."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from foveal.serve.batcher import MicroBatcher


def _run(max_batch: int, n: int = 40) -> tuple[list[int], list[np.ndarray], np.ndarray]:
    sizes: list[int] = []

    def infer(x: np.ndarray) -> np.ndarray:  # "probabilities" = the image's mean, so rows are checkable
        sizes.append(len(x))
        time.sleep(0.005)
        return x.reshape(len(x), -1).mean(1, keepdims=True).astype(np.float32)

    images = np.arange(n, dtype=np.uint8)[:, None, None, None].repeat(4, 2)  # (n, 1, 4, 1)

    async def main() -> list[np.ndarray]:
        b = MicroBatcher(infer, max_batch=max_batch, max_wait_ms=20)
        b.start()
        try:
            return await asyncio.gather(*(b.submit(images[i:i + 1]) for i in range(n)))
        finally:
            await b.stop()

    return sizes, asyncio.run(main()), images


def test_concurrent_requests_are_batched_and_routed():
    sizes, outs, images = _run(max_batch=16)
    assert sum(sizes) == 40 and max(sizes) == 16 and len(sizes) <= 4
    for i, o in enumerate(outs):
        assert o.shape == (1, 1) and o[0, 0] == float(images[i].mean())


def test_max_batch_one_serves_one_at_a_time():
    sizes, outs, _ = _run(max_batch=1, n=10)
    assert sizes == [1] * 10 and len(outs) == 10


def test_failing_model_fails_requests_not_the_batcher():
    calls = []

    def infer(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        if len(calls) == 1:
            raise RuntimeError("boom")
        return np.zeros((len(x), 2), np.float32)

    async def main():
        b = MicroBatcher(infer, max_batch=4, max_wait_ms=1)
        b.start()
        try:
            first = await asyncio.gather(b.submit(np.zeros((1, 1, 2, 2), np.uint8)), return_exceptions=True)
            second = await b.submit(np.zeros((1, 1, 2, 2), np.uint8))
            return first, second
        finally:
            await b.stop()

    first, second = asyncio.run(main())
    assert isinstance(first[0], RuntimeError) and second.shape == (1, 2)
