"""walfast.segments: resume point, durable renames, history files, the target
directory.  No server needed: directories are built by hand, segment-sized
files as sparse files (``truncate``) so 64 MiB costs nothing."""

from __future__ import annotations

import errno
import gzip
import logging
import os
import sys
import types
from pathlib import Path

import pytest

from walfast.errors import ServerMismatchError, WalfastError
from walfast.lsn import segment_file_name
from walfast.waldir.directory import check_directory, write_history_file
from walfast.waldir.durable import durable_rename, fsync_dir
from walfast.waldir.scan import find_streaming_start

MiB = 1 << 20
SEGMENT_SIZES = [1 * MiB, 64 * MiB]


def name(tli: int, segno: int, seg_size: int, suffix: str = "") -> str:
    return segment_file_name(tli, segno, seg_size) + suffix


def sparse(directory: Path, filename: str, size: int) -> Path:
    path = directory / filename
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def gz(directory: Path, filename: str, uncompressed_size: int) -> Path:
    """A real gzip file of ``uncompressed_size`` zero bytes."""
    path = directory / filename
    with gzip.open(path, "wb", compresslevel=1) as f:
        chunk = bytes(MiB)
        left = uncompressed_size
        while left:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
    return path


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "walfast.waldir.scan" and r.levelno == logging.WARNING]


@pytest.fixture
def wal_dir(tmp_path) -> Path:
    d = tmp_path / "wal"
    d.mkdir()
    return d


# ------------------------------------------------- find_streaming_start --

@pytest.mark.parametrize("seg", SEGMENT_SIZES)
def test_empty_directory(wal_dir, seg):
    assert find_streaming_start(wal_dir, seg) is None


@pytest.mark.parametrize("seg", SEGMENT_SIZES)
def test_junk_names_are_ignored(wal_dir, seg, caplog):
    good = name(0xA, 0x2B, seg)
    assert good.lower() != good
    for junk in [
        good.lower(),                       # lowercase hex
        good[:-1],                          # 23 characters
        good + "0",                         # 25 characters
        "00000002.history",
        "00000002.history.tmp",
        good + ".tmp",
        good + ".partial.tmp",
        good + ".gz.tmp",
        good + ".zstd",                     # (".zst" is walfast's own compressed name)
        good + ".zst.partial.tmp",          # a compressed restart's side file
        good + ".partial.gz",               # suffixes in the wrong order
        good + ".00000028.backup",
        "X" + good[1:],
        ".partial",
    ]:
        sparse(wal_dir, junk, seg)
    (wal_dir / "archive_status").mkdir()
    with caplog.at_level(logging.WARNING, logger="walfast.waldir.scan"):
        assert find_streaming_start(wal_dir, seg) is None
    assert warnings_of(caplog) == []


@pytest.mark.parametrize("seg", SEGMENT_SIZES)
def test_single_complete_segment(wal_dir, seg):
    sparse(wal_dir, name(1, 7, seg), seg)
    assert find_streaming_start(wal_dir, seg) == (8 * seg, 1)


@pytest.mark.parametrize("seg", SEGMENT_SIZES)
def test_partial_after_completed(wal_dir, seg):
    for segno in (3, 4, 5):
        sparse(wal_dir, name(1, segno, seg), seg)
    sparse(wal_dir, name(1, 6, seg, ".partial"), seg)
    assert find_streaming_start(wal_dir, seg) == (6 * seg, 1)


@pytest.mark.parametrize("seg", SEGMENT_SIZES)
@pytest.mark.parametrize("size", [0, 1, 8192, -1])
def test_partial_is_not_size_checked(wal_dir, seg, size):
    sparse(wal_dir, name(1, 3, seg), seg)
    sparse(wal_dir, name(1, 4, seg, ".partial"), seg - 1 if size == -1 else size)
    assert find_streaming_start(wal_dir, seg) == (4 * seg, 1)


