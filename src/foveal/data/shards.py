"""Shards: a data set as tar files with a manifest, on a local disk or in S3-compatible object storage.

A shard location (a folder, or `s3://bucket/prefix`) holds:

- `manifest.json`: format and version, classes, channels, and each shard's file name, bytes, sha256 and
  image count, with the index's sha256;
- `index.csv`: one row per image: shard, offset and size of its bytes there, label, split, group, the
  original path, and the sha256 of the original file (byte-identical copies share it);
- `shard-000000.tar`, ...: webdataset's layout (`<key>.jpg|png` the image, `<key>.cls` the class index,
  `<key>.json` label, split, group and path), so webdataset, and tar itself, read the shards as they are.

Reading is by random access (an image is `size` bytes at `offset` of its shard) rather than by streaming
each shard in order as webdataset does: webdataset has no exact resume, and random access keeps foveal's
one global-batch sampler, so 1 and N processes see the same batches and a resumed run the same order
(BENCHMARKS.md, "Shards", says how the libraries compared). A remote shard is fetched whole on first use
into a local cache (`FOVEAL_SHARD_CACHE`, default ~/.cache/foveal/shards) and checked against its sha256
like a local one; a shard that fails the check is named, and its images are skipped like unreadable files,
alike on every rank. S3 endpoint and credentials come from the usual environment variables
(`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`), read by boto3.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

try:
    import fcntl
except ImportError:  # Windows: no lock; two processes may both fetch a shard, each atomically
    fcntl = None  # type: ignore[assignment]

from ..config import DataConfig
from ..io import sha256_file
from .bundle import DataBundle, Split
from .decode import DecodeError, load_image
from .images import FileImages, Index, _positions, fits_in_memory

FORMAT, VERSION = "foveal-shards", 1
MANIFEST, INDEX = "manifest.json", "index.csv"
INDEX_COLUMNS = ("shard", "offset", "size", "label", "split", "group", "path", "sha256")


def is_remote(root: str) -> bool:
    return str(root).startswith("s3://")


def is_shard_location(source: str) -> bool:
    """Whether `source` names shards: an s3:// URL, or a folder holding a foveal manifest."""
    return is_remote(source) or (Path(source).expanduser() / MANIFEST).is_file()


def split_url(url: str) -> tuple[str, str]:
    """'s3://bucket/a/b' -> ('bucket', 'a/b')."""
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"'{url}' names no bucket (expected s3://bucket/prefix)")
    return bucket, prefix.strip("/")


def s3_client() -> Any:
    """A boto3 S3 client configured from the environment (endpoint, credentials, region)."""
    try:
        import boto3
    except ImportError as e:
        raise ImportError("s3:// shard locations need boto3: pip install 'foveal[s3]'") from e
    return boto3.client("s3")


def _key(prefix: str, name: str) -> str:
    return f"{prefix}/{name}" if prefix else name


def cache_root() -> Path:
    return Path(os.environ.get("FOVEAL_SHARD_CACHE") or Path.home() / ".cache" / "foveal" / "shards")


_checked: dict[str, Optional[str]] = {}  # local shard path -> None (verified) or the error, once per process
_lock = threading.Lock()


@dataclass(frozen=True)
class ShardLocation:
    """Where shards live, and their expected checksums (shard name -> sha256)."""

    root: str
    checksums: tuple[tuple[str, str], ...] = ()

    def read_small(self, name: str) -> bytes:
        """The manifest or the index, read directly (no cache: they say what the cache must hold)."""
        if not is_remote(self.root):
            path = Path(self.root).expanduser() / name
            if not path.is_file():
                raise FileNotFoundError(f"shard location '{self.root}' has no {name}")
            return path.read_bytes()
        bucket, prefix = split_url(self.root)
        client = s3_client()
        try:
            return client.get_object(Bucket=bucket, Key=_key(prefix, name))["Body"].read()
        except client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"shard location '{self.root}' has no {name}") from None
        except Exception as e:  # botocore's errors: no endpoint, no bucket, no credentials
            raise ValueError(f"cannot read '{_key(self.root, name)}': {type(e).__name__}: {e}") from None

    def local_shard(self, name: str) -> Path:
        """The shard on this disk, verified against its sha256 once per process (remote ones fetched first);
        DecodeError naming the shard when it is missing or corrupt."""
        expected = dict(self.checksums).get(name)
        if is_remote(self.root):
            path = cache_root() / hashlib.sha1(self.root.encode()).hexdigest()[:16] / name
        else:
            path = Path(self.root).expanduser() / name
        with _lock:  # one fetch and one check per shard, whichever decoder thread asks first
            if str(path) not in _checked:
                _checked[str(path)] = self._fetch_and_check(path, name, expected)
            error = _checked[str(path)]
        if error:
            raise DecodeError(error)
        return path

    def _fetch_and_check(self, path: Path, name: str, expected: Optional[str]) -> Optional[str]:
        where = f"shard '{name}' of '{self.root}'"
        if is_remote(self.root):
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path.with_name(f".{name}.lock"), "w") as lock:
                if fcntl is not None:  # one process of the machine fetches; the other ranks wait, then find it
                    fcntl.flock(lock, fcntl.LOCK_EX)
                if path.is_file() and expected and sha256_file(path) == expected:
                    return None  # fetched before (by this machine's other rank, or an earlier run), and whole
                bucket, prefix = split_url(self.root)
                tmp = path.with_name(f".{name}.{os.getpid()}.part")
                try:
                    s3_client().download_file(bucket, _key(prefix, name), str(tmp))
                    os.replace(tmp, path)  # atomic: a reader never sees half a shard
                except Exception as e:
                    tmp.unlink(missing_ok=True)
                    return f"{where}: cannot fetch ({type(e).__name__}: {e}); its images are skipped"
        if not path.is_file():
            return f"{where}: missing; its images are skipped"
        if expected is not None:
            got = sha256_file(path)
            if got != expected:
                return f"{where}: corrupt (sha256 {got[:12]}..., the manifest says {expected[:12]}...); its images are skipped"
        return None


