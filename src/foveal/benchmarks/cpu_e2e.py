"""End-to-end CPU benchmark: whole `foveal` commands on generated photo-like JPEGs, timed as a user
times them (wall, and the user and sys CPU time of the child processes from `getrusage`).

Each command runs twice in the same session: with foveal's CPU allocator settings (glibc keeps
freed memory, foveal/malloc.py) and with today's glibc behaviour (FOVEAL_MALLOC=default), so the
ratio is measured on the same machine under the same load. Optionally a timm user's training
script (bench/peer_timm_train.py) runs the same recipe for comparison.

No torch import here: the commands run in child processes, so each pays its own start-up.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
from PIL import Image, ImageFilter


def write_photo_folder(root: Path, n: int = 400, classes: int = 2, seed: int = 0,
                       sizes: tuple[int, int] = (300, 500)) -> Path:
    """root/class_<k>/<i>.jpg: `n` random photo-like colour images of 300-500 px sides (JPEG quality 90).

    Each image is a few Gaussian blobs on a smooth background (a low-resolution noise field upscaled
    bicubically), with a texture over all of it: grey-level noise in cells of 256, 64, 16, 4 and 1 px, its
    amplitude falling with the cell size as natural images' spectra fall (roughly 1/f), so pixel statistics
    are near real photos' (std ~0.21 of the range, detail at every scale; tests/engine/test_cpu_e2e.py) and a
    network pretrained on ImageNet sees inputs it knows. (The first version was blurred colour fields with a pixel std
    under half of that: batch-norm running statistics carried over from ImageNet then mismatched after a short
    fine-tune and one tool's eval-mode accuracy fell to chance while another's did not.) Class k tints the
    blobs towards its own hue, so the task is learnable in a couple of epochs from ImageNet weights. Sizes
    and aspect ratios vary, so decoding and resizing cost what photos cost."""
    rng = np.random.default_rng(seed)
    tints = rng.uniform(0.2, 0.8, (classes, 3))
    for i in range(n):
        k = i % classes
        w, h = (int(v) for v in rng.integers(sizes[0], sizes[1] + 1, 2))
        low = rng.uniform(40, 215, (int(rng.integers(4, 12)), int(rng.integers(4, 12)), 3)).astype(np.uint8)
        img = np.asarray(Image.fromarray(low).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
        yy, xx = np.mgrid[0:h, 0:w]
        for _ in range(int(rng.integers(2, 5))):  # blobs in the class tint, at random places and radii
            cy, cx, r = rng.uniform(0.2, 0.8) * h, rng.uniform(0.2, 0.8) * w, rng.uniform(0.12, 0.3) * min(w, h)
            a = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))[..., None]  # (h, w, 1)
            img = img * (1 - a) + a * 255 * (tints[k] + rng.normal(0, 0.1, 3))
        texture = np.zeros((h, w), np.float32)
        for cell, amp in ((256, 40.0), (64, 26.0), (16, 16.0), (4, 10.0), (1, 6.0)):  # coarse to fine
            field = rng.normal(0, amp, (max(2, h // cell), max(2, w // cell))).astype(np.float32)
            texture += np.asarray(Image.fromarray(field, mode="F").resize((w, h), Image.Resampling.BICUBIC))
        img = img + texture[..., None] * rng.uniform(0.7, 1.3, 3).astype(np.float32)  # slightly coloured grain
        out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))
        d = root / f"class_{k}"
        d.mkdir(parents=True, exist_ok=True)
        out.save(d / f"{i:04d}.jpg", quality=90)
    return root


def _photo_part(args: tuple[str, int, int, int, tuple[int, int]]) -> None:
    write_photo_folder(Path(args[0]), n=args[1], classes=args[2], seed=args[3], sizes=args[4])


def write_photo_folders(root: Path, n: int, classes: int = 2, sizes: tuple[int, int] = (300, 500),
                        procs: int = 2) -> Path:
    """`write_photo_folder` by `procs` processes (seeds 0..procs-1), merged into root/class_<k>/<part>_<i>.jpg."""
    from concurrent.futures import ProcessPoolExecutor
    import shutil

    parts = [(str(root / f".part{j}"), n // procs + (j < n % procs), classes, j, sizes) for j in range(procs)]
    with ProcessPoolExecutor(procs) as pool:
        list(pool.map(_photo_part, parts))
    for j, (part, *_) in enumerate(parts):
        for f in sorted(Path(part).rglob("*.jpg")):
            dest = root / f.parent.name / f"{j:02d}_{f.name}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            f.rename(dest)
        shutil.rmtree(part, ignore_errors=True)  # a part of 0 images wrote no folder
    return root


def time_command(argv: Sequence[str], env: Optional[dict[str, str]] = None, cwd: Optional[Path] = None,
                 timeout: float = 1200) -> dict[str, Any]:
    """Run `argv` to completion; wall seconds, and the user/sys CPU seconds and peak RSS of it and its
    descendants (loader workers included: `wait4` reports the child with its own reaped children).
    A command still running after `timeout` seconds is killed and raises TimeoutError naming it."""
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(list(argv), env={**os.environ, **(env or {})}, cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT, text=True)
        timer = threading.Timer(timeout, proc.kill)  # wait4 has no timeout of its own
        timer.start()
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
        out.seek(0)
        text = out.read()
    if wall >= timeout and proc.returncode < 0:
        raise TimeoutError(f"{' '.join(argv)} still ran after {timeout:g} s and was killed:\n{text[-3000:]}")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{text[-3000:]}")
    user, sys_ = ru.ru_utime, ru.ru_stime
    return {"wall_s": round(wall, 2), "user_s": round(user, 2), "sys_s": round(sys_, 2),
            "sys_over_user": round(sys_ / user, 3) if user else None,
            "max_rss_gb": round(ru.ru_maxrss / 2**20, 2),  # KiB -> GiB, the largest process
            "output_tail": text[-800:]}


def foveal_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "foveal.cli.main", *args]


def compare_malloc(name: str, argv_for: Callable[[str], list[str]], cwd: Path,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """`argv_for(mode)` with FOVEAL_MALLOC=default (today's glibc behaviour) and =keep, one after the other."""
    row: dict[str, Any] = {"command": " ".join(argv_for("keep")[3:])}
    for mode in ("default", "keep"):  # today's behaviour first: any file-cache warm-up favours it
        r = time_command(argv_for(mode), {"FOVEAL_MALLOC": mode}, cwd)
        row[mode] = r
        log(f"{name} FOVEAL_MALLOC={mode}: wall {r['wall_s']} s, user {r['user_s']} s, sys {r['sys_s']} s, "
            f"max RSS {r['max_rss_gb']} GiB")
    row["wall_speedup"] = round(row["default"]["wall_s"] / row["keep"]["wall_s"], 2)
    row["cpu_speedup"] = round((row["default"]["user_s"] + row["default"]["sys_s"])
                               / (row["keep"]["user_s"] + row["keep"]["sys_s"]), 2)
    return row


def run_cpu_e2e(work: Path, images: int = 400, epochs: int = 1, robust_images: int = 49,
                model: str = "timm/tf_efficientnet_lite0", batch_size: int = 32, img_size: int = 224,
                log: Callable[[str], None] = print, pretrained: Optional[str] = None,
                parts: Sequence[str] = ("train", "robust")) -> dict[str, Any]:
    """Generate the photos, then time `foveal train` and `foveal robust` with and without the allocator
    settings. The robust runs attack the model of the `keep` training run; their robustness.json must agree.

    With `pretrained` (a weights file or name), the issue's two training commands: the default fine-tune
    from those weights (`train`), and a one-epoch linear probe (`train_linear`, `--model.finetune linear`);
    without, `train` starts from random weights. `parts`: 'train' and/or 'robust' (which needs 'train')."""
    work.mkdir(parents=True, exist_ok=True)
    photos = work / "photos"
    if not photos.is_dir():
        write_photo_folder(photos, images)
    out: dict[str, Any] = {"images": images, "epochs": epochs, "robust_images": robust_images, "model": model,
                           "batch_size": batch_size, "img_size": img_size, "pretrained": pretrained}
    weights = ["--model.pretrained", pretrained] if pretrained else []

    def train(tag: str, epochs: int, *extra: str) -> Callable[[str], list[str]]:
        return lambda mode: foveal_argv(
            "train", "--data.source", str(photos), "--model.name", model, "--data.img_size", str(img_size),
            "--train.batch_size", str(batch_size), "--train.epochs", str(epochs), "--train.device", "cpu",
            "--train.progress", "false", "--train.name", f"{tag}-{mode}", *weights, *extra)

    out["train"] = compare_malloc("train", train("e2e", epochs), work, log)
    if pretrained:
        out["train_linear"] = compare_malloc("train_linear", train("e2e-linear", 1, "--model.finetune", "linear"),
                                             work, log)
    if "robust" not in parts:
        return out
    run = work / "runs" / "e2e-keep"
    n = str(robust_images)
    out["robust"] = compare_malloc("robust", lambda mode: foveal_argv(
        "robust", str(run), "--limit", n, "--attack-limit", n, "--severities", "3", "--pgd-steps", "10",
        "--eps", "0,0.004,0.016", "--batch-size", n, "--device", "cpu", "--out", str(work / f"robust-{mode}")),
        work, log)
    a, b = ((work / f"robust-{m}" / "robustness.json").read_text() for m in ("default", "keep"))
    out["robust"]["same_results"] = a == b
    return out


def split_photo_folder(src: Path, dst: Path, fractions: tuple[float, float] = (0.7, 0.1)) -> Path:
    """dst/{train,val,test}/class_k/: the photos of `src` (hard links), every class cut 70/10/20 in file order,
    so foveal and the peer read the very same split."""
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        files = sorted(cls.iterdir())
        a, b = round(len(files) * fractions[0]), round(len(files) * sum(fractions))  # not int(): 0.7 + 0.1 < 0.8
        for split, part in (("train", files[:a]), ("val", files[a:b]), ("test", files[b:])):
            (dst / split / cls.name).mkdir(parents=True, exist_ok=True)
            for f in part:
                target = dst / split / cls.name / f.name
                if not target.exists():
                    os.link(f, target)
    return dst


def compare_peer(work: Path, pretrained: Optional[str], images: int = 400, epochs: int = 2, batch_size: int = 32,
                 model: str = "timm/tf_efficientnet_lite0", rounds: int = 1, lr: float = 5e-4,
                 log: Callable[[str], None] = print) -> dict[str, Any]:
    """`foveal train` against bench/peer_timm_train.py (a timm user's script) on the same split of the generated
    photos, with the same recipe: full fine-tune from `pretrained`, AdamW at `lr` / wd 5e-4 on weights, cosine with
    one warm-up epoch, batch 32, RandomResizedCrop (scale 0.35-1) + flip, the weights' eval transform. Whole
    commands, alternating, `rounds` times each, round r with seed r on both sides; wall, user and sys seconds
    and test accuracy, and each tool's mean test accuracy over the rounds (80 test images a round: one image is
    1.25 points, so the seeds' mean is what compares)."""
    import json

    photos = work / "photos"
    if not photos.is_dir():
        write_photo_folder(photos, images)
    split = split_photo_folder(photos, work / "photos-split")
    peer_script = Path(__file__).resolve().parents[3] / "bench" / "peer_timm_train.py"
    if not peer_script.is_file():
        raise FileNotFoundError(f"{peer_script}: the peer script ships in the repository's bench/ folder")
    rows: dict[str, list[dict[str, Any]]] = {"foveal": [], "timm": []}
    for r in range(rounds):
        name = f"peer-foveal-{r}"
        fov = foveal_argv("train", "--data.source", str(split), "--model.name", model, "--train.epochs", str(epochs),
                          "--train.batch_size", str(batch_size), "--model.finetune", "full", "--optim.layer_decay",
                          "1.0", "--data.augment", "rrc,flip", "--optim.lr", str(lr), "--train.device", "cpu",
                          "--train.progress", "false",
                          "--train.name", name, "--train.seed", str(r),
                          *(["--model.pretrained", pretrained] if pretrained else []))
        res = time_command(fov, cwd=work)
        res["test_acc"] = json.loads((work / "runs" / name / "test.json").read_text())["accuracy"]
        rows["foveal"].append(res)
        out_json = work / f"peer-timm-{r}.json"
        peer = [sys.executable, str(peer_script), "--data", str(split), "--model", model.removeprefix("timm/"),
                "--epochs", str(epochs), "--batch-size", str(batch_size), "--lr", str(lr), "--out", str(out_json),
                "--seed", str(r), *(["--pretrained", pretrained] if pretrained else [])]
        res = time_command(peer, cwd=work)
        res["test_acc"] = json.loads(out_json.read_text())["test_acc"]
        rows["timm"].append(res)
        for k in rows:
            x = rows[k][-1]
            log(f"peer round {r} {k}: wall {x['wall_s']} s, user {x['user_s']} s, sys {x['sys_s']} s, "
                f"test acc {x['test_acc']:.4f}")
    med = {k: statistics.median(x["wall_s"] for x in v) for k, v in rows.items()}  # an even count: the mean of two
    acc = {k: round(statistics.mean(x["test_acc"] for x in v), 4) for k, v in rows.items()}
    return {"lr": lr, "rounds": rows, "wall_speedup_vs_timm": round(med["timm"] / med["foveal"], 2),
            "mean_test_acc": acc, "acc_gap_points": round(100 * (acc["foveal"] - acc["timm"]), 2)}