@pytest.mark.parametrize("seg", SEGMENT_SIZES)
@pytest.mark.parametrize("bad_size", [0, 8192, -1, +1])
def test_completed_file_of_wrong_size_is_skipped(wal_dir, seg, bad_size, caplog):
    size = seg + bad_size if bad_size in (-1, +1) else bad_size
    sparse(wal_dir, name(1, 3, seg), seg)
    bad = name(1, 4, seg)
    sparse(wal_dir, bad, size)
    with caplog.at_level(logging.WARNING, logger="walfast.waldir.scan"):
        assert find_streaming_start(wal_dir, seg) == (4 * seg, 1)
    assert warnings_of(caplog) == [f'segment file "{bad}" has incorrect size {size}, skipping']


@pytest.mark.parametrize("seg", SEGMENT_SIZES)
def test_only_wrong_sized_files_means_no_position(wal_dir, seg):
    sparse(wal_dir, name(1, 4, seg), seg // 2)
    assert find_streaming_start(wal_dir, seg) is None


def test_other_segment_size_files_are_skipped(wal_dir):
    # Files of a 1 MiB cluster seen by a 64 MiB walfast: all wrong-sized.
    sparse(wal_dir, name(1, 9, MiB), MiB)
    assert find_streaming_start(wal_dir, 64 * MiB) is None
    assert find_streaming_start(wal_dir, MiB) == (10 * MiB, 1)


@pytest.mark.parametrize("seg", SEGMENT_SIZES)
def test_complete_beats_partial_of_same_segment(wal_dir, seg):
    sparse(wal_dir, name(1, 4, seg, ".partial"), seg)
    sparse(wal_dir, name(1, 4, seg), seg)
    sparse(wal_dir, name(1, 4, seg, ".gz.partial"), 0)
    assert find_streaming_start(wal_dir, seg) == (5 * seg, 1)


@pytest.mark.parametrize("seg", SEGMENT_SIZES)
def test_higher_timeline_wins_a_tie(wal_dir, seg):
    # The classic after-promotion layout: old-TLI .partial and new-TLI file
    # of the same segment number.
    sparse(wal_dir, name(1, 4, seg), seg)
    sparse(wal_dir, name(1, 5, seg, ".partial"), seg)
    sparse(wal_dir, name(2, 5, seg, ".partial"), seg)
    assert find_streaming_start(wal_dir, seg) == (5 * seg, 2)
    # The higher timeline wins even against a completed lower-timeline file.
    sparse(wal_dir, name(1, 5, seg), seg)
    assert find_streaming_start(wal_dir, seg) == (5 * seg, 2)
    sparse(wal_dir, name(2, 5, seg), seg)
    assert find_streaming_start(wal_dir, seg) == (6 * seg, 2)


@pytest.mark.parametrize("seg", SEGMENT_SIZES)
def test_segment_number_beats_timeline(wal_dir, seg):
    sparse(wal_dir, name(3, 9, seg), seg)
    sparse(wal_dir, name(1, 10, seg, ".partial"), 0)
    assert find_streaming_start(wal_dir, seg) == (10 * seg, 1)


@pytest.mark.parametrize("seg", SEGMENT_SIZES)
def test_segment_numbers_across_log_ids(wal_dir, seg):
    per_id = (1 << 32) // seg
    last_of_log0 = per_id - 1
    first_of_log1 = per_id
    sparse(wal_dir, name(1, last_of_log0, seg), seg)
    sparse(wal_dir, name(1, first_of_log1, seg), seg)
    assert name(1, first_of_log1, seg) == "000000010000000100000000"
    assert find_streaming_start(wal_dir, seg) == ((first_of_log1 + 1) * seg, 1)
    # Far beyond 4 GiB: the LSN's high half is used.
    sparse(wal_dir, name(1, 0x16 * per_id + 3, seg, ".partial"), 0)
    assert find_streaming_start(wal_dir, seg) == ((0x16 * per_id + 3) * seg, 1)


def test_impossible_seg_part_is_skipped(wal_dir, caplog):
    # With 64 MiB segments a "log" has 64 segments: ...000000FF cannot exist.
    seg = 64 * MiB
    sparse(wal_dir, name(1, 2, seg), seg)
    sparse(wal_dir, "0000000100000000000000FF", seg)
    with caplog.at_level(logging.WARNING, logger="walfast.waldir.scan"):
        assert find_streaming_start(wal_dir, seg) == (3 * seg, 1)
    assert warnings_of(caplog) == [
        'file "0000000100000000000000FF" is not a WAL segment name for 64 MB segments, skipping']
    # With 1 MiB segments the same name is segment 255.
    sparse(wal_dir, "0000000100000000000000FF", MiB)
    assert find_streaming_start(wal_dir, MiB) == (256 * MiB, 1)


def test_timeline_zero_is_skipped(wal_dir, caplog):
    sparse(wal_dir, "000000000000000000000009", MiB)
    with caplog.at_level(logging.WARNING, logger="walfast.waldir.scan"):
        assert find_streaming_start(wal_dir, MiB) is None
    assert len(warnings_of(caplog)) == 1


def test_directory_with_segment_name_is_skipped(wal_dir, caplog):
    sparse(wal_dir, name(1, 3, MiB), MiB)
    (wal_dir / name(1, 4, MiB, ".partial")).mkdir()
    with caplog.at_level(logging.WARNING, logger="walfast.waldir.scan"):
        assert find_streaming_start(wal_dir, MiB) == (4 * MiB, 1)
    dir_name = name(1, 4, MiB, ".partial")
    assert warnings_of(caplog) == [f'"{dir_name}" is not a regular file, skipping']


def test_symlink_to_segment_counts(wal_dir, tmp_path):
    target = sparse(tmp_path, "elsewhere", MiB)
    (wal_dir / name(1, 3, MiB)).symlink_to(target)
    assert find_streaming_start(wal_dir, MiB) == (4 * MiB, 1)
    (wal_dir / name(1, 4, MiB)).symlink_to(tmp_path / "dangling")
    assert find_streaming_start(wal_dir, MiB) == (4 * MiB, 1)


# Segment 0: pg_receivewal's `high_segno > 0` test makes a directory whose
# best file is segment 0 look empty; walfast deliberately returns its position.

@pytest.mark.parametrize("seg", SEGMENT_SIZES)
def test_segment_zero_complete_is_a_real_position(wal_dir, seg):
    sparse(wal_dir, name(1, 0, seg), seg)
    assert find_streaming_start(wal_dir, seg) == (seg, 1)


@pytest.mark.parametrize("seg", SEGMENT_SIZES)
def test_segment_zero_partial_is_a_real_position(wal_dir, seg):
    sparse(wal_dir, name(4, 0, seg, ".partial"), 0)
    result = find_streaming_start(wal_dir, seg)
    assert result is not None and result == (0, 4)


# gzip

def test_gz_with_correct_isize(wal_dir):
    sparse(wal_dir, name(1, 3, MiB), MiB)
    path = gz(wal_dir, name(1, 4, MiB, ".gz"), MiB)
    assert gzip.decompress(path.read_bytes()) == bytes(MiB)  # really gzip
    assert find_streaming_start(wal_dir, MiB) == (5 * MiB, 1)


def test_gz_isize_of_64mb_segment(wal_dir):
    # Only the trailer is read: a real gzip stream of 64 MiB is not needed to
    # test the comparison, so build the 8-byte trailer by hand after a tiny
    # deflate stream (CRC32 left zero; pg_receivewal does not check it either).
    seg = 64 * MiB
    header_and_body = gzip.compress(b"")[:-8]
    (wal_dir / name(1, 2, seg, ".gz")).write_bytes(
        header_and_body + bytes(4) + seg.to_bytes(4, "little"))
    assert find_streaming_start(wal_dir, seg) == (3 * seg, 1)


def test_gz_with_wrong_isize_is_skipped(wal_dir, caplog):
    sparse(wal_dir, name(1, 3, MiB), MiB)
    bad = name(1, 4, MiB, ".gz")
    gz(wal_dir, bad, MiB - 8192)
    with caplog.at_level(logging.WARNING, logger="walfast.waldir.scan"):
        assert find_streaming_start(wal_dir, MiB) == (4 * MiB, 1)
    assert warnings_of(caplog) == [
        f'compressed segment file "{bad}" has incorrect uncompressed size {MiB - 8192}, skipping']


@pytest.mark.parametrize("content", [b"", b"\x1f\x8b\x08"])
def test_gz_too_short_is_skipped(wal_dir, content, caplog):
    bad = name(1, 4, MiB, ".gz")
    (wal_dir / bad).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="walfast.waldir.scan"):
        assert find_streaming_start(wal_dir, MiB) is None
    assert len(warnings_of(caplog)) == 1 and bad in warnings_of(caplog)[0]


