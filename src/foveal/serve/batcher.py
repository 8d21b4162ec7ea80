"""Micro-batching: concurrent requests share one model call.

Each request puts its image on an asyncio queue and awaits a future. One collector task takes
the first waiting image, then keeps taking more until `max_batch` images or `max_wait_ms`
after the first, and runs the model on the stacked batch in a single worker thread (the event
loop stays free to accept requests meanwhile; one thread because the model call itself is
multi-threaded). While a batch runs, new requests queue up, so under load batches fill
without waiting. Written by hand because no well-kept library does this for an ASGI app
without adding a separate model server.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

import numpy as np

log = logging.getLogger(__name__)


class BatcherStopped(RuntimeError):
    """The collector task is not running (stopped, cancelled or crashed): no batch will ever run."""


class MicroBatcher:
    """Collects (C, H, W) uint8 images into batches for `infer(batch) -> (N, K) probabilities`;
    `max_batch` and `max_wait_ms` as ServeConfig's fields of those names."""

    def __init__(self, infer: Callable[[np.ndarray], np.ndarray], max_batch: int, max_wait_ms: float):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_ms >= 0 (got {max_batch}, {max_wait_ms})")
        self.infer, self.max_batch, self.max_wait = infer, int(max_batch), max_wait_ms / 1000.0
        self._queue: Optional[asyncio.Queue] = None
        self._task: Optional[asyncio.Task] = None
        self._in_hand: list[tuple[np.ndarray, asyncio.Future]] = []  # taken off the queue, not yet answered
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="foveal-infer")
        self.batches = 0  # model calls so far
        self.images = 0  # images through the model so far

    @property
    def pending(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    def failure(self) -> Optional[str]:
        """None while the collector runs; else why it does not (for /health and 503 answers)."""
        t = self._task
        if t is None:
            return "the micro-batching task was not started"
        if not t.done():
            return None
        if t.cancelled():
            return "the micro-batching task was cancelled"
        e = t.exception()
        if e is not None:
            return f"the micro-batching task crashed: {type(e).__name__}: {e}"
        return "the micro-batching task exited"

    def start(self) -> None:
        """Start the collector on the running event loop (call from the app's startup)."""
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task) -> None:
        # Whatever ended the collector, no waiting request may hang: each gets BatcherStopped.
        reason = self.failure() or "the micro-batching task exited"
        if not task.cancelled() and task.exception() is not None:
            log.error("foveal serve: %s", reason, exc_info=task.exception())
        waiting, self._in_hand = self._in_hand, []
        while self._queue is not None and not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        for _, f in waiting:
            if not f.done():
                f.set_exception(BatcherStopped(reason))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # a crash was logged when it happened
                pass
        self._pool.shutdown(wait=False)

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """(n, C, H, W) uint8 -> (n, K) probabilities; each image may land in a different batch."""
        if self._queue is None:
            raise RuntimeError("MicroBatcher.start() was not called")
        reason = self.failure()
        if reason is not None:  # checked with no await before the puts: nothing lands in a dead queue
            raise BatcherStopped(reason)
        loop = asyncio.get_running_loop()
        futures = []
        for img in images:
            fut = loop.create_future()
            self._queue.put_nowait((img, fut))
            futures.append(fut)
        return np.stack(await asyncio.gather(*futures))

    async def _collect(self) -> list[tuple[np.ndarray, asyncio.Future]]:
        assert self._queue is not None
        # Built in self._in_hand, so that a request taken off the queue is failed, not lost, if the
        # task dies mid-collection (no await between get() returning and the assignment).
        batch = self._in_hand = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), left))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [(x, f) for x, f in batch if not f.done()]  # skip requests whose client went away
            if not live:
                continue
            try:
                probs = await loop.run_in_executor(self._pool, self.infer, np.stack([x for x, _ in live]))
                if len(probs) != len(live):  # zip would leave the extra requests waiting forever
                    raise ValueError(f"the model returned {len(probs)} rows for a batch of {len(live)} images")
            except Exception as e:  # a failing model call fails its requests, never the collector
                for _, f in live:
                    if not f.done():
                        f.set_exception(e)
                continue
            self.batches += 1
            self.images += len(live)
            for (_, f), p in zip(live, probs):
                if not f.done():
                    f.set_result(p)
