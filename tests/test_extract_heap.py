"""Heap hygiene during extraction (glibc's malloc on Linux; a no-op elsewhere). Its effect on peak RSS
is measured in benchmarks/extract.py, not asserted here."""

import pytest

from r1probe.extract import heap


class FakeLibc:
    def __init__(self, mallopt_result=1, trim_result=1):
        self.calls = []
        self._mallopt, self._trim = mallopt_result, trim_result

    def mallopt(self, param, value):
        self.calls.append(("mallopt", param, value))
        return self._mallopt

    def malloc_trim(self, pad):
        self.calls.append(("malloc_trim", pad))
        return self._trim


def test_pin_mmap_threshold_sets_m_mmap_threshold(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(heap, "_libc", lambda: libc)
    assert heap.pin_mmap_threshold() is True
    assert heap.pin_mmap_threshold(4 << 20) is True
    assert libc.calls == [("mallopt", heap.M_MMAP_THRESHOLD, 1 << 20), ("mallopt", -3, 4 << 20)]
    monkeypatch.setattr(heap, "_libc", lambda: FakeLibc(mallopt_result=0))
    assert heap.pin_mmap_threshold() is False  # mallopt refused the value


def test_trim_calls_malloc_trim_zero(monkeypatch):
    libc = FakeLibc(trim_result=1)
    monkeypatch.setattr(heap, "_libc", lambda: libc)
    assert heap.trim() is True and libc.calls == [("malloc_trim", 0)]
    monkeypatch.setattr(heap, "_libc", lambda: FakeLibc(trim_result=0))
    assert heap.trim() is False  # nothing could be given back


def test_without_a_c_library_both_are_no_ops(monkeypatch):
    monkeypatch.setattr(heap, "_libc", lambda: None)
    assert heap.pin_mmap_threshold() is False and heap.trim() is False


#: glibc's state (free chunks, a raised trim threshold) carries over between tests in one process and decides
#: whether a large malloc is served from the heap, so the real-glibc checks run in a fresh interpreter.
_PROBE = """
import ctypes, sys
from r1probe.extract import heap

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = heap._libc()
if libc is None or not hasattr(libc, "mallinfo2"):
    sys.exit(3)
libc.mallinfo2.restype = Mallinfo2
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 8 << 20

def mapped_growth():
    before = libc.mallinfo2().hblkhd
    p = libc.malloc(SIZE)
    assert p
    grown = libc.mallinfo2().hblkhd - before
    libc.free(p)
    return grown, libc.mallinfo2().hblkhd - before
"""


def _run_probe(body: str) -> None:
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", _PROBE + body], capture_output=True, text=True)
    if r.returncode == 3:
        pytest.skip("needs glibc >= 2.33 (mallinfo2)")
    assert r.returncode == 0, r.stderr


def test_pinned_threshold_maps_large_blocks_on_glibc():
    """After pinning at 1 MiB an 8 MiB block is mmapped (counted in ``hblkhd``) and unmapped on free;
    with the threshold above 8 MiB the same block comes from the heap."""
    _run_probe("""
assert heap.pin_mmap_threshold(16 << 20)
assert mapped_growth()[0] == 0  # below the threshold: from the heap
heap.trim()  # give the freed block back, so the next request cannot reuse it
assert heap.pin_mmap_threshold()
grown, after_free = mapped_growth()
assert grown >= SIZE and after_free == 0, (grown, after_free)
""")


def test_extraction_heap_pins_inside_and_releases_on_exit(monkeypatch):
    libc = FakeLibc()
    monkeypatch.setattr(heap, "_libc", lambda: libc)
    with heap.extraction_heap() as pinned:
        assert pinned and libc.calls == [("mallopt", heap.M_MMAP_THRESHOLD, 1 << 20)]
    assert libc.calls[1:] == [("malloc_trim", 0), ("mallopt", heap.M_MMAP_THRESHOLD, 32 << 20),
                              ("mallopt", heap.M_TRIM_THRESHOLD, 64 << 20)]
    libc.calls.clear()
    with pytest.raises(KeyError):  # released on errors too
        with heap.extraction_heap():
            raise KeyError("x")
    assert libc.calls[-1] == ("mallopt", heap.M_TRIM_THRESHOLD, 64 << 20)
    monkeypatch.setattr(heap, "_libc", lambda: None)
    with heap.extraction_heap() as pinned:  # no glibc: a no-op
        assert pinned is False


def test_released_threshold_takes_large_blocks_from_the_heap_again():
    _run_probe("""
with heap.extraction_heap():
    pass
assert mapped_growth()[0] == 0  # below the released 32 MiB threshold: from the heap
""")