def test_gz_partial_is_not_checked(wal_dir):
    gz(wal_dir, name(1, 3, MiB, ".gz"), MiB)
    (wal_dir / name(1, 4, MiB, ".gz.partial")).write_bytes(b"garbage")
    assert find_streaming_start(wal_dir, MiB) == (4 * MiB, 1)


def test_gz_and_plain_mixed(wal_dir):
    gz(wal_dir, name(1, 3, MiB, ".gz"), MiB)
    sparse(wal_dir, name(1, 4, MiB), MiB)
    gz(wal_dir, name(1, 5, MiB, ".gz"), MiB)
    assert find_streaming_start(wal_dir, MiB) == (6 * MiB, 1)


# lz4 (the lz4 package is optional and not a dependency)

def test_lz4_without_lz4_module_is_skipped(wal_dir, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "lz4", None)        # makes import fail
    monkeypatch.setitem(sys.modules, "lz4.frame", None)
    sparse(wal_dir, name(1, 3, MiB), MiB)
    lz = name(1, 4, MiB, ".lz4")
    (wal_dir / lz).write_bytes(b"\x04\x22\x4d\x18")
    sparse(wal_dir, name(1, 4, MiB, ".lz4.partial"), 0)  # partials need no lz4
    with caplog.at_level(logging.WARNING, logger="walfast.waldir.scan"):
        assert find_streaming_start(wal_dir, MiB) == (4 * MiB, 1)
    (msg,) = warnings_of(caplog)
    assert lz in msg and "LZ4 support is missing" in msg


