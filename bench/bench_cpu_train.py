"""CPU training-step speed: fp32 (NCHW, the baseline) vs channels-last vs bf16 autocast + channels-last.

    taskset -c 0,1 python bench/bench_cpu_train.py --model airnet_mnist,airnet_small,lenet5 --out runs/bench_cpu_train.json
    # same as: foveal bench cpu-train ...

bf16 pays off only on CPUs with native bf16 (AVX512-BF16, AMX): `bf16_native` in the JSON says which this is.
Ratios are against the fp32 step of the same run; set `train.cpu_bf16: true` and `train.channels_last: true` in a
recipe to train that way.
"""

from __future__ import annotations

import sys

from foveal.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "cpu-train", *sys.argv[1:]]))
