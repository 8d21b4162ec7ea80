"""Standard benchmarks in their official file formats, MedMNIST `.npz` files, and numpy arrays.

MNIST, Fashion-MNIST and KMNIST are read from their idx files (`.gz` or unpacked), CIFAR-10/100
from their python pickle batches, MedMNIST from `.npz`. Files are looked for in `data.data_dir`,
then in `data_dir/<name>/` (and torchvision's own folder names, so an existing torchvision download
works). With `data.download` the official files are fetched through torchvision's checksum-verified
downloader; without it a missing file is an error naming the files and the folders searched.

Each loader returns the official 'train' and 'test' splits; `make_splits` carves 'val' out of
'train' with the seeded stratified split.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch

from ..config import DataConfig
from .arrays import to_images_u8
from .bundle import DATASETS, DataBundle, Split
from .images import resize_u8

IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

# name -> (torchvision class holding mirrors + MD5s, folder names to search, class names)
IDX_DATASETS: dict[str, tuple[str, tuple[str, ...], list[str]]] = {
    "mnist": ("MNIST", ("mnist", "MNIST/raw"), [str(i) for i in range(10)]),
    "fashion-mnist": ("FashionMNIST", ("fashion-mnist", "fashion_mnist", "fashionmnist", "FashionMNIST/raw"),
                      ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                       "Ankle boot"]),
    "kmnist": ("KMNIST", ("kmnist", "KMNIST/raw"), ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]),
}


class DatasetFilesMissing(FileNotFoundError):
    """A named dataset's files are not where we looked; the message lists files, folders and the fix."""


def candidate_dirs(cfg: DataConfig, folders: Sequence[str]) -> list[Path]:
    """data_dir itself, then data_dir/<folder> for each known folder name."""
    if not cfg.data_dir:
        return []
    root = Path(cfg.data_dir).expanduser()
    return [root] + [root / f for f in folders]


def _missing(name: str, files: Sequence[str], dirs: Sequence[Path]) -> DatasetFilesMissing:
    where = ", ".join(f"'{d}'" for d in dirs) if dirs else "nowhere: data.data_dir is not set"
    return DatasetFilesMissing(
        f"{name}: files {', '.join(files)} not found (looked in {where}); pass --data-dir pointing at the folder "
        f"that holds them, or add --download to fetch the official, checksum-verified files into it")


def find_files(name: str, files: Sequence[str], dirs: Sequence[Path], gz_ok: bool = False) -> Optional[list[Path]]:
    """The first folder of `dirs` holding every file (or its `.gz`); None when none does."""
    for d in dirs:
        found = []
        for f in files:
            options = [d / f, d / f"{f}.gz"] if gz_ok else [d / f]
            hit = next((p for p in options if p.is_file()), None)
            if hit is None:
                break
            found.append(hit)
        else:
            return found
    return None


# ---- idx files (MNIST family) ------------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """Parse an idx file (LeCun's format: magic, dims, big-endian sizes, raw data), gzipped or not.

    Written by hand (15 lines) because torchvision's reader needs the files unpacked into its own
    `raw/` layout, while users hold the `.gz` files as published.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"'{path}': cannot read idx file ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"'{path}': not an idx file of unsigned bytes (bad magic number {data[:4]!r})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"'{path}': header declares shape {shape} but holds {body.size} bytes (truncated?)")
    return body.reshape(shape)


def _download_idx(name: str, tv_class: str, root: Path) -> None:
    """Fetch the four idx .gz files, MD5-checked, with torchvision's mirrors and checksums."""
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import download_url

    cls = getattr(tvd, tv_class)
    root.mkdir(parents=True, exist_ok=True)
    for filename, md5 in cls.resources:
        if (root / filename).is_file():
            continue
        errors = []
        for mirror in cls.mirrors:
            try:
                download_url(f"{mirror}{filename}", root, filename, md5)
                break
            except Exception as e:  # network errors come in many types; report them all
                errors.append(f"{mirror}: {e}")
        else:
            raise DatasetFilesMissing(f"{name}: could not download {filename} into '{root}' "
                                      f"({'; '.join(errors)}); are you offline?")


