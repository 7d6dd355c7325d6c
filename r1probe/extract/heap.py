"""Keep the process heap flat while shards stream to disk (glibc; a no-op elsewhere).

Each shard allocates and frees tens of MB of activations. glibc's malloc raises its mmap threshold
after the first large blocks are freed, so later large tensors come from the brk heap, which
fragments and is not given back: peak RSS then grows with the number of shards although nothing is
kept (measured on the embedded model, layers 0-3, all sites: +22% peak RSS from 1,000 to 4,000
prompts; with both calls below +5%, the rest being oneDNN's per-shape kernel cache, which is bounded).

- :func:`pin_mmap_threshold` sets ``M_MMAP_THRESHOLD`` (which also turns its dynamic growth off):
  blocks above it are mapped on allocation and unmapped on free. This is process-wide, and it costs
  speed: every large tensor is then a fresh mapping, page-faulted in and unmapped again, which slows
  forward passes and, more, generation (``benchmarks/heap.py`` measures it).
- :func:`trim` is ``malloc_trim(0)``: hand the free pages of the heap back to the system.
- :func:`extraction_heap` scopes the pin to a block (extraction wraps the assembly and write of each
  shard in it, so the forward passes run unpinned). glibc cannot turn the
  dynamic threshold back on, so on exit both thresholds are set to where the dynamic rule ends up on
  a 64-bit process that frees large blocks (mmap threshold 32 MiB, its ceiling; trim threshold twice
  that): large tensors come from the heap again, as in a process that never pinned.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from contextlib import contextmanager

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: glibc's ceiling of the dynamic mmap threshold on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
DYNAMIC_MMAP_MAX = 32 << 20


@functools.lru_cache(maxsize=1)
def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        lib = ctypes.CDLL(name)
        lib.malloc_trim, lib.mallopt  # noqa: B018 - glibc only
        return lib
    except (OSError, AttributeError):
        return None


def pin_mmap_threshold(nbytes: int = 1 << 20) -> bool:
    """``mallopt(M_MMAP_THRESHOLD, nbytes)``; True when the C library took it."""
    lib = _libc()
    return bool(lib and lib.mallopt(M_MMAP_THRESHOLD, int(nbytes)) == 1)


def trim() -> bool:
    """``malloc_trim(0)``; True when the C library could give memory back."""
    lib = _libc()
    return bool(lib and lib.malloc_trim(0))


def release_threshold() -> bool:
    """Set the thresholds to the end state of glibc's dynamic rule (``M_MMAP_THRESHOLD`` 32 MiB,
    ``M_TRIM_THRESHOLD`` 64 MiB); True when the C library took both."""
    lib = _libc()
    return bool(lib and lib.mallopt(M_MMAP_THRESHOLD, DYNAMIC_MMAP_MAX) == 1
                and lib.mallopt(M_TRIM_THRESHOLD, 2 * DYNAMIC_MMAP_MAX) == 1)


@contextmanager
def extraction_heap(nbytes: int = 1 << 20):
    """Pin the mmap threshold inside the block (shards stream without fragmenting the heap); on exit
    :func:`trim` and :func:`release_threshold`, so later stages of the same process run at full speed."""
    pinned = pin_mmap_threshold(nbytes)
    try:
        yield pinned
    finally:
        if pinned:
            trim()
            release_threshold()
