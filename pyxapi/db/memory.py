"""Handing freed memory back to the system (glibc; a no-op where its calls are missing).

A big reply (every record of a 10,000-VM pool) allocates hundreds of MB for a moment.
Python frees it, but glibc keeps the pages: the server's resident size only ever grew.
"""
from __future__ import annotations

import ctypes

try:
    _libc = ctypes.CDLL(None)
    _mallopt = _libc.mallopt
    _malloc_trim = _libc.malloc_trim
except (OSError, AttributeError):
    _mallopt = _malloc_trim = None

_M_MMAP_THRESHOLD = -3


def tune() -> None:
    """Blocks of 256 KiB and more (a reply's bytes, its encoder's chunks) get their own
    mapping, returned to the system when freed. glibc's default raises that threshold up
    to 32 MB after the first such block is freed, which then stays on the heap."""
    if _mallopt is not None:
        _mallopt(_M_MMAP_THRESHOLD, 256 * 1024)


def trim() -> None:
    """Return the heap's free pages (the records of a reply just sent) to the system."""
    if _malloc_trim is not None:
        _malloc_trim(0)
