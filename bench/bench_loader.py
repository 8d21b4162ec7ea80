"""Loader throughput on this machine: foveal's in-memory and streaming loaders vs torchvision.

    python bench/bench_loader.py                 # 10,000 32-px PNGs and 2,000 640x480 JPEGs
    python bench/bench_loader.py --out loader.json

The same as `foveal bench loader`; see foveal.benchmarks.loader for what is compared and how it is timed.
"""

from __future__ import annotations

import sys

from foveal.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "loader", *sys.argv[1:]]))
