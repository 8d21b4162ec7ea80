"""Embeddings of a trained (or pretrained) model: the pre-logit features of every image of a
split, saved to files, and a 2-D map of them (PCA or t-SNE) for the report.

`foveal embed RUN [DATA]` writes into the output folder (default: the run folder):

- ``embeddings.npy``: (N, D) float32, ``forward_head(forward_features(x), pre_logits=True)`` of
  the model contract, in the order of the split;
- ``embeddings.csv``: one row per image (index, path or '', label index, class name);
- ``embedding_map.json``: the 2-D coordinates, labels, class names and how they were made;
  ``foveal report`` / ``report.html`` draw it when it sits in the run folder;
- ``embedding_map.png``: the same map as a scatter plot.

Works for classifiers (run folders with classes) and for `foveal pretrain` runs (backbone
only): those are embedded on the labeled data they were pretrained on, or on ``DATA``.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np
import torch

from ..io import atomic_path, read_result_json, write_json, write_text
from ..training.checkpoint import load_model
from ..runtime.device import resolve_device

MAP_FILE = "embedding_map.json"
MAX_TSNE = 5000  # t-SNE is O(N^2) in memory on CPU; larger splits are mapped on a seeded subset


@dataclass
class EmbedResult:
    out_dir: Path
    embeddings: np.ndarray  # (N, D)
    labels: np.ndarray  # (N,)
    classes: list[str]
    coords: np.ndarray  # (M, 2): the mapped points (M = N, or MAX_TSNE for a large t-SNE)
    map_index: np.ndarray  # (M,) indices of the mapped points into the N embeddings


@torch.no_grad()
def embed_split(model: torch.nn.Module, images: Any, mean: list[float], std: list[float], device: torch.device,
                batch_size: int | str = "auto") -> np.ndarray:
    """(N, D) float32 pre-logit features of uint8 (N, C, H, W) images (a tensor or streamed files);
    batch_size 'auto' is sized by memory (foveal.batching)."""
    from ..batching import resolve_batch_size
    from ..data.bundle import Split
    from ..data.stream import make_loader

    model.eval()
    split = Split(images, torch.zeros(len(images), dtype=torch.long))
    out = []
    batch_size = resolve_batch_size(batch_size, model, tuple(images.shape[1:]), device)
    for x, _ in make_loader(split, batch_size, device, mean, std):
        out.append(model.forward_head(model.forward_features(x), pre_logits=True).float().flatten(1).cpu())
    feats = torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)
    if len(feats) != len(images):
        raise ValueError(f"{len(images) - len(feats)} of {len(images)} images could not be decoded; "
                         "run `foveal check` on the data, fix or remove them, then embed again")
    return feats


def map_2d(emb: np.ndarray, method: Literal["pca", "tsne"] = "pca", seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """2-D coordinates of `emb` (scikit-learn's PCA or t-SNE), the indices mapped, and details."""
    if len(emb) < 3:
        raise ValueError(f"a 2-D map needs at least 3 images, got {len(emb)}")
    idx = np.arange(len(emb))
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed).fit(emb)
        return pca.transform(emb), idx, {"explained_variance_ratio": pca.explained_variance_ratio_.tolist()}
    if method == "tsne":
        from sklearn.manifold import TSNE

        if len(emb) > MAX_TSNE:
            idx = np.sort(np.random.default_rng(seed).choice(len(emb), MAX_TSNE, replace=False))
        perplexity = float(min(30.0, (len(idx) - 1) / 3))
        coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(emb[idx])
        return coords, idx, {"perplexity": perplexity, "points": int(len(idx))}
    raise ValueError(f"map method '{method}' is not one of pca, tsne")


def embed_run(source: str | Path, data: Optional[str] = None, split: str = "test", out: Optional[str | Path] = None,
              method: Literal["pca", "tsne"] = "pca", device: str = "auto", batch_size: int | str = "auto",
              data_dir: Optional[str] = None) -> EmbedResult:
    """Embed a split with a trained model and write the files listed in the module docstring."""
    dev = resolve_device(device)
    model, card = load_model(source, dev)
    src = Path(source)
    out_dir = Path(out) if out else (src if src.is_dir() else src.parent)
    from .inference import eval_data

    # A pretrain run (backbone only, no classes) keeps the classes of the data it embeds.
    bundle = eval_data(card, data, split, data_dir)
    (name, part), = bundle.splits.items()
    emb = embed_split(model, part.images, card.preprocessing.mean, card.preprocessing.std, dev, batch_size)
    labels = part.labels.numpy()
    coords, idx, details = map_2d(emb, method, seed=0)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "embeddings.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, emb.astype(np.float32))
    rows = io.StringIO()
    w = csv.writer(rows)
    w.writerow(["index", "path", "label", "class"])
    paths = part.paths or [""] * len(labels)
    for i, (p, y) in enumerate(zip(paths, labels.tolist())):
        w.writerow([i, p, y, bundle.classes[y]])
    write_text(out_dir / "embeddings.csv", rows.getvalue())
    info = {"method": method, "split": name, "data": data or card.data_source,
            "model": card.model, "dim": int(emb.shape[1]), "images": int(len(emb)), **details,
            "classes": bundle.classes, "index": idx.tolist(), "labels": labels[idx].tolist(),
            "coords": np.round(coords, 5).tolist()}
    write_json(out_dir / MAP_FILE, info)
    from ..report.plots import embedding_scatter

    with atomic_path(out_dir / "embedding_map.png") as tmp:
        tmp.write_bytes(embedding_scatter(info))
    return EmbedResult(out_dir, emb, labels, bundle.classes, coords, idx)


def read_embedding_map(run_dir: Path) -> Optional[dict[str, Any]]:
    """embedding_map.json of a run folder, or None; a broken or incomplete file is an error naming it."""
    path = Path(run_dir) / MAP_FILE
    info = read_result_json(path, "`foveal embed`")
    missing = [k for k in ("coords", "labels", "classes", "method") if info is not None and k not in info]
    if missing:
        raise ValueError(f"'{path}' lacks {', '.join(missing)}; run `foveal embed` again")
    return info
