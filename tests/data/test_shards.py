"""Shards (foveal.data.shards, shard_write): what `foveal shard` writes, what reading them gives back, and
object storage through a real S3-compatible server (moto's) started on 127.0.0.1."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from foveal.cli.main import main as foveal
from foveal.config import DataConfig
from foveal.data.decode import DecodeError
from foveal.data.shard_write import write_shards
from foveal.data.shards import ShardImages, load_shards, read_manifest
from foveal.data.sources import load_source
from foveal.io import load_tensors


def _photo(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    base = rng.integers(0, 255, (4, 4, 3)).astype(np.uint8)
    return Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """Two classes with a folder's quirks: a large JPEG, a PNG, a GIF named .jpg, a gray JPEG, an EXIF-rotated
    JPEG, a byte-identical copy, and a broken file."""
    root = tmp_path_factory.mktemp("shardsrc") / "photos"
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        d = root / c
        d.mkdir(parents=True)
        for i in range(10):
            _photo(rng, 60 + 3 * i, 40 + 2 * i).save(d / f"{i:02d}.jpg", quality=90)
    _photo(rng, 900, 600).save(root / "cat" / "big.jpg", quality=90)
    _photo(rng, 50, 50).save(root / "cat" / "p.png")
    _photo(rng, 40, 30).convert("P").save(root / "dog" / "gif_named.jpg", format="GIF")
    _photo(rng, 50, 40).convert("L").save(root / "dog" / "gray.jpg", quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    _photo(rng, 80, 40).save(root / "dog" / "rotated.jpg", quality=90, exif=exif)
    (root / "dog" / "copy.jpg").write_bytes((root / "cat" / "03.jpg").read_bytes())
    (root / "dog" / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


@pytest.fixture(scope="module")
def shards(folder: Path) -> Path:
    dest = folder.parent / "shards"
    write_shards(str(folder), str(dest), max_side=256, shard_mb=0.02, log=lambda m: None)
    return dest


def test_shard_writes_manifest_index_and_tars(folder, shards):
    manifest, rows = read_manifest(str(shards))
    assert manifest["classes"] == ["cat", "dog"] and manifest["images"] == len(rows) == 26
    assert manifest["skipped"] == 1 and any("zz_broken.jpg" in p for p in manifest["problems"])
    assert len(manifest["shards"]) >= 3  # 0.02 MB shards: several
    for s in manifest["shards"]:
        assert hashlib.sha256((shards / s["file"]).read_bytes()).hexdigest() == s["sha256"]
    by_name = {f"{Path(r['path']).parent.name}/{Path(r['path']).name}": r for r in rows}
    # small JPEG/PNG kept byte for byte; the large one shrunk to 256 on its longer side; the GIF re-encoded
    small = by_name["cat/03.jpg"]
    raw = (shards / small["shard"]).read_bytes()[int(small["offset"]):int(small["offset"]) + int(small["size"])]
    assert raw == (folder / "cat" / "03.jpg").read_bytes()
    big = by_name["cat/big.jpg"]
    raw = (shards / big["shard"]).read_bytes()[int(big["offset"]):int(big["offset"]) + int(big["size"])]
    assert Image.open(io.BytesIO(raw)).size == (256, 171)
    assert by_name["dog/copy.jpg"]["sha256"] == small["sha256"]  # original bytes' digest: copies share it
    assert by_name["dog/copy.jpg"]["label"] == "dog" and small["label"] == "cat"


def test_webdataset_reads_the_shards_as_they_are(shards):
    import webdataset as wds

    manifest, rows = read_manifest(str(shards))
    urls = [str(shards / s["file"]) for s in manifest["shards"]]
    seen = [(s["cls"], json.loads(s["json"])) for s in wds.WebDataset(urls, shardshuffle=False)]
    assert [int(c) for c, _ in seen] == [manifest["classes"].index(r["label"]) for r in rows]
    assert [m["path"] for _, m in seen] == [r["path"] for r in rows]


def test_shards_decode_like_the_folder(folder, shards, tmp_path):
    """Kept bytes decode to the folder's pixels; in memory and streamed from shards give the same images."""
    cfg = DataConfig(source=str(folder), in_memory=True, in_chans=3)
    a = load_source(cfg, 32).splits["all"]
    b = load_shards(str(shards), DataConfig(in_memory=True, in_chans=3), 32).splits["all"]
    s = load_shards(str(shards), DataConfig(in_memory=False, in_chans=3), 32).splits["all"]
    assert isinstance(s.images, ShardImages) and b.images.in_memory
    assert [Path(p).name for p in a.paths] == [Path(p).name for p in b.paths]
    assert torch.equal(b.images.load(), s.images.load()) and torch.equal(b.labels, s.labels)
    kept = [i for i, p in enumerate(a.paths) if Path(p).name not in ("big.jpg", "gif_named.jpg", "rotated.jpg")]  # re-encoded
    assert torch.equal(a.images.load()[kept], b.images.load()[kept])
    # a full-size copy (max side 0) decodes exactly as the folder, the large image too
    whole = tmp_path / "whole"
    write_shards(str(folder), str(whole), max_side=0, log=lambda m: None)
    c = load_shards(str(whole), DataConfig(in_memory=True, in_chans=3), 32).splits["all"]
    kept = [i for i, p in enumerate(a.paths) if Path(p).name not in ("gif_named.jpg", "rotated.jpg")]
    assert len(kept) == 24 and torch.equal(a.images.load()[kept], c.images.load()[kept])
    rot = a.paths.index(next(p for p in a.paths if p.endswith("rotated.jpg")))  # re-encoded upright: close
    assert (a.images.load()[rot].float() - c.images.load()[rot].float()).abs().mean() < 3


