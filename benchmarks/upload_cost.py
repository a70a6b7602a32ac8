"""What one segment's upload costs the uploading process, over http and https.

walfast's uploader (``walfast.archive.store.S3Store.put``) lets botocore
compute the ``x-amz-checksum-crc32`` the store verifies.  Over plain http
botocore also signs a SHA-256 of every body (SigV4); over https (AWS and
most stores) it sends the body unsigned with the checksum in a trailer, and
pays TLS instead.  This measures the client's CPU seconds per GB (user +
sys of this process) and the S3 server's, for ``S3Store.put`` against
moto's server on loopback (:mod:`walfast.s3server`, objects on tmpfs), one
server over http and one over https.

One thread, one PUT after the other, *count* segment files of random bytes,
fsynced and dropped from the page cache before each variant (as walfast
leaves completed segments, so each is read back from the disk).  Variants
alternate over *rounds*.

    python -m benchmarks.upload_cost [--dir /var/tmp] [--count 24] [--rounds 2]

A diagnostic for benchmarks/README.md, "Archive to S3"; not part of any test.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import shutil
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

SEGMENT = 16 << 20
BUCKET = "upload-cost"


def _cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.upload_cost", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"),
                   help="where the segment files go (the disk walfast would read them from)")
    p.add_argument("--count", type=int, default=24, help="segments per variant and round")
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)

    from walfast.archive.store import open_store
    from walfast.s3server import S3Server

    shm = Path("/dev/shm")
    tmp = Path(tempfile.mkdtemp(prefix="upload-cost-moto-", dir=shm if shm.is_dir() else None))
    work = Path(tempfile.mkdtemp(prefix="upload-cost-", dir=args.dir))
    try:
        with S3Server(tmpdir=tmp) as http, S3Server(tmpdir=tmp, tls=True) as https:
            servers = {"http": http, "https": https}
            stores = {}
            for name, server in servers.items():
                server.create_bucket(BUCKET)
                os.environ.pop("AWS_CA_BUNDLE", None)
                os.environ.update(server.env)
                stores[name] = open_store(f"s3://{BUCKET}/walfast")
                getattr(stores[name], "client")   # made now, for this server's environment
            buf = os.urandom(SEGMENT)
            files = []
            for i in range(args.count):
                path = work / f"{1:08X}{0:08X}{i + 2:08X}"
                with open(path, "wb") as f:
                    f.write(buf)
                    os.fsync(f.fileno())
                files.append(path)

            results: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
            for n in range(args.rounds):
                for name, server in servers.items():
                    for path in files:
                        fd = os.open(path, os.O_RDONLY)
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                        os.close(fd)
                    gb = len(files) * SEGMENT / 1e9
                    cpu0, srv0, t0 = _cpu_seconds(), server.cpu_seconds(), time.perf_counter()
                    for path in files:
                        stores[name].put(path.name, path)
                    wall = time.perf_counter() - t0
                    cpu, srv = _cpu_seconds() - cpu0, (server.cpu_seconds() or 0) - (srv0 or 0)
                    results[name].append(dict(mb_s=gb * 1e3 / wall, client=cpu / gb,
                                              server=srv / gb))
                    server.delete_all(BUCKET)
            print(f"{args.count} segments of 16 MiB per variant, {args.rounds} round(s), one "
                  f"thread; medians over rounds:")
            print(f"{'variant':<18} {'client CPU s/GB':>16} {'S3 server CPU s/GB':>19} "
                  f"{'MB/s':>7}")
            for name, rs in results.items():
                print(f"{name:<18} {statistics.median(r['client'] for r in rs):>16.2f} "
                      f"{statistics.median(r['server'] for r in rs):>19.2f} "
                      f"{statistics.median(r['mb_s'] for r in rs):>7.0f}")
            # The checksums alone, on a segment in memory.
            hashes: dict[str, Callable[[], object]] = {
                "sha256": lambda: hashlib.sha256(buf).digest(),
                "crc32": lambda: zlib.crc32(buf)}
            line = []
            for name, fn in hashes.items():
                times = []
                for _ in range(5):
                    cpu0 = _cpu_seconds()
                    fn()
                    times.append(_cpu_seconds() - cpu0)
                line.append(f"{name} {statistics.median(times) / (SEGMENT / 1e9):.2f}")
            print("checksums alone, CPU s/GB: " + ", ".join(line))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
