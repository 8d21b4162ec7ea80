"""CPU inference latency (batch 1, 224 px, 2 threads): PyTorch eager vs ONNX Runtime fp32 and int8.

    nice -n 10 python bench/bench_infer.py --out runs/bench_infer.json
    # same as: foveal bench infer --out runs/bench_infer.json

Prints the medians and ratios vs eager (from one run, each engine timed in its own block) as JSON and a Markdown table
for BENCHMARKS.md. Pin the process to the cores you measure, e.g. `taskset -c 0,1`.
"""

from __future__ import annotations

import sys

from foveal.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "infer", *sys.argv[1:]]))