class _FakeLZ4Decompressor:
    """Stands in for lz4.frame.LZ4FrameDecompressor.  "Compressed" format:
    each frame is ``FAKE <8-byte little-endian length> FRAMEEND``;
    decompressing yields that many zero bytes, honouring ``max_length`` like
    the real one; anything else raises RuntimeError as lz4 does."""

    def __init__(self):
        self.eof = False
        self.needs_input = True
        self.unused_data = b""
        self._buf = b""
        self._left = None

    def decompress(self, data, max_length=-1):
        if self.eof:
            raise EOFError("already at end of frame")
        self._buf += data
        if self._left is None:
            if len(self._buf) < 12:
                self.needs_input = True
                return b""
            if self._buf[:4] != b"FAKE":
                raise RuntimeError("LZ4F_decompress failed with code: ERROR_frameType_unknown")
            self._left = int.from_bytes(self._buf[4:12], "little")
            self._buf = self._buf[12:]
        n = self._left if max_length < 0 else min(self._left, max_length)
        self._left -= n
        if self._left == 0 and len(self._buf) >= 8:
            if self._buf[:8] != b"FRAMEEND":
                raise RuntimeError("LZ4F_decompress failed with code: ERROR_GENERIC")
            self.eof = True
            self.unused_data = self._buf[8:]
            self._buf = b""
        self.needs_input = self._left == 0 and not self.eof
        return bytes(n)


def _fake_frame(size: int) -> bytes:
    return b"FAKE" + size.to_bytes(8, "little") + b"FRAMEEND"


@pytest.fixture
def fake_lz4(monkeypatch):
    frame = types.ModuleType("lz4.frame")
    frame.LZ4FrameDecompressor = _FakeLZ4Decompressor
    pkg = types.ModuleType("lz4")
    pkg.frame = frame
    monkeypatch.setitem(sys.modules, "lz4", pkg)
    monkeypatch.setitem(sys.modules, "lz4.frame", frame)


