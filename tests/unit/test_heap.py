from __future__ import annotations

import subprocess
import sys

import pytest

# mallinfo2 (glibc >= 2.33): ``hblks`` counts the chunks currently served by mmap
PROBE = """
import ctypes, sys
from lte_runtime.heap import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]

libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2

def mmapped_by(size):
    before = libc.mallinfo2().hblks
    block = bytearray(size)
    during = libc.mallinfo2().hblks
    del block
    return during - before

print(mmapped_by(8 << 20), keep_freed_memory(), mmapped_by(8 << 20), mmapped_by(200 << 20))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_buffers_come_from_the_kept_heap_after_tuning() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=False, timeout=60
    )
    if "mallinfo2" in done.stderr:
        pytest.skip("C library without mallinfo2 (not glibc >= 2.33)")
    assert done.returncode == 0, done.stderr
    before, kept, after, huge = done.stdout.split()
    assert (before, kept, after, huge) == ("1", "True", "0", "0")
