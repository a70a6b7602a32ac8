"""The ``archive`` mode: walfast durable with the run's slot and
``--archive s3://bench/wal``, against a real S3 API server on loopback
that the harness starts (moto's server mode, :mod:`walfast.s3server`, the
one the tests use), on a free port, for the whole benchmark.

* :func:`start_store`   the server and its bucket.  moto keeps objects over
  ~5 MB in temporary files: its ``TMPDIR`` is a directory on tmpfs
  (``/dev/shm``), so the store does not write to the disk being measured (a
  real store is on other machines); the objects are deleted after each run.
* :func:`check_store`   after an archive run: the bucket holds exactly the
  range's segments, each of the segment size, the first, middle and last
  the range's (:meth:`walfast.bench.primary.Source.compare_segment`: byte
  for byte pg_wal's on the throwaway primary); else the run failed.
* :func:`figures`       what an archive run adds to the common figures
  (upload lag at the end, upload throughput, backlog, the store's CPU), from
  the timeline :class:`~walfast.bench.receivers.WalsenderSampler` recorded.
* :func:`upload_limit`  the upload path alone, once per round: walfast's own
  :class:`~walfast.archive.uploader.Uploader` (in the harness's process)
  ships the range's volume of segment files, already on disk and out of the
  page cache as walfast leaves its completed segments, with nothing being
  received.

The common figures (:func:`walfast.bench.receivers.measure`) are the same
for every walfast run: MB/s to the exit, and "receive MB/s", to the
``stopped log streaming`` line.  They differ for this mode only: at
``--endpos`` walfast waits for the uploads before it exits, so its exit
comes once the bucket holds everything, and the receive itself ends at the
stop line.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from walfast.bench.primary import Source, WalRange
from walfast.bench.receivers import ARCHIVE_BUCKET, ARCHIVE_PREFIX, WalsenderSampler
from walfast.s3server import S3Server

__all__ = ["SHM", "Store", "check_store", "figures", "moto_available", "upload_limit"]

#: Where the S3 server keeps its temporary files (tmpfs), when there is one.
SHM = Path("/dev/shm")


def moto_available() -> str | None:
    """None when moto's server can run here, else why not."""
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError as exc:
        return (f"moto[server] and boto3 are needed for the archive mode ({exc}; "
                "pip install 'moto[server]' boto3, or walfast's test extra)")
    return None