def test_copies_in_shards_stay_in_one_split(shards):
    from foveal.data.splits import make_splits

    bundle = make_splits(load_shards(str(shards), DataConfig(in_memory=False), 32), DataConfig(), seed=0)
    where = {p: k for k, s in bundle.splits.items() for p in s.paths if p.endswith(("cat/03.jpg", "dog/copy.jpg"))}
    assert len(where) == 2 and len(set(where.values())) == 1, where


def test_a_corrupt_shard_is_named_and_its_images_skipped(shards, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in shards.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    manifest, rows = read_manifest(str(bad))
    victim = manifest["shards"][1]
    data = bytearray((bad / victim["file"]).read_bytes())
    data[1000] ^= 0xFF
    (bad / victim["file"]).write_bytes(bytes(data))
    b = load_shards(str(bad), DataConfig(in_memory=True), 32)
    assert len(b.splits["all"]) == 26 - victim["count"]
    assert any(victim["file"] in p and "corrupt" in p for p in b.problems)
    s = load_shards(str(bad), DataConfig(in_memory=False), 32).splits["all"]
    k = next(i for i, r in enumerate(rows) if r["shard"] == victim["file"])
    with pytest.raises(DecodeError, match=victim["file"]):
        s.images.decode(k)


def test_csv_groups_and_named_datasets_are_kept(folder, tmp_path):
    man = tmp_path / "m.csv"
    files = sorted(p for p in folder.rglob("*.jpg") if "broken" not in p.name)
    with open(man, "w", newline="") as f:
        csv.writer(f).writerows([("path", "label", "split", "group")] +
                                [(str(p), p.parent.name, "test" if i % 4 == 0 else "train", f"site={i % 2}")
                                 for i, p in enumerate(files)])
    write_shards(str(man), str(tmp_path / "csv"), log=lambda m: None)
    b = load_shards(str(tmp_path / "csv"), DataConfig(in_memory=True), 32)
    assert set(b.splits) == {"train", "test"} and b.splits["test"].groups[0] == "site=0"
    src = load_source(DataConfig(source=str(man), in_memory=True), 32)
    assert torch.equal(src.splits["train"].labels, b.splits["train"].labels)

    write_shards("digits", str(tmp_path / "digits"), DataConfig(source="digits"), log=lambda m: None)
    d = load_shards(str(tmp_path / "digits"), DataConfig(in_memory=True), 8).splits["all"]
    ref = load_source(DataConfig(source="digits"), 8).splits["all"]
    assert torch.equal(d.images.load(), ref.images.load()) and torch.equal(d.labels, ref.labels)  # PNG: lossless


def test_clear_errors(folder, shards, tmp_path, capsys):
    with pytest.raises(ValueError, match="already holds shards"):
        write_shards(str(folder), str(shards), log=lambda m: None)
    with pytest.raises(ValueError, match="quality"):
        write_shards(str(folder), str(tmp_path / "q"), quality=0, log=lambda m: None)
    edited = tmp_path / "edited"
    edited.mkdir()
    for f in shards.iterdir():
        (edited / f.name).write_bytes(f.read_bytes())
    with open(edited / "index.csv", "a") as f:
        f.write("x\n")
    with pytest.raises(ValueError, match="index.csv' does not match"):
        load_shards(str(edited), DataConfig(), 32)
    assert foveal(["train", "--data", str(edited), "--epochs", "1"]) == 2
    assert "does not match the manifest" in capsys.readouterr().err


# ---- object storage: a real S3-compatible server on 127.0.0.1 ----------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3(monkeypatch, tmp_path):
    """moto's S3 server in a thread, the AWS_* variables pointing at it, a bucket, and a fresh shard cache."""
    pytest.importorskip("moto.server")
    import boto3
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    for k, v in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
                 "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "FOVEAL_SHARD_CACHE": str(tmp_path / "cache")}.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3").create_bucket(Bucket="data")
    yield boto3.client("s3")
    server.stop()


