"""What one small durable write costs on this disk, by method.

A synchronous standby makes one durable write per batch of commits: a few
KiB into a zero-filled segment file, then a sync, before it may answer.
This measures that step alone, wall time and CPU time (user + sys), for the
ways a receiver could make it:

* ``write+fdatasync``   pg_receivewal's and walfast's way (page cache)
* ``RWF_DSYNC``         ``pwritev2(..., RWF_DSYNC)``: write and sync in one call
* ``O_DIRECT+RWF_DSYNC`` the same, past the page cache
* ``write only``        the copy into the page cache, no sync (the floor)

Each method writes *count* sequential 8 KiB blocks into its own fresh,
zero-filled and fsynced segment-size file; rounds alternate the methods.

    python -m benchmarks.sync_cost [--dir /var/tmp] [--count 2000] [--rounds 2]

The directory must be on the disk being measured (not tmpfs).
"""

from __future__ import annotations

import argparse
import mmap
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

BLOCK = 8192
FILE_SIZE = 16 << 20


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _zero_filled(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        zeros = bytes(1 << 20)
        for off in range(0, FILE_SIZE, len(zeros)):
            os.pwrite(fd, zeros, off)
        os.fsync(fd)
    finally:
        os.close(fd)


def _measure(path: Path, flags: int, step: Callable[[int, memoryview, int], None],
             data: memoryview, count: int) -> tuple[float, float, float]:
    """(median µs, p90 µs, CPU µs per write)."""
    _zero_filled(path)
    fd = os.open(path, os.O_RDWR | flags)
    try:
        times = []
        cpu0 = _cpu_seconds()
        for i in range(count):
            t0 = time.perf_counter_ns()
            step(fd, data, (i * BLOCK) % FILE_SIZE)
            times.append(time.perf_counter_ns() - t0)
        cpu = _cpu_seconds() - cpu0
    finally:
        os.close(fd)
        path.unlink()
    times.sort()
    return (statistics.median(times) / 1000, times[len(times) * 9 // 10] / 1000,
            cpu / count * 1e6)


METHODS: dict[str, tuple[int, Callable[[int, memoryview, int], None]]] = {
    "write+fdatasync": (0, lambda fd, d, off: (os.pwrite(fd, d, off), os.fdatasync(fd))[0]),
    "RWF_DSYNC": (0, lambda fd, d, off: os.pwritev(fd, [d], off, os.RWF_DSYNC)),
    "O_DIRECT+RWF_DSYNC": (os.O_DIRECT, lambda fd, d, off: os.pwritev(fd, [d], off, os.RWF_DSYNC)),
    "write only": (0, lambda fd, d, off: os.pwrite(fd, d, off)),
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sync_cost",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, default=Path(os.environ.get("WALFAST_BENCH_DIR",
                                                                    "/var/tmp")))
    ap.add_argument("--count", type=int, default=2000, help="writes per method and round")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    # O_DIRECT needs an aligned buffer: an anonymous mapping is page-aligned.
    buf = mmap.mmap(-1, BLOCK)
    buf.write(os.urandom(BLOCK))
    data = memoryview(buf)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="walfast-sync-cost-") as tmp:
        print(f"{BLOCK} B writes into a zero-filled {FILE_SIZE >> 20} MiB file in {tmp}")
        print(f"{'round':>5}  {'method':<20} {'median µs':>10} {'p90 µs':>8} {'CPU µs':>8}")
        for rnd in range(1, args.rounds + 1):
            for name, (flags, step) in METHODS.items():
                med, p90, cpu = _measure(Path(tmp) / "seg", flags, step, data, args.count)
                print(f"{rnd:>5}  {name:<20} {med:>10.1f} {p90:>8.1f} {cpu:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
