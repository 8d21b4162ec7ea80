"""`foveal pretrain`: self-supervised pretraining (SimCLR, or MAE for ViTs) on unlabeled images.

Takes the same config flags as `foveal train` (data, model, optimizer, epochs...) plus the
SSL settings below; the run folder it writes is what `foveal train --pretrained RUN` takes.
"""

from __future__ import annotations

import argparse
from typing import Any

from .config_args import add_config_flags, config_from_args


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from ..tasks.pretrain import SSLConfig, pretrain

    cfg = config_from_args(args)
    ssl = SSLConfig(method=args.method, temperature=args.temperature, proj_hidden=args.proj_hidden,
                    proj_dim=args.proj_dim, mask_ratio=args.mask_ratio, knn_k=args.knn_k, knn_t=args.knn_t, knn_bank=args.knn_bank,
                    **({"views_augment": [v for v in args.views.split(",") if v]} if args.views else {}))
    pretrain(cfg, ssl)
    return 0


def register(sub: Any) -> None:
    """Add `foveal pretrain` to the CLI's subcommands."""
    from ..config import SSLConfig

    d = SSLConfig()
    p = sub.add_parser("pretrain", help="self-supervised pretraining (SimCLR, MAE) on images, labels unused; "
                                        "the run folder feeds `foveal train --pretrained`")
    p.add_argument("recipe", nargs="?", help="YAML recipe (data, model, optim, train sections)")
    p.add_argument("--method", default=d.method, choices=["simclr", "mae"], help="mae: vit_* models only")
    p.add_argument("--mask-ratio", type=float, default=d.mask_ratio, help="MAE: fraction of patches masked")
    p.add_argument("--temperature", type=float, default=d.temperature, help="NT-Xent temperature")
    p.add_argument("--proj-hidden", type=int, default=d.proj_hidden, help="projection MLP hidden width")
    p.add_argument("--proj-dim", type=int, default=d.proj_dim, help="projection output size")
    p.add_argument("--views", help=f"comma-separated augmentations of each view (default: {','.join(d.views_augment)})")
    p.add_argument("--knn-k", type=int, default=d.knn_k, help="neighbours of the k-NN monitor on the val split")
    p.add_argument("--knn-t", type=float, default=d.knn_t, help="temperature of the k-NN vote weights")
    p.add_argument("--knn-bank", type=int, default=d.knn_bank, help="max train images in the k-NN memory bank")
    add_config_flags(p)
    p.set_defaults(handler=_cmd_pretrain)
