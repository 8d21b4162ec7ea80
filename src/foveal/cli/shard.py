"""`foveal shard SRC DEST`: a folder, CSV manifest or named dataset written as shards (foveal.data.shard_write)."""

from __future__ import annotations

import argparse


def cmd_shard(args: argparse.Namespace) -> int:
    from ..config import DataConfig
    from ..data.shard_write import write_shards

    cfg = DataConfig(source=args.src, data_dir=args.data_dir, workers=args.workers)
    manifest = write_shards(args.src, args.dest, cfg, max_side=args.max_side, quality=args.quality,
                            shard_mb=args.shard_mb, overwrite=args.overwrite)
    for p in manifest["problems"][:20]:
        print(f"note: {p}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("shard", help="write a folder, CSV manifest or named dataset as shards (local or s3://)")
    sp.add_argument("src", help="dataset name, image folder or CSV manifest")
    sp.add_argument("dest", help="folder, or s3://bucket/prefix (endpoint and credentials from AWS_* variables)")
    sp.add_argument("--max-side", type=int, default=512, help="longer side of stored images in px; larger ones are "
                    "shrunk and re-encoded as JPEG (0: keep every size)")
    sp.add_argument("--quality", type=int, default=90, help="JPEG quality of re-encoded images")
    sp.add_argument("--shard-mb", type=float, default=64.0, help="target shard size in MB")
    sp.add_argument("--data-dir", help="folder with the official files of a named dataset")
    sp.add_argument("--workers", type=int, default=2, help="threads that read and re-encode images")
    sp.add_argument("--overwrite", action="store_true", help="replace shards already at DEST")
    sp.set_defaults(handler=cmd_shard)