def load_idx_dataset(name: str, cfg: DataConfig, img_size: int) -> DataBundle:
    tv_class, folders, classes = IDX_DATASETS[name]
    dirs = candidate_dirs(cfg, folders)
    names = [f for pair in IDX_FILES.values() for f in pair]
    found = find_files(name, names, dirs, gz_ok=True)
    if found is None and cfg.download:
        root = Path(cfg.data_dir or "data").expanduser() / folders[0]
        _download_idx(name, tv_class, root)
        dirs, found = [root], find_files(name, names, [root], gz_ok=True)
    if found is None:
        raise _missing(name, [f"{f}.gz" for f in names], dirs)
    splits = {}
    for k, split in enumerate(IDX_FILES):
        images, labels = read_idx(found[2 * k]), read_idx(found[2 * k + 1])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(f"{name}: '{found[2 * k]}' {images.shape} and '{found[2 * k + 1]}' {labels.shape} "
                             "are not (N, H, W) images with N labels")
        x = resize_u8(torch.from_numpy(images.copy())[:, None], img_size)  # (N, 1, H, W)
        splits[split] = Split(x, torch.from_numpy(labels.astype(np.int64)))
    return DataBundle(name, list(classes), splits)


def _register_idx(name: str) -> None:
    DATASETS.add(name, lambda cfg, img_size: load_idx_dataset(name, cfg, img_size), native_size=28)


for _name in IDX_DATASETS:
    _register_idx(_name)


# ---- Colored MNIST (Arjovsky et al. 2019) -----------------------------------------------------

COLORED_MNIST_CLASSES = ["0-4", "5-9"]
COLOURS = ["red", "green"]  # channel 0 / channel 1 holds the digit
# (first image, end, P(colour != label)) of each environment, in MNIST's training-file order:
# two training environments of 25k images and the test environment of the last 10k.
COLORED_MNIST_ENVS = ((0, 25_000, 0.2), (25_000, 50_000, 0.1), (50_000, 60_000, 0.9))
COLORED_MNIST_SEED = 0  # the label noise and colours are part of the dataset: the same for every run


def load_colored_mnist(cfg: DataConfig, img_size: int) -> DataBundle:
    """Colored MNIST: a spurious cue (colour) that predicts the label better than the shape in
    training (80-90%) and is reversed at test (10%), while the shape gives 75% everywhere.

    As Arjovsky et al.: 14x14 (every second pixel), label = (digit >= 5) flipped w.p. 0.25,
    colour = label flipped w.p. 0.2 / 0.1 / 0.9 per environment, the digit drawn in channel
    `colour` of 2. Splits: 'train' (the two training environments) and 'test'; group of each
    image 'label=<0-4|5-9>|colour=<red|green>', for per-group metrics and mitigation.
    """
    _, folders, _ = IDX_DATASETS["mnist"]
    dirs = candidate_dirs(cfg, folders)
    names = list(IDX_FILES["train"])
    found = find_files("colored-mnist", names, dirs, gz_ok=True)
    if found is None and cfg.download:
        root = Path(cfg.data_dir or "data").expanduser() / folders[0]
        _download_idx("mnist", "MNIST", root)
        found = find_files("colored-mnist", names, [root], gz_ok=True)
    if found is None:
        raise _missing("colored-mnist (built from MNIST's training files)", [f"{f}.gz" for f in names], dirs)
    digits = torch.from_numpy(read_idx(found[1]).astype(np.int64))
    N = COLORED_MNIST_ENVS[-1][1]
    if len(digits) != N:
        raise ValueError(f"colored-mnist: '{found[1]}' holds {len(digits)} labels, expected MNIST's {N}")
    g = torch.Generator().manual_seed(COLORED_MNIST_SEED)
    y = (digits >= 5).long() ^ (torch.rand(N, generator=g) < 0.25).long()  # (N,) 25% label noise
    flip = torch.cat([torch.full((b - a,), p) for a, b, p in COLORED_MNIST_ENVS])  # (N,) P(colour != label)
    colour = y ^ (torch.rand(N, generator=g) < flip).long()
    gray = torch.from_numpy(read_idx(found[0])[:, ::2, ::2].copy())  # (N, 14, 14)
    x = torch.zeros(N, 2, 14, 14, dtype=torch.uint8)
    x[torch.arange(N), colour] = gray
    x = resize_u8(x, img_size)
    groups = [f"label={COLORED_MNIST_CLASSES[a]}|colour={COLOURS[c]}" for a, c in zip(y.tolist(), colour.tolist())]
    cut = COLORED_MNIST_ENVS[1][1]
    splits = {"train": Split(x[:cut], y[:cut], None, groups[:cut]), "test": Split(x[cut:], y[cut:], None, groups[cut:])}
    return DataBundle("colored-mnist", list(COLORED_MNIST_CLASSES), splits)


