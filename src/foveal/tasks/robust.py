"""`foveal robust` as a library function: a trained model under corruptions, noise, occlusion and attacks.

`robust_to_folder` decides everything the command needs (device, channels-last, which images: a
class-spread subset, the unreadable ones skipped) and writes robustness.json with its plots, as
`evaluate_to_folder` does for `foveal eval`; the CLI only parses and prints.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import RobustConfig
from ..robustness.measure import check_config, evaluate_robustness, load_reference, spread_subset, write_robustness
from ..runtime.device import resolve_channels_last, resolve_device
from ..training.checkpoint import load_model
from .inference import eval_data


@dataclass
class RobustFiles:
    """What `robust_to_folder` measured (robustness.json's content), the files it wrote, the images it skipped."""

    result: dict[str, Any]
    files: list[Path]
    skipped: list[str]


def robust_to_folder(source: str | Path, cfg: RobustConfig = RobustConfig(), data: Optional[str] = None,
                     data_dir: Optional[str] = None, reference: Optional[str] = None,
                     out: Optional[str | Path] = None, log: Callable[[str], None] = print) -> RobustFiles:
    """Measure the model at `source` (run folder or weights file) on `cfg.split` of `data` (default: the run's
    own data) and write robustness.json + plots into `out` (default: the run folder, else the working folder).
    `reference`: a baseline run (with robustness.json) for corruption errors (CE, mCE)."""
    check_config(cfg)  # before loading anything: a typo should cost nothing
    device = resolve_device(cfg.device)
    model, card = load_model(source, device)
    cfg = dataclasses.replace(cfg, channels_last=resolve_channels_last(cfg.channels_last, device,
                                                                     card.preprocessing.img_size))
    bundle = eval_data(card, data, cfg.split, data_dir)
    (split, part), = bundle.splits.items()
    n = min(cfg.limit, len(part.labels)) if cfg.limit else len(part.labels)
    pick = spread_subset(part.labels, n, cfg.seed)  # not the first n: splits are often sorted by class
    ref = load_reference(reference) if reference else None
    images, kept, errors = part.images.load_readable(pick)  # a streamed split may hold unreadable files
    result = evaluate_robustness(model, card, images, part.labels[pick][kept], cfg, device, ref, reference or "",
                                 log)
    result["split"] = split
    folder = Path(out) if out else (Path(source) if Path(source).is_dir() else Path("."))
    return RobustFiles(result, write_robustness(folder, result), [str(e) for e in errors])
