"""oneDNN's depthwise-convolution kernels one by one, fp32 against bf16, at EfficientNet-Lite0's shapes.

    python bench/bench_depthwise.py [--batch 32] [--out dw.json]

The measurements behind the CPU bf16 policy of `runtime/device.py: _DepthwiseBF16` (forward in bf16,
the input gradient in bf16 at stride 1, the weight gradient in bf16 for kernels up to 3x3, the rest
in fp32). Each row times, channels-last, the forward, the input gradient and the weight gradient in
both precisions (the best of 5 after 2 warm-ups). Rerun it on another CPU or torch to see whether
the policy still picks the faster kernel there.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

# (channels, input side, kernel, stride): the depthwise convs of tf_efficientnet_lite0 at 224 px
SHAPES = [(32, 112, 3, 1), (96, 112, 3, 2), (144, 56, 5, 1), (144, 56, 5, 2), (240, 28, 3, 1), (240, 28, 3, 2),
          (480, 14, 3, 1), (672, 14, 5, 1), (672, 14, 5, 2), (1152, 7, 5, 1)]


def best_ms(fn: Callable[[], Any], warmup: int = 2, runs: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * min(times)


def row(c: int, side: int, k: int, stride: int, batch: int) -> dict[str, Any]:
    out: dict[str, Any] = {"channels": c, "side": side, "kernel": k, "stride": stride}
    cl = torch.channels_last
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        x = torch.randn(batch, c, side, side).contiguous(memory_format=cl).to(dtype)
        w = torch.randn(c, 1, k, k).contiguous(memory_format=cl).to(dtype)
        conv = (w, None, stride, k // 2, 1, c)
        g = torch.ones_like(F.conv2d(x, *conv))
        args = ([stride] * 2, [k // 2] * 2, [1, 1], False, [0, 0], c)
        bwd = torch.ops.aten.convolution_backward
        out[f"{name}_forward_ms"] = best_ms(lambda: F.conv2d(x, *conv))
        out[f"{name}_grad_input_ms"] = best_ms(lambda: bwd(g, x, w, None, *args, [True, False, False]))
        out[f"{name}_grad_weight_ms"] = best_ms(lambda: bwd(g, x, w, None, *args, [False, True, False]))
    out["policy"] = {"forward": "bf16", "grad_input": "bf16" if stride == 1 else "fp32",
                     "grad_weight": "bf16" if k <= 3 else "fp32"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    rows = []
    print(f"{'shape':>18}  {'forward fp32/bf16':>18}  {'grad input fp32/bf16':>21}  {'grad weight fp32/bf16':>22}  policy")
    for shape in SHAPES:
        r = row(*shape, args.batch)
        rows.append(r)
        p = r["policy"]
        print(f"{'%d ch %d px k%d s%d' % shape:>18}  {r['fp32_forward_ms']:8.1f} {r['bf16_forward_ms']:8.1f}  "
              f"{r['fp32_grad_input_ms']:10.1f} {r['bf16_grad_input_ms']:9.1f}  "
              f"{r['fp32_grad_weight_ms']:10.1f} {r['bf16_grad_weight_ms']:10.1f}  "
              f"in {p['grad_input']}, w {p['grad_weight']}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"batch": args.batch, "torch": torch.__version__, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