def test_shards_in_s3_train_as_local_ones(folder, shards, s3, tmp_path):
    from foveal.data import shards as shard_mod

    assert foveal(["shard", str(folder), "s3://data/photos", "--max-side", "256", "--shard-mb", "0.02"]) == 0
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="data", Prefix="photos/")["Contents"]}
    assert {"photos/manifest.json", "photos/index.csv", "photos/shard-000000.tar"} <= keys
    remote = load_shards("s3://data/photos", DataConfig(in_memory=True), 32).splits["all"]
    local = load_shards(str(shards), DataConfig(in_memory=True), 32).splits["all"]
    assert torch.equal(remote.images.load(), local.images.load()) and torch.equal(remote.labels, local.labels)
    assert len(list((tmp_path / "cache").rglob("shard-*.tar"))) == len(read_manifest(str(shards))[0]["shards"])

    flags = ["--model", "lenet5_modern", "--img-size", "24", "--epochs", "2", "--batch-size", "8", "--device", "cpu",
             "--train.progress", "false", "--data.in_memory", "false", "--out-dir", str(tmp_path / "runs")]
    shard_mod._checked.clear()  # a new process would start with no verified shards
    assert foveal(["train", "--data", "s3://data/photos", "--name", "s3", *flags]) == 0
    assert foveal(["train", "--data", str(shards), "--name", "local", *flags]) == 0
    a = load_tensors(tmp_path / "runs/s3/last.safetensors")[0]
    b = load_tensors(tmp_path / "runs/local/last.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_s3_errors_name_the_location(s3, capsys):
    with pytest.raises(FileNotFoundError, match="s3://data/nothing' has no manifest.json"):
        load_shards("s3://data/nothing", DataConfig(), 32)
    assert foveal(["train", "--data", "s3://missing-bucket/x", "--epochs", "1"]) == 2
    assert "s3://missing-bucket/x" in capsys.readouterr().err


def test_two_processes_skip_a_corrupt_shard_alike(folder, shards, tmp_path):
    """A shard that fails its checksum: every rank names it and skips its images (refilling its batches from
    readable ones), the job finishes in 2 processes, and rank 0 writes the shard's name into data_problems.json."""
    import os
    import subprocess
    import sys

    bad = tmp_path / "bad"
    bad.mkdir()
    for f in shards.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    victim = read_manifest(str(bad))[0]["shards"][0]
    data = bytearray((bad / victim["file"]).read_bytes())
    data[700] ^= 0xFF
    (bad / victim["file"]).write_bytes(bytes(data))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "foveal.cli.main", "train", "--data", str(bad), "--data.in_memory", "false", "--model", "lenet5_modern",
           "--img-size", "24", "--epochs", "1", "--batch-size", "8", "--device", "cpu", "--train.progress", "false",
           "--name", "ddp", "--out-dir", str(tmp_path / "runs")]
    res = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    problems = json.loads((tmp_path / "runs" / "ddp" / "data_problems.json").read_text())
    assert any(victim["file"] in p and "corrupt" in p for p in problems), problems
