"""Microbenchmarks of walfast's compiled engine against memcpy bandwidth.

Run by path (never collected by the test run)::

    python -m pytest benchmarks/bench_engine.py --benchmark-json=/tmp/bench.json -q

Groups (every round moves the same 256 MiB of WAL; see benchmarks/README.md):

* ``memcpy``: the reference measured in the same run.  ``numpy``: np.copyto,
  16 MiB at a time, into a preallocated, already-touched 256 MiB array (memory
  bandwidth).  ``fresh_mmap[plain]``: the same copies into a fresh MAP_SHARED
  mapping of a fresh posix_fallocate'd 16 MiB file per segment, as the
  engine did before it moved to pwrite (first-touch page faults and
  page-cache allocation included, no sync); ``fresh_mmap[madv_hugepage]``: the same with MADV_HUGEPAGE.
* ``parse+copy``: StreamParser.feed_copydata, one call per CopyData payload
  (what the receive loop does with each message libpq returns), into
  SegmentWriter(sync=False).
* ``parse+copy+flush``: the same with sync=True and writer.flush() whenever
  8 MiB / 64 MiB are pending (durable: fdatasync, plus the syncs of segment
  creation and completion).
"""

from __future__ import annotations

import mmap
import os

import numpy as np
import pytest
from conftest import COPY_CHUNK, MiB

import walfast

# ------------------------------------------------------------- helpers --


def _check_round(stream, parser, writer):
    assert writer.closed
    assert writer.write_lsn == stream.end_lsn
    assert writer.segments_completed == stream.n_segments
    assert parser.wal_bytes == stream.wal_bytes
    assert parser.messages == stream.n_messages


def _engine_setup(stream, out_dirs, args, *, sync):
    def setup():
        writer = stream.writer(out_dirs.new(), sync=sync)
        return (walfast.StreamParser(writer), writer, *args), {}
    return setup


def _engine_teardown(stream, out_dirs):
    def teardown(parser, writer, *args):
        _check_round(stream, parser, writer)
        out_dirs.remove(writer.directory)
    return teardown


def _drive(feed, writer, chunks, every):
    """Feed every chunk; flush whenever *every* bytes are pending (0: never,
    only the segment completions sync); then close the writer."""
    flush = writer.flush
    for c in chunks:
        feed(c)
        if every and writer.pending_bytes >= every:
            flush()
    writer.close()


def feed_copydata_all(parser, writer, payloads, every=0):
    _drive(parser.feed_copydata, writer, payloads, every)


# -------------------------------------------------------------- sanity --

def test_sanity_output_matches_input(stream, out_dirs):
    """Not a benchmark: one pass writes exactly the WAL."""
    d = out_dirs.new()
    writer = stream.writer(d, sync=False)
    parser = walfast.StreamParser(writer)
    feed_copydata_all(parser, writer, stream.payloads)
    _check_round(stream, parser, writer)
    names = sorted(os.listdir(d))
    assert len(names) == stream.n_segments and not any(n.endswith(".partial") for n in names)
    for i, name in enumerate(names):
        with open(os.path.join(d, name), "rb") as f:
            seg = stream.wal[i * stream.segment_size:(i + 1) * stream.segment_size]
            assert f.read() == seg, f"{name} differs from the input"
    out_dirs.remove(d)


# -------------------------------------------------------------- memcpy --

@pytest.mark.benchmark(group="memcpy")
def test_memcpy_numpy(engine_bench, stream):
    """np.copyto, 16 MiB at a time, into a preallocated, touched array."""
    src = stream.wal_array
    dst = np.empty_like(src)
    dst.fill(1)                     # fault every page in before timing

    def copy_all():
        for off in range(0, len(src), COPY_CHUNK):
            np.copyto(dst[off:off + COPY_CHUNK], src[off:off + COPY_CHUNK])

    engine_bench(copy_all, rounds=30, warmup_rounds=3, nbytes=stream.wal_bytes)
    assert np.array_equal(dst, src)


@pytest.mark.benchmark(group="memcpy")
@pytest.mark.parametrize("advice", [None, "hugepage"], ids=["plain", "madv_hugepage"])
def test_memcpy_fresh_mmap(engine_bench, stream, out_dirs, advice):
    """np.copyto into a fresh mmap of a fresh posix_fallocate'd file per
    16 MiB segment (open, fallocate, mmap, copy, munmap, close; no sync).

    ``plain`` is what the engine does today.  ``madv_hugepage`` adds
    madvise(MADV_HUGEPAGE) on the mapping: where the kernel and filesystem
    give the page cache large folios (ext4 on recent kernels, THP "madvise"
    or "always"), a 2 MiB folio is mapped by one fault instead of 512.
    """
    src = stream.wal_array
    seg = stream.segment_size
    madv = mmap.MADV_HUGEPAGE if advice == "hugepage" else None

    def copy_all(d):
        for i, off in enumerate(range(0, len(src), seg)):
            fd = os.open(os.path.join(d, f"{i:024X}"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, seg)
                mm = mmap.mmap(fd, seg, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
                if madv is not None:
                    mm.madvise(madv)
                dst = np.frombuffer(mm, dtype=np.uint8)
                for c in range(0, seg, COPY_CHUNK):
                    np.copyto(dst[c:c + COPY_CHUNK], src[off + c:off + c + COPY_CHUNK])
                del dst
                mm.close()
            finally:
                os.close(fd)

    engine_bench(copy_all, setup=lambda: ((out_dirs.new(),), {}),
                 teardown=out_dirs.remove, rounds=12, warmup_rounds=1,
                 nbytes=stream.wal_bytes)


# ---------------------------------------------------------- parse+copy --

@pytest.mark.benchmark(group="parse+copy")
def test_parse_copy_feed_copydata(engine_bench, stream, out_dirs):
    """StreamParser.feed_copydata, one call per CopyData payload, sync=False."""
    engine_bench(feed_copydata_all,
                 setup=_engine_setup(stream, out_dirs, (stream.payloads,), sync=False),
                 teardown=_engine_teardown(stream, out_dirs), rounds=12, warmup_rounds=1,
                 nbytes=stream.wal_bytes, nmsgs=stream.n_messages)


# ---------------------------------------------------- parse+copy+flush --

@pytest.mark.benchmark(group="parse+copy+flush")
@pytest.mark.parametrize("every_mib", [8, 64], ids=lambda m: f"flush{m}MiB")
def test_parse_copy_flush(engine_bench, stream, out_dirs, every_mib):
    """feed_copydata, sync=True; writer.flush() whenever >= every_mib MiB
    are pending.

    Segment completion syncs too (every 16 MiB), so with 64 MiB the explicit
    flush never finds anything pending: that row is "durable at segment
    completion only"."""
    syncs = []
    teardown = _engine_teardown(stream, out_dirs)

    def teardown_count(parser, writer, *args):
        syncs.append(writer.syncs)
        teardown(parser, writer, *args)

    engine_bench(feed_copydata_all,
                 setup=_engine_setup(stream, out_dirs, (stream.payloads, every_mib * MiB),
                                     sync=True),
                 teardown=teardown_count, rounds=6, warmup_rounds=1,
                 nbytes=stream.wal_bytes, nmsgs=stream.n_messages, flush_every_MiB=every_mib)
    if syncs:
        engine_bench.benchmark.extra_info["fdatasyncs_per_round"] = syncs[-1]