DATASETS.add("colored-mnist", load_colored_mnist, native_size=14)


# ---- CIFAR python batches ----------------------------------------------------------------------

class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR's official files are pickles, and `pickle.load` on a file from the internet can run
    any code. This unpickler resolves only what those batches hold (dicts, lists, bytes and numpy
    arrays) and refuses every other global by name, so a tampered file cannot execute anything."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load global '{module}.{name}' (only numpy arrays are allowed)")


def safe_unpickle(path: Path) -> Any:
    """Load a CIFAR-style pickle with `_NumpyOnlyUnpickler`; errors name the file."""
    try:
        with open(path, "rb") as f:
            return _NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise ValueError(f"'{path}': not a valid CIFAR batch ({e})") from None


def _key(d: dict, key: str) -> Any:
    """CIFAR dicts have bytes keys (pickled by Python 2); accept str keys too."""
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise KeyError(key)


CIFAR = {  # name -> (torchvision class, folder names, batch files per split, meta file, names key, labels key)
    "cifar10": ("CIFAR10", ("cifar-10-batches-py", "cifar10/cifar-10-batches-py", "cifar10", "cifar-10"),
                {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]},
                "batches.meta", "label_names", "labels"),
    "cifar100": ("CIFAR100", ("cifar-100-python", "cifar100/cifar-100-python", "cifar100", "cifar-100"),
                 {"train": ["train"], "test": ["test"]}, "meta", "fine_label_names", "fine_labels"),
}


def _download_cifar(name: str, tv_class: str, root: Path) -> None:
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import download_and_extract_archive

    cls = getattr(tvd, tv_class)
    try:
        download_and_extract_archive(cls.url, root, filename=cls.filename, md5=cls.tgz_md5)
    except Exception as e:
        raise DatasetFilesMissing(f"{name}: could not download {cls.url} into '{root}' ({e}); are you offline?") from None


