"""The machine's limits, measured in the same run as the receivers.

* **disk**: write the range's volume as segment-size files into a fresh
  directory next to the receivers' (same filesystem): for each file one
  ``write`` of a whole segment from a buffer of random bytes, one ``fsync``,
  close; then one fsync of the directory.  No zero-filling, no renames: the
  best a durable receiver could do with the same files (see
  benchmarks/README.md: with one fsync per file the disk idles while a file
  is filled, so a receiver that starts writeback early can beat it).
* **memcpy**: ``numpy.copyto`` of the same volume in segment-size pieces
  between two 256 MiB buffers whose pages are already touched (libc memmove;
  far larger than the caches); without numpy, the same copies as slice
  assignments between two memoryviews (also memmove).  ``method`` says which.

Both report MB/s (10^6 bytes per second) of the range's volume.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

__all__ = ["disk_limit", "memcpy_limit"]


def disk_limit(workdir: Path, nbytes: int, segment_size: int) -> dict[str, Any]:
    directory = workdir / "disk-limit"
    directory.mkdir()
    buf = os.urandom(segment_size)
    nfiles = -(-nbytes // segment_size)
    t0 = time.perf_counter()
    try:
        for i in range(nfiles):
            fd = os.open(directory / f"{i:08X}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(buf)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        wall = time.perf_counter() - t0
    finally:
        for p in directory.iterdir():
            p.unlink()
        directory.rmdir()
        os.sync()
    written = nfiles * segment_size
    return dict(limit="disk", wall_s=round(wall, 4), bytes=written,
                mb_s=round(written / 1e6 / wall, 1))


def memcpy_limit(nbytes: int, chunk: int) -> dict[str, Any]:
    size = 256 * 2**20
    chunk = min(chunk, size)
    pieces = -(-nbytes // chunk)
    per_lap = size // chunk
    try:
        import numpy as np
    except ImportError:
        src_b = bytearray(os.urandom(2**20) * (size // 2**20))
        dst_b = bytearray(b"\1") * size     # every page touched
        src, dst = memoryview(src_b), memoryview(dst_b)
        method = "memoryview copy"
        t0 = time.perf_counter()
        for i in range(pieces):
            off = (i % per_lap) * chunk
            dst[off:off + chunk] = src[off:off + chunk]
        wall = time.perf_counter() - t0
    else:
        a = np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8)
        b = np.ones(size, dtype=np.uint8)  # touch every page first
        method = "numpy copyto"
        t0 = time.perf_counter()
        for i in range(pieces):
            off = (i % per_lap) * chunk
            np.copyto(b[off:off + chunk], a[off:off + chunk])
        wall = time.perf_counter() - t0
    copied = pieces * chunk
    return dict(limit="memcpy", method=method, wall_s=round(wall, 4), bytes=copied,
                mb_s=round(copied / 1e6 / wall, 1))
