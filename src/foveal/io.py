"""Safe, atomic file I/O shared by checkpoints, weights, metrics and reports.

Weights are only ever read from safetensors (tensors) and JSON (metadata): nothing is
unpickled, so a weights file from a stranger cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Optional

if TYPE_CHECKING:
    import torch
# torch and safetensors are imported where tensors are read or written: the inference install
# (no torch) uses the atomic text/JSON writers here too.

SAFETENSORS_META_KEY = "foveal"  # key of our JSON metadata inside the safetensors header

_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # raw pickle protocol 2+, torch.save zip archive


class UnsafeFileError(ValueError):
    """Raised for weight files that would need unpickling."""


def _read_umask_once() -> int:
    """The umask at import. POSIX offers no call that reads it without setting it, so it is set
    and restored: not thread-safe (a file another thread creates in between would get umask 022,
    not the real one), hence done once, at import, while a program is normally single-threaded."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_IMPORT_UMASK = _read_umask_once()


def current_umask() -> int:
    """The process umask now, read without changing it, so safe from any thread (Linux
    /proc/self/status, kernel 4.7+); elsewhere the umask at import."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return _IMPORT_UMASK


def _fsync_file(path: Path) -> None:
    # Data reaches the disk before the rename publishes it: without this a power cut right after
    # os.replace can leave an empty or partial file under the final name.
    fd = os.open(path, os.O_RDONLY if os.name == "posix" else os.O_RDWR)  # Windows fsync needs write access
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make a rename inside folder `path` durable; best effort: some systems (Windows) cannot open
    a folder, and some file systems refuse fsync on one."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    The file ends with the mode a plain `open(path, "w")` gives (0o666 minus the umask; mkstemp
    makes it 0o600), its data is fsynced before the rename and the folder after it, so a crash
    leaves either the old file or the whole new one. On failure the temp file is removed and
    the old file is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target: os.replace is atomic only within one file system.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # chmod after the writer is done, in case it replaced the temp file with its own.
        os.chmod(tmp, 0o666 & ~current_umask())
        _fsync_file(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):  # torch tensors, numpy arrays and scalars
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} as JSON")


def save_tensors(path: str | Path, tensors: dict[str, "torch.Tensor"], meta: dict[str, Any] | None = None) -> None:
    """Write tensors (made contiguous, on CPU) and JSON metadata to a safetensors file, atomically."""
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {SAFETENSORS_META_KEY: json.dumps(meta or {}, default=_json_default)}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=header)


def _looks_like_safetensors(path: Path) -> bool:
    """A safetensors file: an 8-byte little-endian header length, then that many bytes of JSON."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 8 + n <= path.stat().st_size


def _looks_like_pickle(path: Path) -> bool:
    # Checked only when the file is not safetensors: a header length's low byte may be 0x80 too.
    with open(path, "rb") as f:
        return f.read(4).startswith(_PICKLE_MAGIC)


def read_meta(path: str | Path) -> dict[str, Any]:
    """Our JSON metadata of a safetensors file ({} when it has none), without reading the tensors."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file '{path}' does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise UnsafeFileError(f"'{path}' is not a valid safetensors file: {e}") from None
    return json.loads(header[SAFETENSORS_META_KEY]) if SAFETENSORS_META_KEY in header else {}


def load_tensors(path: str | Path, device: "str | torch.device" = "cpu") -> tuple[dict[str, "torch.Tensor"], dict[str, Any]]:
    """Read a safetensors file written by anyone; return (tensors, our metadata or {}).

    Refuses pickle-based files (.pt/.pth/.ckpt) with an explanation instead of loading them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file '{path}' does not exist")
    if not _looks_like_safetensors(path) and _looks_like_pickle(path):
        raise UnsafeFileError(
            f"refusing to load '{path}': it is a pickle (torch.save) file, and unpickling can run "
            "arbitrary code. foveal reads weights only from safetensors; convert a file you trust "
            "with `foveal convert IN.pth OUT.safetensors`."
        )
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise UnsafeFileError(f"'{path}' is not a valid safetensors file: {e}") from None
    return tensors, read_meta(path)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"'{path}' does not exist") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"'{path}' is not valid JSON: {e}") from None


def read_result_json(path: str | Path, writer: str) -> Optional[dict[str, Any]]:
    """A results file a command left in a run folder (robustness.json, embedding_map.json...):
    its JSON object, or None when it is absent; a broken file is an error that names it and
    `writer`, the command that writes it again."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"'{path}' is not valid JSON ({e}); run {writer} again or delete it") from e
    if not isinstance(data, dict):
        raise ValueError(f"'{path}' must hold a JSON object (key -> results), got {type(data).__name__}")
    return data
