"""glibc malloc settings for CPU runs: keep freed memory instead of handing it back to the OS.

glibc serves every block above its mmap threshold (128 KiB, raised on the fly to at most 32 MiB)
with a fresh mmap and returns it with munmap on free. A 224-px convnet step allocates and frees
activations of 10-100 MiB, so every step faults in its working set again (4 KiB page faults,
zeroed by the kernel): on a 2-core box half of the CPU time of `foveal train` was kernel time
(BENCHMARKS.md "CPU: allocator"). `keep_freed_memory` raises the mmap threshold and the
trim threshold through `mallopt`, which works at run time, so blocks come from the heap and stay
there for the next step. Peak memory stays near the high-water mark, as with PyTorch's CUDA
caching allocator.

CPU only: CUDA tensors never pass through malloc, and a GPU run keeps glibc's defaults. Turn it off
with FOVEAL_MALLOC=default (today's glibc behaviour); with jemalloc or tcmalloc in LD_PRELOAD (as
`python -m torch.backends.xeon.run_cpu` sets up) nothing is changed. No torch import here: the
CLI imports this before it knows the device.
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Optional

ENV = "FOVEAL_MALLOC"  # "keep" (the default) or "default" (leave glibc alone)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # <malloc.h>
SETTINGS = {  # bytes; mallopt takes a C int, so 2 GiB - 1 at most
    M_MMAP_THRESHOLD: 1 << 30,  # blocks below 1 GiB come from the heap, not a fresh mmap
    M_TRIM_THRESHOLD: 1 << 30,  # hand the heap top back only when 1 GiB of it is free
    M_TOP_PAD: 256 << 20,  # grow the heap 256 MiB at a time (address space; pages fault in when touched)
}

_state: Optional[str] = None  # what keep_freed_memory did in this process
_cli = False  # set by the `foveal` entry point: the process is a foveal command, not a library user


def allow_for_process() -> None:
    """Called by the `foveal` command line: a later `on_device("cpu")` applies the settings. A program
    that only imports foveal keeps its own allocator settings unless it calls `keep_freed_memory`."""
    global _cli
    _cli = True


def on_device(device_type: str) -> Optional[str]:
    """Apply the settings once if this is a `foveal` command running on the CPU; no-op otherwise
    (CUDA/MPS runs, library use). Returns what `keep_freed_memory` did, None when skipped."""
    if not _cli or device_type != "cpu":
        return None
    return keep_freed_memory()


def keep_freed_memory() -> str:
    """Tell glibc malloc to keep freed memory (see the module docstring); once per process.

    Returns "kept" when applied, "off (FOVEAL_MALLOC=default)", "preloaded (<lib>)" when jemalloc or
    tcmalloc replaces malloc, or "unsupported (<libc>)" off glibc (macOS, musl, Windows)."""
    global _state
    if _state is not None:
        return _state
    mode = os.environ.get(ENV, "keep").strip().lower()
    preload = os.environ.get("LD_PRELOAD", "")
    if mode not in ("keep", "default"):
        raise ValueError(f"{ENV}={mode!r}: expected 'keep' (glibc keeps freed memory, the default) or 'default' "
                         "(glibc's own behaviour)")
    if mode == "default":
        _state = f"off ({ENV}=default)"
    elif any(lib in preload for lib in ("jemalloc", "tcmalloc")):
        _state = f"preloaded ({preload})"
    elif platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        _state = f"unsupported ({platform.system()} {platform.libc_ver()[0] or 'libc'})"
    else:
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        failed = [k for k, v in SETTINGS.items() if mallopt(k, v) != 1]
        _state = "kept" if not failed else f"partly (mallopt refused {failed})"
    return _state


def state() -> Optional[str]:
    """What `keep_freed_memory` did in this process (None: not called)."""
    return _state
