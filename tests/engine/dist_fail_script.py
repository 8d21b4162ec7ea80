"""Run under torchrun by test_distributed: rank 1 raises at the end of its first epoch."""

import sys

from foveal.config import RunConfig, apply_overrides
from foveal.training import Callback, Trainer
from foveal.runtime.distributed import env_info


class FailOnRank1(Callback):
    def on_epoch_end(self, trainer, row):
        if env_info().rank == 1:
            raise RuntimeError("rank 1 failed on purpose (dist_fail_script)")


if __name__ == "__main__":
    cfg = apply_overrides(RunConfig(), {"train.out_dir": sys.argv[1], "train.epochs": 50, "train.progress": False,
                                        "train.device": "cpu", "train.dist_timeout": 30})
    Trainer(cfg, callbacks=(FailOnRank1(),)).fit()