@dataclass(frozen=True)
class ShardImages(FileImages):
    """Images inside shards: `FileImages` (paths: the original file names, for messages and reports) whose
    bytes are read from (shard, offset, size) `refs` of a `ShardLocation`; `digests`: original sha256s."""

    location: Optional[ShardLocation] = None
    refs: tuple[tuple[str, int, int], ...] = ()
    digests: tuple[str, ...] = ()

    def __getitem__(self, idx: Index) -> "ShardImages":
        pos = _positions(idx, len(self))
        return dataclasses.replace(self, paths=tuple(self.paths[i] for i in pos), refs=tuple(self.refs[i] for i in pos),
                                   digests=tuple(self.digests[i] for i in pos))

    def cat(self, other: Any) -> "ShardImages":
        if not isinstance(other, ShardImages) or other.location != self.location:
            raise ValueError("cannot join images of different shard locations")
        return dataclasses.replace(self, paths=self.paths + other.paths, refs=self.refs + other.refs,
                                   digests=self.digests + other.digests)

    def read_bytes(self, i: int) -> bytes:
        shard, offset, size = self.refs[i]
        assert self.location is not None
        fd = os.open(self.location.local_shard(shard), os.O_RDONLY)
        try:
            data = os.pread(fd, size, offset)
        finally:
            os.close(fd)
        if len(data) != size:
            raise DecodeError(f"'{self.paths[i]}' (in shard '{shard}'): {len(data)} of {size} bytes (truncated shard)")
        return data

    def decode(self, i: int) -> torch.Tensor:
        data = self.read_bytes(i)
        return load_image(f"{self.paths[i]} (in shard '{self.refs[i][0]}')", self.size, self.chans, self.resize,
                          self.max_pixels, self.crop_pct, data=data)


def read_manifest(root: str) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """(manifest, index rows) of a shard location, the index checked against the manifest's sha256."""
    loc = ShardLocation(root)
    try:
        manifest = json.loads(loc.read_small(MANIFEST))
    except json.JSONDecodeError as e:
        raise ValueError(f"'{root}/{MANIFEST}' is not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT:
        raise ValueError(f"'{root}/{MANIFEST}' is not a foveal shard manifest (format {manifest.get('format')!r})")
    if manifest.get("version", 0) > VERSION:
        raise ValueError(f"'{root}' holds shards of format version {manifest['version']}; this foveal reads "
                         f"version {VERSION} (upgrade foveal)")
    raw = loc.read_small(INDEX)
    if hashlib.sha256(raw).hexdigest() != manifest.get("index_sha256"):
        raise ValueError(f"'{root}/{INDEX}' does not match the manifest's checksum (a partial upload, or edited)")
    rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8"))))
    return manifest, rows


def load_shards(source: str, cfg: DataConfig, img_size: int) -> DataBundle:
    """A shard location as a `DataBundle`: streamed from the shards (`ShardImages`), or decoded into memory
    when `data.in_memory` says so or auto finds it fits; unreadable images and shards named in `problems`."""
    root = source if is_remote(source) else str(Path(source).expanduser())
    manifest, rows = read_manifest(root)
    classes = list(manifest["classes"])
    index = {c: i for i, c in enumerate(classes)}
    loc = ShardLocation(root, tuple((s["file"], s["sha256"]) for s in manifest["shards"]))
    in_chans = cfg.in_chans or int(manifest.get("in_chans") or 3)
    stream = not fits_in_memory(len(rows), in_chans, img_size, cfg.in_memory)
    problems: list[str] = list(manifest.get("problems", []))
    splits: dict[str, Split] = {}
    for split in dict.fromkeys(r["split"] for r in rows):  # first-seen order
        mine = [r for r in rows if r["split"] == split]
        store = ShardImages(tuple(r["path"] for r in mine), in_chans, img_size, cfg.resize, cfg.max_pixels,
                            max(1, cfg.workers), cfg.crop_pct or 1.0, location=loc,
                            refs=tuple((r["shard"], int(r["offset"]), int(r["size"])) for r in mine),
                            digests=tuple(r["sha256"] for r in mine))
        labels = torch.tensor([index[r["label"]] for r in mine], dtype=torch.int64)
        groups = [r["group"] for r in mine] if manifest.get("has_groups") else None
        s = Split(store, labels, list(store.paths), groups, list(store.digests))
        if not stream:
            x, kept, errors = store.load_readable()
            problems += [f"skipped unreadable image {e}" for e in errors]
            s = dataclasses.replace(s.subset(kept), images=x)
        splits[split] = s
    if not any(len(s) for s in splits.values()):
        raise ValueError(f"{root}: no readable images ({len(problems)} problems:\n  " + "\n  ".join(problems[:20]) + ")")
    name = manifest.get("name") or Path(split_url(root)[1] if is_remote(root) else root).name
    return DataBundle(name, classes, splits, problems)