@pytest.mark.parametrize("frames, ok", [
    ([MiB], True),
    ([MiB // 2, MiB // 2], True),          # concatenated frames are summed
    ([MiB - 1], False),
    ([MiB, 1], False),
    ([3 * MiB], False),
])
def test_lz4_uncompressed_size_is_checked(wal_dir, fake_lz4, frames, ok, caplog):
    sparse(wal_dir, name(1, 3, MiB), MiB)
    lz = name(1, 4, MiB, ".lz4")
    (wal_dir / lz).write_bytes(b"".join(_fake_frame(n) for n in frames))
    with caplog.at_level(logging.WARNING, logger="walfast.waldir.scan"):
        result = find_streaming_start(wal_dir, MiB)
    if ok:
        assert result == (5 * MiB, 1)
        assert warnings_of(caplog) == []
    else:
        assert result == (4 * MiB, 1)
        (msg,) = warnings_of(caplog)
        assert msg.startswith(f'compressed segment file "{lz}" has incorrect uncompressed size ')


@pytest.mark.parametrize("content", [
    b"not lz4 at all, not lz4 at all",
    _fake_frame(MiB) + b"garbage after the frame",
])
def test_lz4_decoding_error_is_skipped(wal_dir, fake_lz4, content, caplog):
    sparse(wal_dir, name(1, 3, MiB), MiB)
    lz = name(1, 4, MiB, ".lz4")
    (wal_dir / lz).write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="walfast.waldir.scan"):
        assert find_streaming_start(wal_dir, MiB) == (4 * MiB, 1)
    (msg,) = warnings_of(caplog)
    assert msg.startswith(f'could not decompress file "{lz}": ')


def test_lz4_stops_reading_once_too_big(wal_dir, fake_lz4, monkeypatch):
    # A frame claiming 1 TiB: counting must stop just past the segment size,
    # not decompress a terabyte of zeros.
    lz = name(1, 4, MiB, ".lz4")
    (wal_dir / lz).write_bytes(_fake_frame(1 << 40))
    assert find_streaming_start(wal_dir, MiB) is None


# arguments and errors

def test_invalid_segment_size(wal_dir):
    for bad in (0, 1000, 3 * MiB, 2 << 30, MiB // 2):
        with pytest.raises(ValueError):
            find_streaming_start(wal_dir, bad)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError) as ei:
        find_streaming_start(tmp_path / "nope", MiB)
    assert ei.value.filename == str(tmp_path / "nope")


# ---------------------------------------------------------- durability --

def test_fsync_dir(wal_dir):
    fsync_dir(wal_dir)
    fsync_dir(str(wal_dir))
    with pytest.raises(FileNotFoundError) as ei:
        fsync_dir(wal_dir / "nope")
    assert os.fspath(ei.value.filename) == str(wal_dir / "nope")
    f = sparse(wal_dir, "file", 1)
    with pytest.raises(NotADirectoryError):
        fsync_dir(f)


@pytest.fixture
def sync_calls(monkeypatch):
    """Records, in order, the path of every fsync'ed fd and every rename."""
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(os.readlink(f"/proc/self/fd/{fd}")),
                                                 real_fsync(fd)))
    real_replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("rename", str(a), str(b))),
                                                     real_replace(a, b)))
    return calls


@pytest.mark.parametrize("sync", [True, False])
def test_durable_rename(wal_dir, sync, sync_calls):
    src = wal_dir / "000000010000000000000003.partial"
    src.write_bytes(b"wal")
    dst = wal_dir / "000000010000000000000003"
    calls = sync_calls
    durable_rename(src, dst, wal_dir, sync=sync)
    assert not src.exists() and dst.read_bytes() == b"wal"
    if sync:
        # The source's data, then the rename, then the directory entry.
        assert calls == [str(src), ("rename", str(src), str(dst)), str(wal_dir)]
    else:
        assert calls == [("rename", str(src), str(dst))]


def test_durable_rename_replaces_and_defaults_directory(wal_dir):
    src = wal_dir / "a.tmp"
    src.write_bytes(b"new")
    (wal_dir / "a").write_bytes(b"old")
    durable_rename(src, wal_dir / "a")
    assert (wal_dir / "a").read_bytes() == b"new"


def test_durable_rename_missing_source(wal_dir):
    with pytest.raises(FileNotFoundError):
        durable_rename(wal_dir / "nope", wal_dir / "dst", wal_dir)
    assert not (wal_dir / "dst").exists()


