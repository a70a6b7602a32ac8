"""Compressed output (gzip, lz4, zstd): the engine alone, then against a real
server side by side with pg_receivewal -Z.

Unit part (no server): SegmentWriter(sink=ChunkQueue) + CompressWorker on
synthetic WAL: file names, frame kinds, standard decoders and tools, the
memory bound under a slow worker, the durability order, worker errors,
restarting on an existing compressed .partial.  The worker is observed
through a subclass (:class:`ObservedWorker`): each chunk it takes, and each
call on the files it writes.

Server part: the same WAL range streamed by walfast (in-process,
stream_once) and by pg_receivewal -Z gzip / -Z lz4; names, decompressed
contents, each continuing the other's directory, and --synchronous.
"""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import subprocess
import threading
import time
import zlib
from pathlib import Path

import lz4.frame
import pytest
import zstandard

from helpers.pagecache import resident_bytes
from helpers.receivers import START_RE, clean_env, replication_rows, wait_until
from helpers.wal_synth import cut_like_walsender, make_wal
from walfast import SegmentWriter, _core, majors
from walfast.cluster import tool_env
from walfast.waldir.codecs import SUFFIXES, CompressionSpec, DecodeError, decoded_length
from walfast.waldir.compressor import CompressWorker
from walfast.lsn import format_lsn, parse_lsn, segment_file_name
from walfast.waldir.layout import STATE_DIR, state_dir
from walfast.waldir.scan import find_streaming_start
from walfast.stream import ReceiveOutcome, StreamOptions, stream_once

MB = 1 << 20
METHODS = ["gzip", "lz4", "zstd"]


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #


def _wal_files(directory: Path) -> list[str]:
    """The directory's names but walfast's state directory, which
    pg_receivewal ignores."""
    return sorted(n for n in os.listdir(directory) if n != STATE_DIR)

def decompress(data: bytes, method: str) -> bytes:
    """All complete members/frames of *data* (strict: damaged data raises)."""
    if method == "gzip":
        return gzip.decompress(data)
    if method == "lz4":
        return lz4.frame.decompress(data)
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def decodable_prefix(data: bytes, method: str) -> bytes:
    """What a streaming decoder gets out of a file that may end mid-frame
    (a .partial being written, flushed at a sync point)."""
    if method == "gzip":
        return zlib.decompressobj(31).decompress(data)
    if method == "lz4":
        # python-lz4 holds back part of a flushed block unless given an
        # output size (the lz4 command outputs it: the file is complete).
        return lz4.frame.LZ4FrameDecompressor().decompress(data, max_length=64 * MB)
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


