"""SegmentWriter: segment files, batched flushes, page checks, bad files."""

import errno
import os
import shutil
import struct
import subprocess
import sys
import textwrap

import pytest

from helpers.pagecache import resident_bytes
from helpers.wal_synth import PG15_MAGIC, SYSID, make_wal
from walfast import SegmentError, SegmentWriter, WalfastError, WalGapError, WalPageError

MB = 1 << 20
P = 8192


def writer(path, start=0, **kw):
    kw.setdefault("timeline", 1)
    kw.setdefault("segment_size", MB)
    return SegmentWriter(path, start_lsn=start, **kw)


def read(path, name):
    with open(os.path.join(path, name), "rb") as f:
        return f.read()


def test_write_across_segment_boundaries(tmp_path):
    wal = make_wal(0, 2 * MB + MB // 2, segment_size=MB)
    w = writer(tmp_path)
    w.write(0, wal[:MB - 100])
    assert sorted(os.listdir(tmp_path)) == ["000000010000000000000000.partial"]
    assert os.path.getsize(tmp_path / "000000010000000000000000.partial") == MB
    # One message crossing two segment boundaries.
    w.write(MB - 100, wal[MB - 100:])
    assert w.segments_completed == 2
    assert w.write_lsn == len(wal)
    # Completed segments are synced before their rename: their end is flushed.
    assert w.flush_lsn == 2 * MB
    assert w.current_file == str(tmp_path / "000000010000000000000002.partial")
    w.close()
    assert sorted(os.listdir(tmp_path)) == [
        "000000010000000000000000", "000000010000000000000001", "000000010000000000000002.partial",
    ]
    assert read(tmp_path, "000000010000000000000000") == wal[:MB]
    assert read(tmp_path, "000000010000000000000001") == wal[MB:2 * MB]
    assert read(tmp_path, "000000010000000000000002.partial") == wal[2 * MB:] + bytes(MB // 2)
    assert w.flush_lsn == len(wal)


def test_segment_ending_exactly_leaves_no_new_partial(tmp_path):
    wal = make_wal(0, MB, segment_size=MB)
    with writer(tmp_path) as w:
        w.write(0, wal)
    assert os.listdir(tmp_path) == ["000000010000000000000000"]


def test_flush_is_batched_and_reported_only_after_sync(tmp_path):
    wal = make_wal(0, MB // 2, segment_size=MB)
    w = writer(tmp_path)
    for i in range(0, 40 * P, P):
        w.write(i, wal[i:i + P])
    assert w.write_lsn == 40 * P
    assert w.flush_lsn == 0 and w.pending_bytes == 40 * P
    assert w.syncs == 0
    assert w.flush() == 40 * P
    assert w.syncs == 1 and w.pending_bytes == 0
    assert w.flush() == 40 * P and w.syncs == 1     # nothing new, no sync
    w.write(40 * P, wal[40 * P:])
    assert w.flush_lsn == 40 * P
    w.flush()
    assert w.syncs == 2 and w.flush_lsn == MB // 2
    w.close()


def test_flush_stops_before_an_incomplete_page_header(tmp_path):
    wal = make_wal(0, 3 * P, segment_size=MB)
    w = writer(tmp_path)
    w.write(0, wal[:2 * P + 10])       # the third page's header is cut at 10 bytes
    assert w.flush() == 2 * P
    w.write(2 * P + 10, wal[2 * P + 10:2 * P + 20])
    assert w.flush() == 2 * P + 20
    w.close()


def test_no_sync_mode(tmp_path):
    wal = make_wal(0, MB + P, segment_size=MB)
    w = writer(tmp_path, sync=False)
    w.write(0, wal)
    assert w.flush() == MB + P
    w.close()
    assert w.syncs == 0
    assert read(tmp_path, "000000010000000000000000") == wal[:MB]


def test_timeline_names_and_older_timeline_pages(tmp_path):
    # Pages copied into a new timeline's first segment keep the old TLI.
    start = 7 * MB
    wal = make_wal(start, 2 * P, segment_size=MB, timeline=1)
    with writer(tmp_path, start=start, timeline=2) as w:
        w.write(start, wal)
    assert os.listdir(tmp_path) == ["000000020000000000000007.partial"]


def test_learns_magic_and_system_identifier(tmp_path):
    wal = make_wal(0, 2 * P, segment_size=MB)
    with writer(tmp_path) as w:
        assert (w.page_magic, w.system_identifier) == (0, 0)
        w.write(0, wal)
        assert (w.page_magic, w.system_identifier) == (PG15_MAGIC, SYSID)


def corrupt(wal, lsn, fmt, offset, value):
    buf = bytearray(wal)
    struct.pack_into(fmt, buf, lsn + offset, value)
    return bytes(buf)


@pytest.mark.parametrize(
    "page, fmt, offset, value, field, kw",
    [
        (3, "<H", 0, 0xD106, "xlp_magic", {}),
        (0, "<H", 0, 0xD111, "xlp_magic", {"page_magic": PG15_MAGIC}),
        (3, "<H", 2, 0x0010, "xlp_info", {}),                      # unknown flag
        (3, "<H", 2, 0x0002, "xlp_info", {}),                      # long header mid-segment
        (0, "<H", 2, 0x0000, "xlp_info", {}),                      # no long header at offset 0
        (3, "<I", 4, 2, "xlp_tli", {}),                            # newer than the stream's
        (3, "<I", 4, 0, "xlp_tli", {}),
        (3, "<Q", 8, 2 * P, "xlp_pageaddr", {}),
        (0, "<Q", 24, SYSID + 1, "xlp_sysid", {"system_identifier": SYSID}),
        (0, "<I", 32, 16 * MB, "xlp_seg_size", {}),
        (0, "<I", 36, 4096, "xlp_xlog_blcksz", {}),
    ],
)
def test_wrong_page_header(tmp_path, page, fmt, offset, value, field, kw):
    wal = make_wal(0, 6 * P, segment_size=MB)
    bad = corrupt(wal, page * P, fmt, offset, value)
    w = writer(tmp_path, **kw)
    w.write(0, bad[:page * P])
    w.flush()
    with pytest.raises(WalPageError) as ei:
        w.write(page * P, bad[page * P:])
    err = ei.value
    assert err.field.startswith(field)
    assert err.lsn == page * P
    assert err.found == value
    assert f"invalid WAL page header at 0/{page * P:X}" in str(err)
    assert err.filename == str(tmp_path / "000000010000000000000000.partial")
    # Nothing from the bad page on is written or reported flushed...
    assert w.flush() == page * P
    # ...and the writer refuses more data.
    with pytest.raises(WalfastError, match="stopped after an earlier error"):
        w.write(w.write_lsn, b"x")
    w.close()
    assert w.flush_lsn == page * P
    # The bad page was never written: the file holds the good pages only.
    data = read(tmp_path, "000000010000000000000000.partial")
    assert data[:page * P] == bad[:page * P]
    assert data[page * P:] == bytes(MB - page * P)


@pytest.mark.parametrize("page, offset, value, field", [
    (3, 8, 2 * P, "xlp_pageaddr"),      # the last field of a short header that is checked
    (0, 36, 4096, "xlp_xlog_blcksz"),   # the last field of a long header
])
def test_bad_header_split_across_messages_writes_no_byte_of_it(tmp_path, page, offset,
                                                              value, field):
    """A header cut by the end of a message waits for its rest: when the
    rest makes it fail, not one of its bytes was written, wherever the cut
    fell (every offset inside the header)."""
    wal = make_wal(0, 6 * P, segment_size=MB)
    bad = corrupt(wal, page * P, "<Q" if field == "xlp_pageaddr" else "<I", offset, value)
    need = 40 if page == 0 else 20
    for cut in range(1, need):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        w = writer(d)
        split = page * P + cut
        w.write(0, bad[:split])
        assert w.flush() == page * P
        with pytest.raises(WalPageError) as ei:
            w.write(split, bad[split:])
        assert ei.value.field == field and ei.value.lsn == page * P
        w.close()
        data = read(d, "000000010000000000000000.partial")
        assert data[:page * P] == bad[:page * P]
        assert data[page * P:] == bytes(MB - page * P), f"cut at {cut}: header bytes written"


def test_good_header_split_across_messages_is_written_whole(tmp_path):
    wal = make_wal(0, 4 * P, segment_size=MB)
    for cut in (1, 19, 20, 39):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        w = writer(d)
        split = 2 * P + cut
        w.write(0, wal[:split])
        w.write(split, wal[split:])
        w.close()
        assert read(d, "000000010000000000000000.partial")[:4 * P] == wal


def test_long_header_checked_at_every_segment_start(tmp_path):
    wal = make_wal(0, MB + 2 * P, segment_size=MB)
    bad = corrupt(wal, MB, "<Q", 24, 42)
    w = writer(tmp_path)
    with pytest.raises(WalPageError, match="xlp_sysid is 0x2A") as ei:
        w.write(0, bad)
    assert ei.value.lsn == MB
    # The first segment was complete and good: it was finished normally.
    assert w.segments_completed == 1 and w.flush() == MB
    w.close()


def test_zeroed_pages_after_a_wal_switch(tmp_path):
    """PostgreSQL zeroes the rest of a segment after XLOG_SWITCH."""
    wal = bytearray(make_wal(0, MB + 2 * P, segment_size=MB))
    wal[5 * P + 100:MB] = bytes(MB - 5 * P - 100)
    with writer(tmp_path) as w:
        w.write(0, bytes(wal))
        assert w.segments_completed == 1
    assert read(tmp_path, "000000010000000000000000") == bytes(wal[:MB])


def test_valid_page_after_zeroed_page_is_rejected(tmp_path):
    wal = bytearray(make_wal(0, 8 * P, segment_size=MB))
    wal[4 * P:5 * P] = bytes(P)
    w = writer(tmp_path)
    with pytest.raises(WalPageError, match="earlier pages were zeroed") as ei:
        w.write(0, bytes(wal))
    assert ei.value.lsn == 5 * P
    w.close()


def test_reopens_full_size_partial_and_continues_mid_segment(tmp_path):
    wal = make_wal(0, MB, segment_size=MB)
    w = writer(tmp_path)
    w.write(0, wal[:300_000])
    w.close()
    w = writer(tmp_path, start=300_000)
    w.write(300_000, wal[300_000:])
    w.close()
    assert os.listdir(tmp_path) == ["000000010000000000000000"]
    assert read(tmp_path, "000000010000000000000000") == wal


def test_empty_partial_counts_as_new(tmp_path):
    (tmp_path / "000000010000000000000003.partial").write_bytes(b"")
    wal = make_wal(3 * MB, P, segment_size=MB)
    with writer(tmp_path, start=3 * MB) as w:
        w.write(3 * MB, wal)
    assert read(tmp_path, "000000010000000000000003.partial")[:P] == wal


def test_wrong_size_partial_is_refused_and_kept(tmp_path):
    name = "000000010000000000000003.partial"
    (tmp_path / name).write_bytes(b"x" * 12345)
    w = writer(tmp_path, start=3 * MB)
    with pytest.raises(SegmentError) as ei:
        w.write(3 * MB, make_wal(3 * MB, P, segment_size=MB))
    assert isinstance(ei.value, OSError)
    assert ei.value.filename == str(tmp_path / name)
    assert "has 12345 bytes, should be 0 or 1048576" in str(ei.value)
    assert (tmp_path / name).read_bytes() == b"x" * 12345


def test_mid_segment_start_without_partial(tmp_path):
    with pytest.raises(SegmentError, match=r"cannot start writing at 0/380000.*beginning, 0/300000"):
        writer(tmp_path, start=3 * MB + 0x80000)
    assert os.listdir(tmp_path) == []


def test_gap_writes_nothing(tmp_path):
    w = writer(tmp_path, start=MB)
    with pytest.raises(WalGapError) as ei:
        w.write(MB + P, make_wal(MB + P, P, segment_size=MB))
    assert (ei.value.expected, ei.value.received) == (MB, MB + P)
    assert os.listdir(tmp_path) == []


def test_closed_writer(tmp_path):
    w = writer(tmp_path)
    w.close()
    w.close()
    with pytest.raises(WalfastError, match="segment writer is closed"):
        w.write(0, b"x")


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError) as ei:
        writer(tmp_path / "nope")
    assert ei.value.filename == str(tmp_path / "nope")


@pytest.mark.parametrize("size", [0, MB - 1, 3 * MB, 2 * 1024 * MB, 512 * 1024])
def test_invalid_segment_size(tmp_path, size):
    with pytest.raises(ValueError, match="power of two between 1 MB and 1 GB"):
        writer(tmp_path, segment_size=size)


def test_any_valid_segment_size(tmp_path):
    for shift in range(20, 31):
        size = 1 << shift
        d = tmp_path / str(shift)
        d.mkdir()
        start = 5 * size
        wal = make_wal(start, 2 * P, segment_size=size)
        with SegmentWriter(d, timeline=1, start_lsn=start, segment_size=size, sync=False) as w:
            w.write(start, wal)
        (f,) = d.iterdir()
        assert os.path.getsize(f) == size
        with open(f, "rb") as fh:
            assert fh.read(2 * P) == wal
        f.unlink()


def _mount_tmpfs(path, size):
    if os.geteuid() != 0:
        return False
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True)
    return r.returncode == 0


def test_disk_full_is_an_error_at_segment_creation(tmp_path):
    """A full disk surfaces as ENOSPC when the segment is created, not as
    SIGBUS inside memcpy (which a sparse file would give)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if not _mount_tmpfs(mnt, 3 * MB // 2):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        wal = make_wal(0, MB + P, segment_size=MB)
        w = writer(mnt)
        w.write(0, wal[:MB - P])
        with pytest.raises(OSError) as ei:
            w.write(MB - P, wal[MB - P:])
        assert ei.value.errno == errno.ENOSPC
        assert ei.value.filename == str(mnt / "000000010000000000000001.partial")
        assert "could not preallocate" in str(ei.value)
        # The full segment was completed before the failure; nothing is lost.
        assert w.segments_completed == 1 and w.flush_lsn == MB
        w.close()
        assert read(mnt, "000000010000000000000000") == wal[:MB]
        assert os.path.getsize(mnt / "000000010000000000000001.partial") == 0
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_file_size_limit_is_an_error_at_segment_creation(tmp_path):
    """Same guarantee without root: a file-size limit below the segment size
    (EFBIG) fails the preallocation, in a child process so the limit and a
    possible SIGBUS cannot touch the test run."""
    wal = tmp_path.parent / f"{tmp_path.name}.wal"
    wal.write_bytes(make_wal(0, 8192, segment_size=MB))
    code = textwrap.dedent(f"""
        import pathlib, resource, signal, sys
        from walfast import SegmentWriter
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({MB // 2}, {MB // 2}))
        w = SegmentWriter({str(tmp_path)!r}, timeline=1, start_lsn=0, segment_size={MB})
        try:
            w.write(0, pathlib.Path({str(wal)!r}).read_bytes())
        except OSError as e:
            print("OSError", e.errno, e.filename)
            sys.exit(0)
        sys.exit(3)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["OSError", str(errno.EFBIG),
                                str(tmp_path / "000000010000000000000000.partial")]



def _unwritten_extents(path) -> int:
    """Extents of *path* that the file system marks unwritten (allocated by
    posix_fallocate, never written), from filefrag -v."""
    out = subprocess.run(["filefrag", "-v", str(path)], capture_output=True, text=True,
                         check=True).stdout
    return sum("unwritten" in line for line in out.splitlines())


@pytest.mark.parametrize("zero_fill", [False, True])
def test_zero_fill_new_segments(tmp_path, zero_fill):
    """zero_fill (used with --synchronous) writes zeros over a new segment
    before WAL lands in it, so no block is left "unwritten" and each later
    fdatasync needs no journal commit for the extent conversion.  The file's
    content is the same either way: WAL where written, zeros after."""
    if shutil.which("filefrag") is None:
        pytest.skip("filefrag (e2fsprogs) is not installed")
    wal = make_wal(0, MB // 2, segment_size=MB)
    with writer(tmp_path, zero_fill=zero_fill) as w:
        w.write(0, wal)
        w.flush()
        path = w.current_file
        unwritten = _unwritten_extents(path)
    assert read(tmp_path, "000000010000000000000000.partial") == wal + bytes(MB // 2)
    if zero_fill:
        assert unwritten == 0
    elif unwritten == 0:
        pytest.skip("this file system does not mark preallocated extents unwritten")


def _write_bytes() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("write_bytes"))


def test_zero_fill_does_not_multiply_the_bytes_written(tmp_path):
    """Small writes each followed by a flush (the --synchronous pattern)
    into a zero-filled segment send each byte to the disk about once more
    than the zeros: the zeros must not leave the file in large page-cache
    folios that every small flush writes back whole (benchmarks/README.md,
    "Why the engine writes the way it does")."""
    wal = make_wal(0, 2 * MB, segment_size=MB)
    before = _write_bytes()
    with writer(tmp_path, zero_fill=True) as w:
        for pos in range(0, len(wal), 4 * P):
            w.write(pos, wal[pos:pos + 4 * P])
            w.flush()
    written = _write_bytes() - before
    # zeros (2 MiB) + WAL (2 MiB) + the rewritten partial pages of flushes
    assert 2 * len(wal) <= written < 3 * len(wal), written


def test_completed_segments_leave_the_page_cache(tmp_path):
    """A completed (synced) segment's pages are released from the page cache
    (as PostgreSQL does with its own WAL): nothing reads them back, and
    reusing released pages is what makes writing cheap (see sf_release in
    walfast/_segfile.pxi).
    The open segment keeps the pages still being written."""
    seg = 4 * MB
    wal = make_wal(0, seg + seg // 2, segment_size=seg)
    with writer(tmp_path, segment_size=seg) as w:
        for pos in range(0, len(wal), 128 * 1024):
            w.write(pos, wal[pos:pos + 128 * 1024])
        done = tmp_path / "000000010000000000000000"
        assert done.exists()
        assert resident_bytes(done) == 0
        # the open segment's last written page is still cached
        assert resident_bytes(w.current_file) > 0
    assert read(tmp_path, "000000010000000000000000") == wal[:seg]
    assert read(tmp_path, "000000010000000000000001.partial")[:seg // 2] == wal[seg:]
