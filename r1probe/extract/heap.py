"""Keep the process heap flat while shards stream to disk (glibc; a no-op elsewhere).

Each shard allocates and frees tens of MB of activations. glibc's malloc raises its mmap threshold
after the first large blocks are freed, so later large tensors come from the brk heap, which
fragments and is not given back: peak RSS then grows with the number of shards although nothing is
kept (measured on the embedded model, layers 0-3, all sites: +22% peak RSS from 1,000 to 4,000
prompts; with both calls below +5%, the rest being oneDNN's per-shape kernel cache, which is bounded).

- :func:`pin_mmap_threshold` sets ``M_MMAP_THRESHOLD`` (which also turns its dynamic growth off):
  blocks above it are mapped on allocation and unmapped on free. This is process-wide.
- :func:`trim` is ``malloc_trim(0)``: hand the free pages of the heap back to the system.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_MMAP_THRESHOLD = -3


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