class Store:
    """The S3 server, its bucket and its temporary directory."""

    def __init__(self, logdir: Path, cpus: set[int] | None = None) -> None:
        base = SHM if SHM.is_dir() else None
        self.tmpdir = Path(tempfile.mkdtemp(prefix="walfast-bench-moto-", dir=base))
        try:
            # Plain http: over https (benchmarks/upload_cost.py) walfast's
            # client costs more, not less, and moto's server twice as much.
            self.server = S3Server(log=logdir / "moto.log", tmpdir=self.tmpdir, cpus=cpus)
        except BaseException:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            raise
        self.server.create_bucket(ARCHIVE_BUCKET)
        self.cpus = cpus

    def describe(self) -> dict[str, Any]:
        import moto

        return dict(server=f"moto {moto.__version__} (python -m moto.server)",
                    endpoint=self.server.endpoint, pid=self.server.pid,
                    tmpdir=str(self.tmpdir), cpus=None if self.cpus is None else sorted(self.cpus),
                    url=f"s3://{ARCHIVE_BUCKET}/{ARCHIVE_PREFIX}")

    def empty(self) -> int:
        return self.server.delete_all(ARCHIVE_BUCKET, ARCHIVE_PREFIX)

    def close(self) -> None:
        self.server.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def check_store(store: Store, source: Source, rng: WalRange) -> str | None:
    """None if the bucket holds exactly the range's segments (plain, of
    the segment size; first, middle and last the range's), else what is
    wrong."""
    sizes = store.server.sizes(ARCHIVE_BUCKET, ARCHIVE_PREFIX)
    expected = rng.segment_names()
    if sorted(sizes) != expected:
        lacking = sorted(set(expected) - set(sizes))
        extra = sorted(set(sizes) - set(expected))
        return (f"the bucket holds {len(sizes)} objects instead of the {len(expected)} segments "
                f"of the range; missing {lacking[:3]}, unexpected {extra[:3]}")
    wrong = [n for n, size in sizes.items() if size != rng.segment_size]
    if wrong:
        return f"object {wrong[0]} is not {rng.segment_size} bytes"
    for i in sorted({0, len(expected) // 2, len(expected) - 1}):
        name = expected[i]
        problem = source.compare_segment(
            rng, name, store.server.get(ARCHIVE_BUCKET, f"{ARCHIVE_PREFIX}/{name}"))
        if problem is not None:
            return f"object {name} {problem}"
    return None


def _cpu(after: dict[str, Any] | None, before: dict[str, Any], key: str) -> float | None:
    if after is None or after.get(key) is None or before.get(key) is None:
        return None
    return float(after[key]) - float(before[key])


def figures(sampler: WalsenderSampler, rng: WalRange, status: dict[str, Any] | None,
            at_spawn: dict[str, Any], at_exit: dict[str, Any], cpu_total: float,
            wall: float) -> dict[str, Any]:
    """The archive run's own figures (seconds from the spawn; see the
    README's table):

    * ``stored_s``: when the bucket held the last of the range's segments
      (the S3 server's request-log line for its PUT, polled every 10 ms);
      ``upload_lag_end_s``: that minus the receive's end (the stop line):
      how long after the receive the bucket held everything;
      ``recorded_s``, ``recorded_lag_end_s``: the same for walfast's own
      record (``.walfast/archived``, what the slot gate goes by);
    * ``upload_mb_s``: bytes uploaded (``.walfast/archive-status``, else the
      range) / the time from the first segment's completion (its
      ``finished segment`` line: from then on the uploader has work) to the
      last object stored;
    * ``backlog_max_segments`` / ``backlog_at_end_segments``: segments
      completed locally and not yet in the bucket, at most and when the
      receive ended;
    * CPU seconds of the S3 server during the receive and in all, of walfast
      after the receive (its uploads while it drains)."""
    out: dict[str, Any] = {}
    names = set(rng.segment_names())
    stop = sampler.stop_line_before(wall)
    stored: dict[str, float] = {}
    for key, events in (("stored", sampler.stored), ("recorded", sampler.archived)):
        first: dict[str, float] = {}
        for t, name in events:
            if name in names:
                first.setdefault(name, t)
        out[f"{key}_segments"] = len(first)
        if len(first) == len(names):
            last = max(first.values())
            out[f"{key}_s"] = round(last, 3)
            if stop is not None:
                lag = "upload_lag_end_s" if key == "stored" else "recorded_lag_end_s"
                out[lag] = round(last - stop, 3)
        if key == "stored":
            stored = first
    uploaded = int((status or {}).get("uploaded_bytes") or 0) or rng.nbytes
    if "stored_s" in out and sampler.finished_s:
        window = out["stored_s"] - sampler.finished_s[0]
        out["upload_window_s"] = round(window, 3)
        if window > 0:
            out["upload_mb_s"] = round(uploaded / 1e6 / window, 1)
    steps = sorted([(t, 1) for t in sampler.finished_s]
                   + [(t, -1) for t in stored.values()])
    backlog = peak = 0
    for _, step in steps:
        backlog += step
        peak = max(peak, backlog)
    out["backlog_max_segments"] = peak
    if stop is not None:
        out["backlog_at_end_segments"] = (sum(1 for t in sampler.finished_s if t <= stop)
                                          - sum(1 for t in stored.values() if t <= stop))
    if status is not None:
        out.update({f"status_{k}": status.get(k) for k in
                    ("uploaded_files", "uploaded_bytes", "failures", "pending_files",
                     "last_error")})
    gb = rng.nbytes / 1e9
    store_total = _cpu(at_exit, at_spawn, "store")
    store_recv = _cpu(sampler.at_stop, at_spawn, "store")
    out.update(
        store_cpu_s=None if store_total is None else round(store_total, 3),
        store_cpu_s_per_gb=None if store_total is None else round(store_total / gb, 3),
        store_cpu_recv_s=None if store_recv is None else round(store_recv, 3))
    recv_cpu_recv = (sampler.at_stop or {}).get("receiver")
    if recv_cpu_recv is not None:
        out["recv_cpu_after_s"] = round(cpu_total - float(recv_cpu_recv), 3)
    out["drain_s"] = None if stop is None else round(wall - stop, 3)
    return out


@contextlib.contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def upload_limit(store: Store, workdir: Path, rng: WalRange) -> dict[str, Any]:
    """walfast's uploader alone (see the module docstring): the range's
    volume as segment files (random bytes, fsynced and dropped from the
    page cache, as walfast leaves its completed segments), moved at once
    into a directory whose uploader is already running (so, as in a
    receive, it makes no lookup first), then timed until all are
    confirmed.  MB/s, the harness's CPU (the uploader's threads) and the
    S3 server's."""
    from walfast.archive.store import open_store
    from walfast.archive.uploader import Uploader

    staging = workdir / "upload-limit-files"
    directory = workdir / "upload-limit"
    staging.mkdir()
    directory.mkdir()
    buf = os.urandom(rng.segment_size)
    names = rng.segment_names()
    try:
        for name in names:
            fd = os.open(staging / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(buf)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
        os.sync()
        store.empty()
        with _environ(store.server.env):
            s3 = open_store(f"s3://{ARCHIVE_BUCKET}/{ARCHIVE_PREFIX}")
            getattr(s3, "client")        # made now, under the server's environment
        uploader = Uploader(directory, s3, sync=True)
        uploader.start(rng.segment_size)
        try:
            store_cpu0 = store.server.cpu_seconds()
            ru0 = resource.getrusage(resource.RUSAGE_SELF)
            t0 = time.perf_counter()
            for name in names:
                os.rename(staging / name, directory / name)
            uploader.poke()
            # Not close(drain=True) at once: it returns when nothing is
            # waiting, which is also the case before the uploader has
            # scanned the directory (the README's notes on the uploader).
            deadline = t0 + max(300.0, rng.nbytes / 2e6)
            while (uploader.uploaded_files < len(names) and uploader.failures == 0
                   and time.perf_counter() < deadline):
                time.sleep(0.005)
            done = uploader.close(drain=True, timeout=max(0.0, deadline - time.perf_counter()))
            wall = time.perf_counter() - t0
            ru1 = resource.getrusage(resource.RUSAGE_SELF)
            store_cpu1 = store.server.cpu_seconds()
        finally:
            uploader.close()
        uploaded = uploader.uploaded_bytes
        in_bucket = len(store.server.sizes(ARCHIVE_BUCKET, ARCHIVE_PREFIX))
        store.empty()
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(directory, ignore_errors=True)
        os.sync()
    gb = uploaded / 1e9
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    out: dict[str, Any] = dict(limit="upload", wall_s=round(wall, 4), bytes=uploaded,
                               files=uploader.uploaded_files, failures=uploader.failures)
    if not done or in_bucket != len(names) or not uploaded:
        out.update(status="failed", error=f"{in_bucket} of {len(names)} objects in the bucket; "
                                          f"last error: {uploader.last_error}")
        return out
    out.update(mb_s=round(uploaded / 1e6 / wall, 1),
               uploader_cpu_s_per_gb=round(cpu / gb, 3),
               store_cpu_s_per_gb=None if store_cpu0 is None or store_cpu1 is None
               else round((store_cpu1 - store_cpu0) / gb, 3))
    return out