def tool_check(path: Path, method: str) -> None:
    """The standard command-line tool accepts the file (skipped if absent)."""
    tool = {"gzip": "gzip", "lz4": "lz4", "zstd": "zstd"}[method]
    if shutil.which(tool) is None:
        return
    r = subprocess.run([tool, "-t", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"{tool} -t {path}: {r.stderr}"


class RecordingFile:
    """A worker's SegmentFile, with every call recorded (name, the file's
    writeback and release offsets and the queue's published flush position
    right after it returned)."""

    def __init__(self, worker: "ObservedWorker", file: _core.SegmentFile) -> None:
        self._worker = worker
        self._file = file
        self.calls: list[tuple[str, int, int, int]] = []

    def __getattr__(self, name):
        return getattr(self._file, name)

    def __setattr__(self, name, value):
        if name == "lsn":
            self._file.lsn = value
        else:
            super().__setattr__(name, value)

    def _call(self, name, *args, **kw):
        getattr(self._file, name)(*args, **kw)
        self.calls.append((name, self._file.writeback_from, self._file.release_from,
                           self._worker.queue.flushed))

    def write(self, data):
        self._call("write", data)

    def sync(self):
        self._call("sync")

    def move(self, *args):
        self._call("move", *args)

    def complete(self, *args, **kw):
        self._call("complete", *args, **kw)

    def close(self):
        self._call("close")

    def discard(self):
        self._call("discard")

    def abandon(self):
        self._call("abandon")


class ObservedWorker(CompressWorker):
    """The worker, observed: *hook* is called with ``(lsn, length, flags)``
    before each chunk is handled (in the worker thread), and the calls on
    the files it writes are recorded (:class:`RecordingFile`, in
    :attr:`files`)."""

    def __init__(self, *args, hook=None, **kw):
        super().__init__(*args, **kw)
        self.hook = hook
        self.files: list[RecordingFile] = []

    def _handle(self, slot, lsn, length, flags, target):
        if self.hook is not None:
            self.hook(lsn, length, flags)
        return super()._handle(slot, lsn, length, flags, target)

    def _new_file(self, directory, name):
        f = RecordingFile(self, super()._new_file(directory, name))
        self.files.append(f)
        return f


def start_engine(directory, method, *, start=0, segment_size=MB, nchunks=8,
                 chunk_size=MB, hook=None, sync=True):
    spec = CompressionSpec(method)
    q = _core.ChunkQueue(nchunks, chunk_size)
    w = SegmentWriter(directory, timeline=1, start_lsn=start, segment_size=segment_size,
                      sync=sync, sink=q, sink_suffix=spec.suffix)
    worker = ObservedWorker(q, directory, spec, timeline=1, segment_size=segment_size,
                            sync=sync, hook=hook).start()
    return w, q, worker


def feed(w, start, wal, seed=0):
    for data_start, data in cut_like_walsender(start, wal, seed=seed):
        w.write(data_start, data)


# --------------------------------------------------------------------------- #
# unit: the engine with synthetic WAL
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("method", METHODS)
def test_segments_and_partial_are_standard_files(tmp_path, method):
    wal = make_wal(0, 2 * MB + 300_000, segment_size=MB)
    w, q, worker = start_engine(tmp_path, method)
    feed(w, 0, wal)
    w.close()
    worker.join(10)
    suffix = SUFFIXES[method]
    names = sorted(os.listdir(tmp_path))
    assert names == [segment_file_name(1, 0, MB) + suffix, segment_file_name(1, 1, MB) + suffix,
                     segment_file_name(1, 2, MB) + suffix + ".partial"]
    for i, name in enumerate(names):
        data = (tmp_path / name).read_bytes()
        assert decompress(data, method) == wal[i * MB:(i + 1) * MB]
        tool_check(tmp_path / name, method)
    first = (tmp_path / names[0]).read_bytes()
    if method == "gzip":
        # One gzip member; ISIZE (the last 4 bytes) is the segment size,
        # which is all pg_receivewal's start-position scan looks at.
        assert first[:3] == b"\x1f\x8b\x08"
        assert int.from_bytes(first[-4:], "little") == MB
    elif method == "lz4":
        # pg_receivewal's frame (LZ4F defaults): magic, FLG 0x40 (version 1,
        # linked blocks, no checksum, no content size), BD 0x40 (64 KiB).
        assert first[:6] == bytes.fromhex("04224d184040")
    else:
        assert first[:4] == bytes.fromhex("28b52ffd")
    assert w.flush_lsn == len(wal)
    assert w.segments_completed == 2 and w.completed_end == 2 * MB
    # The scan accepts the completed files and resumes at the .partial.
    assert find_streaming_start(tmp_path, MB) == (2 * MB, 1)


@pytest.mark.parametrize("method", METHODS)
def test_slow_worker_memory_bound_and_nothing_lost(tmp_path, method):
    nchunks, chunk_size = 3, 64 * 1024
    seen = []

    def slow(lsn, length, flags):
        seen.append((lsn, length))
        time.sleep(0.01)

    wal = make_wal(0, MB + 700_000, segment_size=MB)
    w, q, worker = start_engine(tmp_path, method, nchunks=nchunks, chunk_size=chunk_size,
                                hook=slow)
    assert q.memory_bound == nchunks * chunk_size
    feed(w, 0, wal)
    # The writer got ahead of the worker by at most the queue's size.
    assert q.max_used <= nchunks
    assert q.max_used == nchunks and q.producer_waits > 0, "the worker was never the bottleneck"
    w.close()
    worker.join(10)
    suffix = SUFFIXES[method]
    full = (tmp_path / (segment_file_name(1, 0, MB) + suffix)).read_bytes()
    part = (tmp_path / (segment_file_name(1, 1, MB) + suffix + ".partial")).read_bytes()
    assert decompress(full, method) + decompress(part, method) == wal
    # Chunks were contiguous, in order, never larger than a slot.
    pos = 0
    for lsn, length in seen:
        assert lsn == pos and length <= chunk_size
        pos += length
    assert pos == len(wal)


@pytest.mark.parametrize("method", METHODS)
def test_flush_published_only_after_fdatasync(tmp_path, method):
    """The flush position moves only once the compressed bytes covering it
    were fdatasynced, and the .partial then decodes to at least that much."""
    gate = threading.Event()

    def hook(lsn, length, flags):
        if flags & _core.CHUNK_SYNC_FLAG:
            gate.wait(10)

    wal = make_wal(0, 300_000, segment_size=MB)
    w, q, worker = start_engine(tmp_path, method, hook=hook)
    feed(w, 0, wal[:200_000])
    flusher = threading.Thread(target=w.flush)
    flusher.start()
    time.sleep(0.2)
    # The worker holds the sync request: nothing is reported flushed yet.
    assert w.flush_lsn == 0 and flusher.is_alive()
    gate.set()
    flusher.join(10)
    assert w.flush_lsn == 200_000
    (f,) = worker.files
    syncs = [flushed for name, _, _, flushed in f.calls if name == "sync"]
    assert syncs and f.syncs >= 1
    assert syncs[-1] < 200_000, "published before the fdatasync returned"
    partial = tmp_path / (segment_file_name(1, 0, MB) + SUFFIXES[method] + ".partial")
    # Not finished (the stream goes on), but a decodable prefix up to the flush.
    assert decodable_prefix(partial.read_bytes(), method) == wal[:200_000]
    feed(w, 200_000, wal[200_000:], seed=1)
    w.close()
    worker.join(10)
    assert decompress(partial.read_bytes(), method) == wal


def compressible_wal(nbytes: int) -> bytes:
    """WAL with valid page headers and text-like (compressible) records:
    compressors buffer such input, unlike make_wal's random bytes."""
    from helpers.wal_synth import page_header
    buf = bytearray(b"".join(b"row %d of walfast_fill; " % i for i in range(nbytes // 10))[:nbytes])
    for page in range(0, nbytes, 8192):
        hdr = page_header(page, segment_size=MB)
        buf[page:page + len(hdr)] = hdr[:nbytes - page]
    return bytes(buf)


@pytest.mark.parametrize("method", METHODS)
def test_every_sync_point_leaves_a_decodable_prefix(tmp_path, method):
    wal = compressible_wal(600_000)
    w, q, worker = start_engine(tmp_path, method)
    partial = tmp_path / (segment_file_name(1, 0, MB) + SUFFIXES[method] + ".partial")
    pos = 0
    for i, step in enumerate([4403, 1, 49178, 14729, 15475, 12440, 25943, 99, 8192, 70000]):
        feed(w, pos, wal[pos:pos + step], seed=i)
        pos += step
        assert w.flush() == pos
        data = partial.read_bytes()
        assert decodable_prefix(data, method) == wal[:pos], f"after sync {i}"
        assert decoded_length(str(partial), method, MB, tolerant=True) == pos
    w.close()
    worker.join(10)
    assert decompress(partial.read_bytes(), method) == wal[:pos]
    assert len(partial.read_bytes()) < pos // 3      # it did compress


def test_worker_error_stops_the_writer_with_file_and_lsn(tmp_path):
    """A write that fails in the worker (ENOSPC: the second segment's
    .partial is a link to /dev/full) stops the writer: the error names the
    file and the WAL position, nothing after the failure is reported
    flushed, and close() raises it too."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    second = tmp_path / (segment_file_name(1, 1, MB) + ".gz.partial")
    second.symlink_to("/dev/full")
    wal = make_wal(0, MB + 300_000, segment_size=MB)
    w, q, worker = start_engine(tmp_path, "gzip", chunk_size=64 * 1024)
    feed(w, 0, wal[:MB])
    assert w.flush() == MB
    with pytest.raises(OSError) as ei:
        feed(w, MB, wal[MB:], seed=2)
        w.flush()
    e = ei.value
    assert e.errno == errno.ENOSPC
    assert e.filename == str(second)
    assert "could not write to compressed write-ahead log file at 0/" in str(e)
    assert w.flush_lsn == MB                # nothing after the failure is reported
    with pytest.raises(OSError):
        w.poll()
    with pytest.raises(OSError):
        w.close()
    worker.join(10)
    assert not worker.alive


@pytest.mark.parametrize("method", METHODS)
def test_restart_on_existing_compressed_partial(tmp_path, method):
    suffix = SUFFIXES[method]
    partial = tmp_path / (segment_file_name(1, 0, MB) + suffix + ".partial")
    wal = make_wal(0, MB, segment_size=MB)

    # A previous run left 500 kB; this one stops after 200 kB: the longer
    # old file stays, the shorter new stream is dropped.
    w, _, worker = start_engine(tmp_path, method)
    feed(w, 0, wal[:500_000])
    w.close()
    worker.join(10)
    old = partial.read_bytes()
    w, _, worker = start_engine(tmp_path, method)
    feed(w, 0, wal[:200_000], seed=3)
    w.flush()
    # The new stream goes to a shadow file in walfast's state directory
    # (never among the WAL) until it holds as much.
    shadow = state_dir(tmp_path) / (partial.name + ".tmp")
    assert shadow.exists()
    assert _wal_files(tmp_path) == [partial.name]
    assert partial.read_bytes() == old
    w.close()
    worker.join(10)
    assert _wal_files(tmp_path) == [partial.name]
    assert os.listdir(state_dir(tmp_path)) == []
    assert partial.read_bytes() == old

    # This run gets further: it replaces the old file at its first sync past
    # it (a rename from the state directory, both directories fsynced).
    w, _, worker = start_engine(tmp_path, method)
    feed(w, 0, wal[:600_000], seed=4)
    w.flush()
    assert _wal_files(tmp_path) == [partial.name]
    assert os.listdir(state_dir(tmp_path)) == []
    assert decodable_prefix(partial.read_bytes(), method) == wal[:600_000]
    (f,) = worker.files
    assert [c[0] for c in f.calls if c[0] != "write"] == ["sync", "move"]
    assert f.dir_syncs >= 2
    w.close()
    worker.join(10)
    assert decompress(partial.read_bytes(), method) == wal[:600_000]

    # And one that completes the segment before any sync: rename, old gone.
    w, _, worker = start_engine(tmp_path, method)
    feed(w, 0, wal, seed=5)
    w.close()
    worker.join(10)
    assert _wal_files(tmp_path) == [segment_file_name(1, 0, MB) + suffix]
    assert os.listdir(state_dir(tmp_path)) == []
    assert decompress((tmp_path / (segment_file_name(1, 0, MB) + suffix)).read_bytes(),
                      method) == wal


@pytest.mark.parametrize("junk", [b"", b"not compressed at all"])
def test_restart_on_empty_or_undecodable_partial_overwrites_it(tmp_path, junk):
    partial = tmp_path / (segment_file_name(1, 0, MB) + ".gz.partial")
    partial.write_bytes(junk)
    wal = make_wal(0, 100_000, segment_size=MB)
    w, _, worker = start_engine(tmp_path, "gzip")
    feed(w, 0, wal)
    w.close()
    worker.join(10)
    assert sorted(os.listdir(tmp_path)) == [partial.name]
    assert gzip.decompress(partial.read_bytes()) == wal


def test_no_sync_makes_no_fsync(tmp_path):
    wal = make_wal(0, MB + 1000, segment_size=MB)
    w, _, worker = start_engine(tmp_path, "lz4", sync=False)
    feed(w, 0, wal)
    w.flush()
    w.close()
    worker.join(10)
    assert len(worker.files) == 2
    assert [(f.syncs, f.dir_syncs) for f in worker.files] == [(0, 0), (0, 0)]
    assert w.syncs == 0
    assert w.flush_lsn == len(wal)


@pytest.mark.parametrize("sync", [True, False], ids=["sync", "no-sync"])
def test_compressed_files_are_written_behind_and_released(tmp_path, sync):
    """As the plain writer (the same file lifecycle): the worker starts
    writeback every MiB it writes and releases the range whose writeback
    the step before started, so a segment's end does not wait for all of
    its bytes (the queue would fill meanwhile); a completed file is released
    whole.  (make_wal is incompressible: the files are as large as the WAL.)"""
    seg = 8 * MB
    wal = make_wal(0, seg + 3 * MB, segment_size=seg)
    w, _, worker = start_engine(tmp_path, "lz4", segment_size=seg, sync=sync)
    feed(w, 0, wal)
    w.flush()
    done = tmp_path / (segment_file_name(1, 0, seg) + ".lz4")
    if sync:  # synced, then released: deterministic
        assert resident_bytes(done) == 0
    w.close()
    worker.join(10)
    first = worker.files[0].calls                   # the completed file's
    assert first[-1][0] == "complete"
    writes = [c for c in first if c[0] == "write"]
    # (offset up to which writeback was started, up to which pages were
    # released) after each write: the steps, in order.
    steps = []
    for _, writeback_from, release_from, _ in writes:
        if not steps or steps[-1][0] != writeback_from:
            steps.append((writeback_from, release_from))
    starts = [wb for wb, _ in steps]
    assert starts[0] == 0 and len(starts) >= 8       # ~8 MiB, one step per MiB
    for a, b in zip(starts, starts[1:]):
        assert b - a >= _core.WRITE_BEHIND_BYTES     # contiguous steps of >= 1 MiB
    # Each step releases what the step before started: the release lags one step.
    assert [rel for _, rel in steps] == [0] + starts[:-1]
    assert decompress(done.read_bytes(), "lz4") == wal[:seg]
    partial = tmp_path / (segment_file_name(1, 1, seg) + ".lz4.partial")
    assert decompress(partial.read_bytes(), "lz4") == wal[seg:]


def test_compressed_writer_must_start_at_a_segment_boundary(tmp_path):
    q = _core.ChunkQueue()
    with pytest.raises(ValueError, match="segment boundary"):
        SegmentWriter(tmp_path, timeline=1, start_lsn=MB + 8192, segment_size=MB, sink=q,
                      sink_suffix=".gz")


def test_decoded_length(tmp_path):
    p = tmp_path / "f.gz"
    p.write_bytes(gzip.compress(bytes(5000)) + gzip.compress(bytes(7000)))
    assert decoded_length(str(p), "gzip", MB) == 12000
    p.write_bytes(gzip.compress(bytes(5000)) + b"garbage")
    assert decoded_length(str(p), "gzip", MB, tolerant=True) == 5000
    with pytest.raises(DecodeError):
        decoded_length(str(p), "gzip", MB)
    assert decoded_length(str(tmp_path / "missing"), "lz4", MB) == 0


def test_scan_checks_zst_sizes(tmp_path, caplog):
    good = tmp_path / (segment_file_name(1, 3, MB) + ".zst")
    good.write_bytes(zstandard.ZstdCompressor().compress(bytes(MB)))
    bad = tmp_path / (segment_file_name(1, 4, MB) + ".zst")
    bad.write_bytes(zstandard.ZstdCompressor().compress(bytes(MB // 2)))
    assert find_streaming_start(tmp_path, MB) == (4 * MB, 1)
    assert f'compressed segment file "{bad.name}" has incorrect uncompressed size {MB // 2}' \
        in caplog.text
    (tmp_path / (segment_file_name(1, 4, MB) + ".zst.partial")).write_bytes(b"")
    assert find_streaming_start(tmp_path, MB) == (4 * MB, 1)


# --------------------------------------------------------------------------- #
# real server, side by side with pg_receivewal -Z
# --------------------------------------------------------------------------- #

@pytest.fixture
def bindir(pg_bindir):
    if not (pg_bindir / "pg_receivewal").exists():
        pytest.skip(f"no pg_receivewal in {pg_bindir}")
    return pg_bindir


def _walfast(cluster, directory, method, endpos=None, **kw) -> ReceiveOutcome:
    options = StreamOptions(directory=directory, endpos=endpos,
                            compression=CompressionSpec(method), **kw)
    return stream_once(cluster.conninfo(), options, should_stop=lambda: False)


#: -Z METHOD as pg_receivewal before 15 (``receivewal_command_line`` in
#: walfast.majors) takes it: a gzip level (zlib's default); it has no lz4.
_Z_BEFORE_15 = {"gzip": "6"}


def _pg_receivewal(bindir, cluster, directory, method, endpos) -> subprocess.CompletedProcess:
    if not majors.facts(cluster.major).receivewal_command_line:
        method = _Z_BEFORE_15[method]
    r = subprocess.run(
        [str(bindir / "pg_receivewal"), "-d", cluster.conninfo(), "-D", str(directory),
         "-Z", method, "-E", format_lsn(endpos), "-n", "-v", "-w"],
        capture_output=True, text=True, timeout=120, env=tool_env(bindir, clean_env()))
    assert r.returncode == 0, r.stderr
    return r


def _pg_start(r: subprocess.CompletedProcess) -> tuple[int, int]:
    m = START_RE.search(r.stderr)
    assert m, r.stderr
    return parse_lsn(m.group(1)), int(m.group(2))


def _check_against_pg_wal(directory: Path, cluster, method: str) -> dict[str, bytes]:
    """Every file decompresses to the server's bytes (completed: the whole
    segment; .partial: a prefix).  Returns the decompressed contents."""
    out = {}
    for name in _wal_files(directory):
        p = directory / name
        raw = decompress(p.read_bytes(), method)
        ref = (cluster.pg_wal / p.name[:24]).read_bytes()
        if p.name.endswith(".partial"):
            assert 0 < len(raw) < len(ref) and raw == ref[:len(raw)], p.name
        else:
            assert raw == ref, p.name
        out[p.name] = raw
    return out


def _end_with_wal_after(cluster) -> int:
    """The server's current WAL position, with a little more WAL (in the same
    segment) written after it: a receiver told to stop there then passes it
    at once instead of waiting for an idle server's next background record
    (up to 15 s)."""
    end = cluster.current_wal_lsn()
    cluster.generate_wal(1)
    assert cluster.current_wal_lsn() // cluster.wal_segment_size == end // cluster.wal_segment_size
    return end


def _wal_range(cluster, nsegments):
    """Generate WAL over a few segments; return (first segno, an end LSN in
    the middle of a later segment)."""
    seg = cluster.wal_segment_size
    first = cluster.current_wal_lsn() // seg
    cluster.generate_wal(nsegments * seg)
    cluster.switch_wal()
    cluster.generate_wal(seg // 3)
    end = _end_with_wal_after(cluster)
    assert end % seg and end // seg > first + nsegments
    return first, end


@pytest.mark.parametrize("method", ["gzip", "lz4"])
def test_same_files_as_pg_receivewal_and_each_continues_the_other(
        shared_cluster, bindir, tmp_path, method):
    cluster = shared_cluster(wal_segsize_mb=1, autovacuum=False)
    if not majors.facts(cluster.major).receivewal_command_line and method not in _Z_BEFORE_15:
        pytest.skip(f"pg_receivewal {cluster.major} cannot write {method} (nor does its scan "
                    "know the names: tests/test_segments_vs_pg_receivewal.py)")
    seg = cluster.wal_segment_size
    suffix = SUFFIXES[method]
    first, end = _wal_range(cluster, 3)
    wf_dir, pg_dir = tmp_path / "walfast", tmp_path / "pg"
    for d in (wf_dir, pg_dir):
        d.mkdir()
        # Both start at segment `first` (an empty .partial there, as a crash
        # right after its creation would leave).
        (d / (cluster.segment_name(first) + suffix + ".partial")).write_bytes(b"")

    assert _walfast(cluster, wf_dir, method, endpos=end) is ReceiveOutcome.ENDPOS_REACHED
    r = _pg_receivewal(bindir, cluster, pg_dir, method, end)
    assert _pg_start(r) == (first * seg, 1)

    expected = [cluster.segment_name(s) + suffix for s in range(first, end // seg)]
    expected.append(cluster.segment_name(end // seg) + suffix + ".partial")
    assert _wal_files(wf_dir) == _wal_files(pg_dir) == expected
    ours = _check_against_pg_wal(wf_dir, cluster, method)
    theirs = _check_against_pg_wal(pg_dir, cluster, method)
    for name in expected[:-1]:
        assert ours[name] == theirs[name]
        tool_check(wf_dir / name, method)
    tool_check(wf_dir / expected[-1], method)   # cleanly stopped: a finished frame

    # pg_receivewal's own scan accepts walfast's completed files: without
    # the .partial it resumes right after the last one (-E 0/1 stops it
    # before streaming).
    scan_dir = tmp_path / "scan"
    shutil.copytree(wf_dir, scan_dir)
    (scan_dir / expected[-1]).unlink()
    r = _pg_receivewal(bindir, cluster, scan_dir, method, 1)
    assert _pg_start(r) == ((end // seg) * seg, 1)
    assert find_streaming_start(scan_dir, seg) == ((end // seg) * seg, 1)

    # More WAL, past the next segment boundary.
    cluster.generate_wal(seg)
    end2 = _end_with_wal_after(cluster)
    assert end2 // seg > end // seg

    # pg_receivewal continues walfast's directory at walfast's .partial,
    # leaving walfast's completed segments alone.
    before = {n: (wf_dir / n).stat().st_ino for n in expected[:-1]}
    r = _pg_receivewal(bindir, cluster, wf_dir, method, end2)
    assert _pg_start(r) == ((end // seg) * seg, 1)
    assert {n: (wf_dir / n).stat().st_ino for n in expected[:-1]} == before
    _check_against_pg_wal(wf_dir, cluster, method)
    assert (wf_dir / (cluster.segment_name(end // seg) + suffix)).exists()

    # walfast continues pg_receivewal's directory the same way.
    before = {n: (pg_dir / n).stat().st_ino for n in expected[:-1]}
    assert find_streaming_start(pg_dir, seg) == ((end // seg) * seg, 1)
    assert _walfast(cluster, pg_dir, method, endpos=end2) is ReceiveOutcome.ENDPOS_REACHED
    assert {n: (pg_dir / n).stat().st_ino for n in expected[:-1]} == before
    _check_against_pg_wal(pg_dir, cluster, method)
    assert _wal_files(pg_dir) == _wal_files(wf_dir)
    for name in _wal_files(pg_dir):
        if not name.endswith(".partial"):
            assert decompress((pg_dir / name).read_bytes(), method) == \
                decompress((wf_dir / name).read_bytes(), method)


def test_zstd_against_pg_wal_and_resume(shared_cluster, tmp_path):
    """zstd (walfast only): same checks against pg_wal, and walfast resumes
    its own .zst directory."""
    cluster = shared_cluster(wal_segsize_mb=1, autovacuum=False)
    seg = cluster.wal_segment_size
    first, end = _wal_range(cluster, 2)
    (tmp_path / (cluster.segment_name(first) + ".zst.partial")).write_bytes(b"")
    assert _walfast(cluster, tmp_path, "zstd", endpos=end) is ReceiveOutcome.ENDPOS_REACHED
    names = _wal_files(tmp_path)
    assert names[-1] == cluster.segment_name(end // seg) + ".zst.partial"
    assert len(names) == end // seg - first + 1
    _check_against_pg_wal(tmp_path, cluster, "zstd")
    for n in names:
        tool_check(tmp_path / n, "zstd")
    cluster.generate_wal(seg)
    end2 = _end_with_wal_after(cluster)
    assert find_streaming_start(tmp_path, seg) == ((end // seg) * seg, 1)
    # This time with a slot: the flush position it reports (the slot's
    # restart_lsn after the stop) is covered by the compressed files.
    cluster.execute("SELECT pg_create_physical_replication_slot('wf_zstd')")
    assert _walfast(cluster, tmp_path, "zstd", endpos=end2,
                    slot="wf_zstd") is ReceiveOutcome.ENDPOS_REACHED
    contents = _check_against_pg_wal(tmp_path, cluster, "zstd")
    assert (tmp_path / (cluster.segment_name(end // seg) + ".zst")).exists()
    (restart,), = cluster.execute(
        "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = 'wf_zstd'")
    restart_lsn = parse_lsn(restart)
    last = max(contents)
    covered = (restart_lsn // seg) * seg + len(contents[last]) if last.endswith(".partial") \
        else (restart_lsn // seg + 1) * seg
    assert (end // seg) * seg < restart_lsn <= covered, \
        (format_lsn(restart_lsn), format_lsn(covered))


@pytest.mark.parametrize("method", METHODS)
def test_synchronous_flush_position_covers_compressed_bytes(shared_cluster, tmp_path,
                                                            method, sync_standby_reset):
    """--synchronous with compression, walfast as the synchronous standby:
    each commit returns only once walfast reported it flushed, and by then
    the .partial decodes to (at least) that position."""
    cluster = shared_cluster(wal_segsize_mb=1, autovacuum=False)
    sync_standby_reset(cluster)
    seg = cluster.wal_segment_size
    cluster.execute("CREATE TABLE IF NOT EXISTS compress_sync_t (id int, pad text)")
    stop = threading.Event()
    result: list[object] = []

    def run():
        try:
            result.append(stream_once(
                cluster.conninfo(),
                StreamOptions(directory=tmp_path, synchronous=True,
                              compression=CompressionSpec(method)),
                should_stop=stop.is_set, application_name="walfast"))
        except BaseException as exc:  # reported by the test thread
            result.append(exc)

    t = threading.Thread(target=run)
    t.start()
    try:
        wait_until(lambda: replication_rows(cluster).get("walfast", {}).get("state")
                   == "streaming", "walfast streaming", 30)
        with cluster.connect() as conn:
            conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'walfast'")
            conn.execute("SELECT pg_reload_conf()")
        wait_until(lambda: replication_rows(cluster)["walfast"]["sync_state"] == "sync",
                   "walfast to become the synchronous standby", 20)
        with cluster.connect() as conn:
            for i in range(5):
                conn.execute("INSERT INTO compress_sync_t SELECT g, repeat('x', 500) "
                             "FROM generate_series(1, 200) g")
                conn.commit()
                after = parse_lsn(conn.execute("SELECT pg_current_wal_lsn()::text")
                                  .fetchone()[0])
                flush = replication_rows(cluster)["walfast"]["flush_lsn"]
                assert flush >= after or cluster.current_wal_insert_lsn() > after
                # What was reported flushed is in the compressed file.
                segno = flush // seg if flush % seg else flush // seg - 1
                name = cluster.segment_name(segno) + SUFFIXES[method]
                path = tmp_path / name
                if not path.exists():
                    path = tmp_path / (name + ".partial")
                got = decodable_prefix(path.read_bytes(), method)
                covered = segno * seg + len(got)
                assert covered >= flush, (
                    f"flush {format_lsn(flush)} reported, {path.name} holds up to "
                    f"{format_lsn(covered)}")
                assert got == (cluster.pg_wal / name[:24]).read_bytes()[:len(got)]
    finally:
        stop.set()
        t.join(30)
    assert result and result[0] is ReceiveOutcome.STOPPED, result
