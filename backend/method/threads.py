"""Thread settings of CPU training (issue #24).

A cpu-preset step is many small operations (a few thousand rows of 32 features, a 120 x 4,096 mask product, a
kNN graph of 4,096 pixels). Split over several threads each op gains little, and two thread pools that each want
every core (torch's OpenMP pool, OpenBLAS's pool under NumPy's matrix product) wait on each other: measured on a
loaded 2-core machine, NumPy's ``120 x 4096 @ 4096 x 120`` took 250-350 ms with OpenBLAS's default threads
against 0.6 ms on one (bench/bench_train_step.py has the whole step). So CPU training runs the step on ONE
intra-op thread and one BLAS thread, and uses a second core, when there is one, for the next steps' host work
(the trainer's prefetch thread).

:func:`set_blas_threads` reaches the OpenBLAS builds that NumPy and SciPy wheels load (``scipy_openblas``, with
or without the 64-bit-integer suffix, and a plain ``openblas``) through their C entry points, as threadpoolctl
does; where none is found (another BLAS, another OS) it changes nothing.
"""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from typing import Iterator

import torch

#: (setter, getter) symbol names of the OpenBLAS builds NumPy / SciPy wheels ship.
_OPENBLAS_SYMBOLS = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
                     ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
                     ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
                     ("openblas_set_num_threads", "openblas_get_num_threads"))

_blas_cache: list[tuple[object, object]] | None = None


def _blas_libraries() -> list[tuple[object, object]]:
    """``(set, get)`` C functions of every OpenBLAS loaded in this process (Linux: from /proc/self/maps)."""
    global _blas_cache
    if _blas_cache is not None:
        return _blas_cache
    found: list[tuple[object, object]] = []
    try:
        import numpy  # noqa: F401  (loads its BLAS)

        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.rsplit("/", 1)[-1].lower()})
    except OSError:  # not Linux
        paths = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _OPENBLAS_SYMBOLS:
            if hasattr(lib, set_name) and hasattr(lib, get_name):
                setter, getter = getattr(lib, set_name), getattr(lib, get_name)
                setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                found.append((setter, getter))
                break
    _blas_cache = found
    return found


def blas_threads() -> list[int]:
    """Threads of each loaded OpenBLAS (empty when none was found)."""
    return [int(get()) for _, get in _blas_libraries()]  # type: ignore[operator]


def set_blas_threads(n: int | list[int]) -> list[int]:
    """Set the threads of every loaded OpenBLAS (one count, or one per library as :func:`blas_threads` returns);
    returns the previous counts."""
    libs = _blas_libraries()
    before = [int(get()) for _, get in libs]  # type: ignore[operator]
    counts = n if isinstance(n, list) else [n] * len(libs)
    for (setter, _), c in zip(libs, counts):
        setter(max(1, int(c)))  # type: ignore[operator]
    return before


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextmanager
def cpu_training_threads(intra_op: int = 1) -> Iterator[None]:
    """Within the block: torch's intra-op threads ``intra_op`` and one BLAS thread; restored afterwards."""
    torch_before = torch.get_num_threads()
    torch.set_num_threads(max(1, intra_op))
    blas_before = set_blas_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_before)
        set_blas_threads(blas_before)
