"""Whole CPU commands on generated photo-like JPEGs: `foveal train` (224 px, batch 32) and `foveal robust`,
each with foveal's allocator settings (glibc keeps freed memory) and with FOVEAL_MALLOC=default (today's
glibc behaviour) in the same run; wall, user and sys seconds of each and the ratios.

    taskset -c 0,1 python bench/bench_cpu_e2e.py --images 400 --epochs 1 --robust-images 49 --out cpu_e2e.json
    # same as: foveal bench cpu-e2e ...

The model is timm/tf_efficientnet_lite0 from random init (timm is in the test extra); the timing does not
depend on the weights. Results: BENCHMARKS.md, "CPU: whole commands and the allocator".
"""

from __future__ import annotations

import sys

from foveal.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "cpu-e2e", *sys.argv[1:]]))
