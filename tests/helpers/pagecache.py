"""What of a file is in the page cache (for the tests of releasing written WAL)."""

from __future__ import annotations

import ctypes
import mmap
import os


def resident_bytes(path) -> int:
    """Bytes of *path* in the page cache (mincore over a private mapping)."""
    size = os.path.getsize(path)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
    page = mmap.PAGESIZE
    vec = ctypes.create_string_buffer((size + page - 1) // page)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), size, flags=mmap.MAP_PRIVATE,
                                         prot=mmap.PROT_READ | mmap.PROT_WRITE) as mm:
        start = ctypes.c_char.from_buffer(mm)   # an export: released before mm closes
        rc = libc.mincore(ctypes.addressof(start), size, vec)
        del start
    if rc != 0:
        raise OSError(ctypes.get_errno(), "mincore")
    return sum(b & 1 for b in vec.raw) * page
