"""What one segment's upload costs the uploading process, by integrity check.

walfast's uploader (``walfast.archive.store.S3Store.put``) sends each
completed segment with ``Content-MD5``, which it computes in a pass of its
own over the file; botocore (1.36+) adds its default ``x-amz-checksum-crc32``
on top, and, over plain http (the loopback server here), a SHA-256 of the
body for the SigV4 signature (over https with a checksum header botocore
sends ``UNSIGNED-PAYLOAD`` instead).  This measures the client's CPU
seconds per GB (user + sys of this process) and the S3 server's, for:

* ``walfast``          ``S3Store.put`` as walfast calls it
* ``crc32 only``       ``put_object`` with botocore's default checksum, no
                       Content-MD5
* ``content-md5 only`` ``put_object`` with Content-MD5 as walfast computes it,
                       botocore's own checksum off (``when_required``)

One thread, one PUT after the other, *count* segment files of random bytes,
fsynced and dropped from the page cache before each variant (as walfast
leaves completed segments, so each is read back from the disk), against
moto's server on loopback (:mod:`walfast.s3server`, objects on tmpfs).
Variants alternate over *rounds*.

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

    import boto3  # type: ignore[import-untyped]
    from botocore.config import Config  # type: ignore[import-untyped]

    from walfast.archive.store import _b64, _md5, open_store
    from walfast.s3server import S3Server

    shm = Path("/dev/shm")
    tmp = Path(tempfile.mkdtemp(prefix="upload-cost-moto-", dir=shm if shm.is_dir() else None))
    work = Path(tempfile.mkdtemp(prefix="upload-cost-", dir=args.dir))
    try:
        with S3Server(tmpdir=tmp) as server:
            os.environ.update(server.env)
            server.create_bucket(BUCKET)
            buf = os.urandom(SEGMENT)
            files = []
            for i in range(args.count):
                path = work / f"{1:08X}{0:08X}{i + 2:08X}"
                with open(path, "wb") as f:
                    f.write(buf)
                    os.fsync(f.fileno())
                files.append(path)

            store = open_store(f"s3://{BUCKET}/walfast")
            default = boto3.session.Session().client("s3")
            no_checksum = boto3.session.Session().client(
                "s3", config=Config(request_checksum_calculation="when_required"))

            def walfast(path: Path) -> None:
                store.put(path.name, path)

            def crc32_only(path: Path) -> None:
                with open(path, "rb") as f:
                    default.put_object(Bucket=BUCKET, Key=f"crc32/{path.name}", Body=f)

            def md5_only(path: Path) -> None:
                with open(path, "rb") as f:
                    no_checksum.put_object(Bucket=BUCKET, Key=f"md5/{path.name}", Body=f,
                                           ContentMD5=_b64(_md5(path)))

            variants: dict[str, Callable[[Path], None]] = {
                "walfast": walfast, "crc32 only": crc32_only, "content-md5 only": md5_only}
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
            for n in range(args.rounds):
                for name, put in variants.items():
                    for path in files:
                        fd = os.open(path, os.O_RDONLY)
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                        os.close(fd)
                    gb = len(files) * SEGMENT / 1e9
                    cpu0, srv0, t0 = _cpu_seconds(), server.cpu_seconds(), time.perf_counter()
                    for path in files:
                        put(path)
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
                "md5": lambda: hashlib.md5(buf, usedforsecurity=False).digest(),
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
