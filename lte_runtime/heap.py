"""glibc's allocator told to keep freed memory for reuse instead of handing it back.

A worker batch at d=384 builds tens of megabytes of short-lived buffers: RocksDB's
``WriteBatch`` (6 kB per head), the heads' bytes, aiokafka's produce requests. By default
glibc serves each large one with a fresh ``mmap`` (or grows the heap and trims it again on
free), so every batch touches new pages, and in this VM a first touch costs more than the
copy into the page: a 6 kB ``WriteBatch.put`` measured 12 µs of CPU, 2.5 µs with freed
memory kept (``bench`` note in docs/worker.md). The price is that the process's resident
size stays at its high-water mark instead of shrinking between batches, which a long-running
worker reaches anyway.
"""

from __future__ import annotations

import ctypes
import logging
import sys

log = logging.getLogger(__name__)

#: ``mallopt`` parameters (``<malloc.h>``)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: no allocation below this is served by ``mmap``, and no free trims the heap below it
KEEP_BYTES = 1 << 30
#: the largest mmap threshold every glibc accepts on 64-bit (``HEAP_MAX_SIZE / 2``)
PORTABLE_MMAP_THRESHOLD = 32 << 20


def keep_freed_memory() -> bool:
    """Apply the settings above; False where the C library is not glibc (nothing changes)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    if not mallopt(M_MMAP_THRESHOLD, KEEP_BYTES):
        mallopt(M_MMAP_THRESHOLD, PORTABLE_MMAP_THRESHOLD)
    kept = bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
    log.debug("glibc malloc keeps freed memory: %s", kept)
    return kept
