"""`foveal shard SRC DEST`: write any source foveal reads (image folder, CSV manifest, named dataset) as shards
(the layout: `foveal.data.shards`), with labels, splits, groups and original paths kept.

Images are stored as they are when they are JPEG or PNG files no larger than `max_side` (no second lossy
encoding); others (larger, or GIF/BMP/TIFF/WebP, or a misnamed file) are decoded, turned upright (EXIF),
shrunk to `max_side` on their longer side and written as JPEG at `quality`, as FFCV stores its data
pre-resized. A named dataset's images (arrays, no files) are stored as PNG, lossless. Unreadable files are
skipped and listed in the manifest's `problems`. The tar files are written by webdataset's TarWriter; the
manifest is written last (atomically), so a location without one is never read as complete. An s3:// DEST
is written locally first, then uploaded, the manifest last.
"""

from __future__ import annotations

import csv
import hashlib
import io
import shutil
import tarfile
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
from PIL import Image

from ..config import DataConfig
from ..io import atomic_path, sha256_file, write_json
from .decode import DecodeError, _to_mode, open_image
from .shards import FORMAT, INDEX, INDEX_COLUMNS, MANIFEST, VERSION, _key, is_remote, s3_client, split_url

Sample = tuple[bytes, str, str, str, str, str]  # (image bytes, ext, label, split, group, original path)


def encode(data: bytes, name: str, max_side: int, quality: int) -> tuple[bytes, str, int]:
    """(stored bytes, extension, channels) of one file's bytes; DecodeError naming `name` if unreadable."""
    img = open_image(name, data=data)  # decoded and upright; raises DecodeError
    chans = 1 if img.mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F") else 3
    with Image.open(io.BytesIO(data)) as probe:  # the header again: the format, and whether EXIF turned it
        fmt, upright = probe.format, probe.getexif().get(0x0112, 1) in (1, None)
    if fmt in ("JPEG", "PNG") and upright and (not max_side or max(img.size) <= max_side):
        return data, "jpg" if fmt == "JPEG" else "png", chans
    img = _to_mode(img, chans)
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=quality)
    return out.getvalue(), "jpg", chans


