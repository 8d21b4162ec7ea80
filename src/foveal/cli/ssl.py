"""`foveal pretrain`: self-supervised pretraining (SimCLR, or MAE for ViTs) on unlabeled images.

Takes the same config flags as `foveal train` (data, model, optimizer, epochs...) plus the
SSL settings below; the run folder it writes is what `foveal train --pretrained RUN` takes.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..config import SSLConfig
from .config_args import add_config_flags, add_dataclass_flags, config_from_args, dataclass_from_args


# Flag spellings kept from before the flags were built from SSLConfig: {flag: field path}.
SSL_FLAGS = {"views": "views_augment"}


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from ..tasks.pretrain import pretrain

    pretrain(config_from_args(args), dataclass_from_args(SSLConfig, args, "ssl"))
    return 0


def register(sub: Any) -> None:
    """Add `foveal pretrain` to the CLI's subcommands."""
    p = sub.add_parser("pretrain", help="self-supervised pretraining (SimCLR, MAE) on images, labels unused; "
                                        "the run folder feeds `foveal train --pretrained`")
    p.add_argument("recipe", nargs="?", help="YAML recipe (data, model, optim, train sections)")
    add_dataclass_flags(p, SSLConfig, SSL_FLAGS, into="ssl")  # kept apart from the run's flags ('cfg:')
    add_config_flags(p)
    p.set_defaults(handler=_cmd_pretrain)