HISTORY = b"1\t0/3000148\tno recovery target specified\n"


def test_write_history_file(wal_dir, sync_calls):
    calls = sync_calls
    path = write_history_file(wal_dir, 2, HISTORY)
    assert path == wal_dir / "00000002.history"
    assert path.read_bytes() == HISTORY
    assert sorted(p.name for p in wal_dir.iterdir()) == ["00000002.history"]
    assert path.stat().st_mode & 0o777 == 0o600
    tmp = str(wal_dir / "00000002.history.tmp")
    # Written as .tmp, fsynced (while writing, and by durable_rename), renamed,
    # then the directory fsynced.
    assert calls[-2:] == [("rename", tmp, str(path)), str(wal_dir)]
    assert set(calls[:-2]) == {tmp}


def test_write_history_file_is_idempotent(wal_dir):
    path = write_history_file(wal_dir, 0x1A, HISTORY)
    assert path.name == "0000001A.history"
    before = path.stat()
    assert write_history_file(wal_dir, 0x1A, HISTORY) == path
    after = path.stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert sorted(p.name for p in wal_dir.iterdir()) == ["0000001A.history"]


def test_write_history_file_conflict(wal_dir):
    path = write_history_file(wal_dir, 3, HISTORY)
    other = HISTORY + b"2\t0/5000000\tno recovery target specified\n"
    with pytest.raises(ServerMismatchError) as ei:
        write_history_file(wal_dir, 3, other)
    assert isinstance(ei.value, WalfastError)
    assert str(path) in str(ei.value)
    assert path.read_bytes() == HISTORY  # untouched
    assert sorted(p.name for p in wal_dir.iterdir()) == ["00000003.history"]


def test_write_history_file_replaces_stale_tmp(wal_dir):
    (wal_dir / "00000002.history.tmp").write_bytes(b"half-written garbage from a crash" * 10)
    path = write_history_file(wal_dir, 2, HISTORY, sync=False, mode=0o640)
    assert path.read_bytes() == HISTORY
    assert sorted(p.name for p in wal_dir.iterdir()) == ["00000002.history"]


def test_write_history_file_failure_leaves_no_tmp(wal_dir, monkeypatch):
    def failing_replace(a, b):
        raise OSError(28, "No space left on device", str(a))
    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError) as ei:
        write_history_file(wal_dir, 2, HISTORY)
    assert ei.value.errno == 28
    assert list(wal_dir.iterdir()) == []


def test_write_history_file_invalid_timeline(wal_dir):
    with pytest.raises(ValueError):
        write_history_file(wal_dir, 0, HISTORY)


# ------------------------------------------------------- check_directory --

def test_check_directory_ok(wal_dir):
    check_directory(wal_dir)
    check_directory(str(wal_dir))


def test_check_directory_missing(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError) as ei:
        check_directory(missing)
    err = ei.value
    assert err.errno == 2
    assert err.filename == str(missing)
    assert err.strerror == "No such file or directory"
    # What the CLI prints, as pg_receivewal does:
    assert f'could not open directory "{err.filename}": {err.strerror}' == \
        f'could not open directory "{missing}": No such file or directory'


def test_check_directory_file_instead_of_directory(tmp_path):
    f = sparse(tmp_path, "file", 10)
    with pytest.raises(NotADirectoryError) as ei:
        check_directory(f)
    assert ei.value.filename == str(f)
    assert ei.value.strerror == os.strerror(errno.ENOTDIR)


@pytest.mark.skipif(os.geteuid() == 0, reason="root bypasses permission checks")
def test_check_directory_not_writable(tmp_path):
    d = tmp_path / "ro"
    d.mkdir(mode=0o500)
    try:
        with pytest.raises(PermissionError) as ei:
            check_directory(d)
        assert ei.value.filename == str(d)
    finally:
        d.chmod(0o700)


def test_check_directory_not_writable_via_access(tmp_path, monkeypatch):
    # The same check when running as root: make os.access say no.
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(PermissionError) as ei:
        check_directory(tmp_path)
    assert ei.value.filename == str(tmp_path)
    assert ei.value.errno == errno.EACCES
    assert ei.value.strerror == "Permission denied"