def load_cifar(name: str, cfg: DataConfig, img_size: int) -> DataBundle:
    tv_class, folders, batches, meta_file, names_key, labels_key = CIFAR[name]
    files = [meta_file] + [f for fs in batches.values() for f in fs]
    dirs = candidate_dirs(cfg, folders)
    found = find_files(name, files, dirs)
    if found is None and cfg.download:
        root = Path(cfg.data_dir or "data").expanduser()
        _download_cifar(name, tv_class, root)
        dirs = [root / folders[0]]
        found = find_files(name, files, dirs)
    if found is None:
        raise _missing(name, files, dirs)
    folder = found[0].parent
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in _key(safe_unpickle(found[0]), names_key)]
    splits = {}
    for split, fs in batches.items():
        xs, ys = [], []
        for f in fs:
            d = safe_unpickle(folder / f)
            data = np.asarray(_key(d, "data"), dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise ValueError(f"'{folder / f}': 'data' has shape {data.shape}, expected (N, 3072)")
            xs.append(data.reshape(-1, 3, 32, 32))
            ys.append(np.asarray(_key(d, labels_key), dtype=np.int64))
        x = resize_u8(torch.from_numpy(np.concatenate(xs)), img_size)
        splits[split] = Split(x, torch.from_numpy(np.concatenate(ys)))
    return DataBundle(name, classes, splits)


def _register_cifar(name: str) -> None:
    DATASETS.add(name, lambda cfg, img_size: load_cifar(name, cfg, img_size), native_size=32)


for _name in CIFAR:
    _register_cifar(_name)


# ---- MedMNIST .npz -----------------------------------------------------------------------------

MEDMNIST = ("pathmnist", "dermamnist", "octmnist", "pneumoniamnist", "retinamnist", "breastmnist", "bloodmnist",
            "tissuemnist", "organamnist", "organcmnist", "organsmnist")  # single-label 2D sets (not chestmnist)


def load_npz(path: Path, img_size: int, name: Optional[str] = None) -> DataBundle:
    """A MedMNIST-style `.npz` with {train,val,test}_images and _labels; read without pickle."""
    try:
        z = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ValueError(f"'{path}': not a readable .npz file ({e})") from None
    splits: dict[str, Split] = {}
    with z:
        for split in ("train", "val", "test"):
            if f"{split}_images" not in z:
                continue
            x, y = z[f"{split}_images"], z[f"{split}_labels"] if f"{split}_labels" in z else None
            if y is None:
                raise ValueError(f"'{path}': has {split}_images but no {split}_labels")
            if y.ndim == 2 and y.shape[1] > 1:
                raise ValueError(f"'{path}': {split}_labels has shape {y.shape}: multi-label data is not supported")
            xt = images_to_tensor(x, f"'{path}' {split}_images")
            splits[split] = Split(resize_u8(xt, img_size), torch.from_numpy(y.reshape(-1).astype(np.int64)))
    if "train" not in splits:
        raise ValueError(f"'{path}': no 'train_images' array (keys: {', '.join(np.load(path).files)})")
    k = int(max(int(s.labels.max()) for s in splits.values())) + 1
    return DataBundle(name or path.stem, [str(i) for i in range(k)], splits)


def load_medmnist(name: str, cfg: DataConfig, img_size: int) -> DataBundle:
    dirs = candidate_dirs(cfg, ("medmnist", name))
    for fname in (f"{name}.npz", f"{name}_28.npz"):
        found = find_files(name, [fname], dirs)
        if found:
            return load_npz(found[0], img_size, name)
    raise DatasetFilesMissing(f"{name}: file {name}.npz not found (looked in "
                              f"{', '.join(map(str, dirs)) or 'nowhere: data.data_dir is not set'}); download it "
                              "from https://medmnist.com (or `pip install medmnist`) and pass --data-dir")


def _register_medmnist(name: str) -> None:
    DATASETS.add(name, lambda cfg, img_size: load_medmnist(name, cfg, img_size), native_size=28)


for _name in MEDMNIST:
    _register_medmnist(_name)


# ---- numpy arrays (the Python API) -------------------------------------------------------------

def images_to_tensor(x: Any, what: str = "images") -> torch.Tensor:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) images -> (N, C, H, W) uint8 at their own size.

    The rule (layouts, dtypes, ranges, errors) is `foveal.data.arrays.to_images_u8`, shared with
    `Classifier.predict`, so fitted and predicted arrays are read the same way.
    """
    return to_images_u8(x, what=what)


def encode_labels(y: Any, n: int, classes: Optional[Sequence[str]] = None) -> tuple[list[str], np.ndarray]:
    """(class names, int64 label indices) for `n` labels: integers are class indices 0..K-1
    (named by `classes`, else '0'..'K-1'); anything else is a class name, looked up in `classes`
    (else the sorted distinct names become the classes)."""
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"labels: expected shape ({n},) to match {n} images, got {y.shape}")
    if np.issubdtype(y.dtype, np.integer):
        k = int(y.max()) + 1 if len(y) else 0
        if len(y) and y.min() < 0:
            raise ValueError(f"labels: negative class index {int(y.min())}")
        names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]
        if len(names) < k:
            raise ValueError(f"labels go up to {k - 1} but only {len(names)} class names were given")
        return names, y.astype(np.int64)
    names = sorted({str(v) for v in y}) if classes is None else [str(c) for c in classes]
    index = {c: i for i, c in enumerate(names)}
    unknown = sorted({str(v) for v in y} - set(index))
    if unknown:
        raise ValueError(f"labels {unknown[:5]} are not in classes {names}")
    return names, np.array([index[str(v)] for v in y], dtype=np.int64)


def from_arrays(x: Any, y: Any, classes: Optional[Sequence[str]] = None, name: str = "arrays") -> DataBundle:
    """Images `x` and labels `y` (ints 0..K-1, or any hashable class names) as one 'all' split.

    Images keep their own size and channels (1 or 3); the trainer's `prepare_data` then converts
    them to the model's, with the same operations `to_images_u8` applies at predict time.
    """
    if y is None:
        raise ValueError("labels are required: call fit(x, y)")
    images = to_images_u8(x)
    names, labels = encode_labels(y, len(images), classes)
    return DataBundle(name, names, {"all": Split(images, torch.from_numpy(labels))})