def _png(a: np.ndarray) -> bytes:
    """(C, H, W) uint8 -> PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0)).save(out, format="PNG")
    return out.getvalue()


def source_samples(source: str, cfg: DataConfig, max_side: int, quality: int, problems: list[str]
                   ) -> tuple[list[str], Iterator[tuple[Optional[Sample], int, str]], int, bool]:
    """(classes, samples as (sample or None if unreadable, channels, sha256 of the original), count, has groups)."""
    from .sources import scan_csv_groups, scan_files

    manifest = Path(source).expanduser()
    if manifest.is_file() and manifest.suffix.lower() == ".csv":  # a manifest, read once with its group column
        scanned = scan_csv_groups(manifest)
    else:
        files = scan_files(source)  # a folder (no groups), or None for a named dataset
        scanned = (*files, None) if files is not None else None
    if scanned is not None:
        items, classes, found, groups = scanned
        problems += found

        def one(k: int) -> tuple[Optional[Sample], int, str]:
            path, label, split = items[k]
            try:
                data = Path(path).read_bytes()
            except OSError as e:
                problems.append(f"skipped unreadable image '{path}': {e}")
                return None, 0, ""
            digest = hashlib.sha256(data).hexdigest()
            try:
                stored, ext, chans = encode(data, str(path), max_side, quality)
            except DecodeError as e:
                problems.append(f"skipped unreadable image {e}")
                return None, 0, digest
            group = groups[k] if groups is not None else ""
            return (stored, ext, label, split, group, str(path)), chans, digest

        def in_order() -> Iterator[tuple[Optional[Sample], int, str]]:
            # threads (Pillow releases the GIL), in chunks so that only a chunk's bytes are held at once
            with ThreadPoolExecutor(max(1, cfg.workers)) as pool:
                for start in range(0, len(items), 256):
                    yield from pool.map(one, range(start, min(start + 256, len(items))))

        return classes, in_order(), len(items), groups is not None
    from dataclasses import replace

    from .check import native_size
    from .sources import load_source

    # a named dataset at its own size (as foveal check loads it), stored losslessly
    bundle = load_source(replace(cfg, source=source, in_memory=True), native_size(source) or 32)

    def arrays() -> Iterator[tuple[Optional[Sample], int, str]]:
        for split, s in bundle.splits.items():
            x = s.images.load().numpy()
            for i in range(len(s)):
                png = _png(x[i])
                label = bundle.classes[int(s.labels[i])]
                group = s.groups[i] if s.groups is not None else ""
                yield (png, "png", label, split, group, f"{bundle.name}/{split}/{i}"), x.shape[1], \
                    hashlib.sha256(x[i].tobytes()).hexdigest()

    has_groups = any(s.groups is not None for s in bundle.splits.values())
    return bundle.classes, arrays(), sum(len(s) for s in bundle.splits.values()), has_groups


def _write_tar(path: Path, members: list[tuple[str, Sample, int]]) -> list[tuple[int, int]]:
    """Write one shard with webdataset's TarWriter; (offset, size) of each member's image bytes."""
    import webdataset as wds

    with open(path, "wb") as f, wds.TarWriter(f) as sink:
        for key, (data, ext, label, split, group, orig), cls in members:
            sink.write({"__key__": key, ext: data, "cls": cls,
                        "json": {"label": label, "split": split, "group": group, "path": orig}})
    spans: dict[str, tuple[int, int]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, _, ext = m.name.partition(".")
            if ext in ("jpg", "png"):
                spans[key] = (m.offset_data, m.size)
    return [spans[key] for key, _, _ in members]


def write_shards(source: str, dest: str, cfg: Optional[DataConfig] = None, max_side: int = 512,
                 quality: int = 90, shard_mb: float = 64.0, overwrite: bool = False,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write `source` as shards at `dest` (a folder or s3://bucket/prefix); returns the manifest."""
    cfg = cfg or DataConfig()
    if not 1 <= quality <= 100:
        raise ValueError(f"--quality must be within 1..100, got {quality}")
    if max_side < 0:
        raise ValueError(f"--max-side must be 0 (keep sizes) or positive, got {max_side}")
    remote = is_remote(dest)
    if remote:
        split_url(dest)
        out = Path(tempfile.mkdtemp(prefix="foveal-shard-"))
    else:
        out = Path(dest).expanduser()
        if (out / MANIFEST).exists() and not overwrite:
            raise ValueError(f"'{out}' already holds shards ({MANIFEST}); pass --overwrite to replace them")
        out.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    classes, samples, total, has_groups = source_samples(source, cfg, max_side, quality, problems)
    cls_of = {c: i for i, c in enumerate(classes)}
    rows: list[dict[str, Any]] = []
    shards: list[dict[str, Any]] = []
    pending: list[tuple[str, Sample, int]] = []
    digests: list[str] = []
    size, chans_seen = 0, set()

    def flush() -> None:
        nonlocal pending, size, digests
        if not pending:
            return
        name = f"shard-{len(shards):06d}.tar"
        spans = _write_tar(out / name, pending)
        for (key, (_, _, label, split, group, orig), _), (offset, n), digest in zip(pending, spans, digests):
            rows.append({"shard": name, "offset": offset, "size": n, "label": label, "split": split,
                         "group": group, "path": orig, "sha256": digest})
        shards.append({"file": name, "bytes": (out / name).stat().st_size, "sha256": sha256_file(out / name),
                       "count": len(pending)})
        log(f"wrote {name}: {len(pending)} images, {shards[-1]['bytes'] / 1e6:.1f} MB")
        pending, size, digests = [], 0, []

    for k, (sample, chans, digest) in enumerate(samples):
        if sample is None:
            continue
        chans_seen.add(chans)
        pending.append((f"{k:09d}", sample, cls_of[sample[2]]))
        digests.append(digest)
        size += len(sample[0]) + 1536  # the image, its headers and the two small members
        if size >= shard_mb * 1e6:
            flush()
    flush()
    if not rows:
        raise ValueError(f"'{source}': no readable images to shard ({'; '.join(problems[:5])})")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=INDEX_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    index_bytes = text.getvalue().encode("utf-8")
    with atomic_path(out / INDEX) as tmp:
        tmp.write_bytes(index_bytes)
    manifest = {"format": FORMAT, "version": VERSION, "name": Path(str(source).rstrip("/")).stem,
                "classes": classes, "in_chans": 1 if chans_seen == {1} else 3, "images": len(rows),
                "skipped": total - len(rows), "has_groups": has_groups, "max_side": max_side, "quality": quality,
                "shards": shards, "index_sha256": hashlib.sha256(index_bytes).hexdigest(), "problems": problems}
    if remote:
        bucket, prefix = split_url(dest)
        client = s3_client()
        try:
            for name in [s["file"] for s in shards] + [INDEX]:
                client.upload_file(str(out / name), bucket, _key(prefix, name))
            write_json(out / MANIFEST, manifest)
            client.upload_file(str(out / MANIFEST), bucket, _key(prefix, MANIFEST))  # last: the location is complete
        except Exception as e:
            raise ValueError(f"cannot upload shards to '{dest}': {type(e).__name__}: {e}") from None
        finally:
            shutil.rmtree(out, ignore_errors=True)
    else:
        write_json(out / MANIFEST, manifest)
    log(f"{len(rows)} images in {len(shards)} shards at {dest}" + (f"; {total - len(rows)} skipped" if total > len(rows) else ""))
    return manifest
