"""The machine's limits, measured in the same run as the receivers.

* **disk**: write the range's volume as segment-size files into a fresh
  directory next to the receivers' (same filesystem): for each file one
  ``write`` of a whole segment from a buffer of random bytes, one ``fsync``,
  close; then one fsync of the directory.  No zero-filling, no renames: the
  best a durable receiver could do with the same files.
* **memcpy**: ``numpy.copyto`` of the same volume in segment-size pieces
  between two 256 MiB buffers whose pages are already touched (libc memmove;
  far larger than the caches).

Both report MB/s (10^6 bytes per second) of the range's volume.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np


def disk_limit(workdir: Path, nbytes: int, segment_size: int) -> dict[str, Any]:
    directory = workdir / "disk-limit"
    directory.mkdir()
    buf = os.urandom(segment_size)
    nfiles = -(-nbytes // segment_size)
    t0 = time.perf_counter()
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
    src = np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8)
    dst = np.ones(size, dtype=np.uint8)  # touch every page first
    pieces = -(-nbytes // chunk)
    per_lap = size // chunk
    t0 = time.perf_counter()
    for i in range(pieces):
        off = (i % per_lap) * chunk
        np.copyto(dst[off:off + chunk], src[off:off + chunk])
    wall = time.perf_counter() - t0
    copied = pieces * chunk
    return dict(limit="memcpy", wall_s=round(wall, 4), bytes=copied,
                mb_s=round(copied / 1e6 / wall, 1))
