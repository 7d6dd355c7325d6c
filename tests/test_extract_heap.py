"""Heap hygiene during extraction (glibc's malloc on Linux; a no-op elsewhere). Its effect on peak RSS
is measured in benchmarks/extract.py, not asserted here."""

import sys

import pytest

from r1probe.extract import heap


def test_heap_calls_are_safe_and_take_effect_on_glibc():
    pinned, trimmed = heap.pin_mmap_threshold(), heap.trim()
    assert isinstance(pinned, bool) and isinstance(trimmed, bool)
    if sys.platform.startswith("linux") and heap._libc() is not None:
        assert pinned  # mallopt returns 1 on success

