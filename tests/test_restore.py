"""``walfast restore`` (PostgreSQL's ``restore_command``) against a real S3
API server on loopback (moto's server mode, :mod:`helpers.s3server`) and
local directories; the command runs as a subprocess, as PostgreSQL runs it.

* what is delivered: a complete segment, its compressed forms (decompressed
  byte-identically), history and backup files, ``--partial``'s zero-padded
  ``.partial``; from S3 and from a directory, a real ``walfast receive -Z``
  directory included;
* the exit codes PostgreSQL reads: a missing file is exit 1 and silent, a
  damaged one is exit 1 with a message naming it and why, a store that is
  down for a moment is retried, one that stays down is an error;
* ``--prefetch``: the call returns while the prefetcher works, the next call
  is served from the spool (the object deleted from the bucket meanwhile),
  concurrent prefetchers leave only whole segments;
* end to end: a primary's WAL received by ``walfast receive``, put into the
  bucket, and a ``pg_basebackup`` (no ``-R``, no ``-X``) recovered with
  ``restore_command = 'walfast restore %f %p --from s3://...'`` to exactly
  the primary's data.

Synthetic segments (:func:`helpers.wal_synth.make_wal`) have the page headers
a server writes; the compressed files are made with the compression
libraries themselves, not with walfast's encoders.
"""

from __future__ import annotations

import fcntl
import gzip
import importlib.util
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path

import lz4.frame
import pytest
import zstandard

from helpers.faultproxy import FaultProxy
from helpers.receivers import clean_env, wait_streaming, wait_until, walfast_argv
from helpers.s3server import S3Server, s3_env
from helpers.wal_synth import make_wal
from walfast.archive.status import read_archive_status
from walfast.archive.store import open_store
from walfast.cluster import Cluster, free_port
from walfast.lsn import format_lsn, history_file_name, parse_history_file_name, parse_lsn, \
    parse_wal_file_name, segment_file_name

MB = 1 << 20

COMPRESS = {
    ".gz": gzip.compress,
    ".lz4": lz4.frame.compress,
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
}


# --------------------------------------------------------------------------- #
# fixtures and helpers
# --------------------------------------------------------------------------- #

@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on loopback, for the whole module."""
    with S3Server(log=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


class Archive:
    """A fresh bucket on the S3 server, the prefix ``wal``."""

    def __init__(self, s3: S3Server) -> None:
        self.s3 = s3
        self.bucket = f"restore-{uuid.uuid4().hex[:12]}"
        s3.create_bucket(self.bucket)
        self.url = f"s3://{self.bucket}/wal"
        self.client = s3.client()

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=f"wal/{name}", Body=data)

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=f"wal/{name}")


@pytest.fixture
def archive(s3) -> Archive:
    return Archive(s3)


def name_of(segno: int, timeline: int = 1, seg: int = MB) -> str:
    return segment_file_name(timeline, segno, seg)


def segment(segno: int, timeline: int = 1, seg: int = MB) -> bytes:
    """A whole synthetic segment (valid page headers, noise records)."""
    return make_wal(segno * seg, seg, segment_size=seg, timeline=timeline, seed=segno)


def restore(*args: str | Path, env: dict[str, str] | None = None, timeout: float = 120,
            ) -> subprocess.CompletedProcess[str]:
    """``walfast restore ARGS`` as PostgreSQL runs it: a process of its own."""
    return subprocess.run([sys.executable, "-m", "walfast.cli", "restore", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


def no_temporaries(directory: Path) -> None:
    left = [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]
    assert left == [], f"temporary files left in {directory}: {left}"


def one_error_line(r: subprocess.CompletedProcess[str]) -> str:
    """The single ``walfast restore: error: ...`` line of a failed call."""
    assert r.returncode == 1, r
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("walfast restore: error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def wait_prefetchers(spool: Path, timeout: float = 60, expect: tuple[str, ...] = ()) -> None:
    """Until the files *expect* are in the spool (a prefetcher started by
    the last call may not have taken the lock yet) and no prefetcher holds
    the spool's lock."""
    lock = spool / ".lock"
    deadline = time.monotonic() + timeout
    while not lock.exists() or not all((spool / name).exists() for name in expect):
        if time.monotonic() > deadline:
            raise AssertionError(f"no prefetcher made {lock} and {expect} "
                                 f"(the spool holds {sorted(os.listdir(spool))})")
        time.sleep(0.02)
    with open(lock, "rb") as f:
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise AssertionError("a prefetcher is still running") from None
                time.sleep(0.02)


def prefetcher_running(spool: Path) -> bool:
    try:
        f = open(spool / ".lock", "rb")
    except FileNotFoundError:
        return False
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f, fcntl.LOCK_UN)
        return False


# --------------------------------------------------------------------------- #
# what is delivered
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("seg", [MB, 4 * MB], ids=["1MB", "4MB"])
@pytest.mark.parametrize("suffix", ["", ".gz", ".lz4", ".zst"],
                         ids=["plain", "gzip", "lz4", "zstd"])
def test_segment_and_its_compressed_forms(s3, archive, tmp_path, suffix, seg):
    """The complete file, or its compressed form decompressed: DEST is the
    segment byte for byte, its size the one the WAL gives (1 and 4 MB
    segments, no constant), nothing printed, no temporary left."""
    data = segment(7, seg=seg)
    name = name_of(7, seg=seg)
    archive.put(name + suffix, COMPRESS[suffix](data) if suffix else data)
    dest = tmp_path / "RECOVERYXLOG"
    r = restore(name, dest, "--from", archive.url, env=s3.env)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert dest.read_bytes() == data
    no_temporaries(tmp_path)


def test_complete_file_first_then_compressed_in_order(s3, archive, tmp_path):
    """NAME is taken before NAME.gz; .gz before .lz4 before .zst (each other
    form here is garbage, so taking it would fail)."""
    data = segment(3)
    name = name_of(3)
    for suffix in ("", ".gz", ".lz4", ".zst"):
        archive.put(name + suffix, data if suffix == "" else b"garbage")
    r = restore(name, tmp_path / "a", "--from", archive.url, "-v", env=s3.env)
    assert r.returncode == 0 and (tmp_path / "a").read_bytes() == data
    assert r.stderr == f'walfast restore: restored "{name}" from "{archive.url}/{name}"\n'
    archive.delete(name)
    archive.put(name + ".gz", gzip.compress(data))
    r = restore(name, tmp_path / "b", "--from", archive.url, "-v", env=s3.env)
    assert r.returncode == 0 and (tmp_path / "b").read_bytes() == data
    assert f'from "{archive.url}/{name}.gz"' in r.stderr


def test_history_and_backup_files_as_they_are(s3, archive, tmp_path):
    history = b"1\t0/3000000\tno recovery target specified\n"
    backup = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n"
    archive.put("00000002.history", history)
    archive.put("000000010000000000000002.00000028.backup", backup)
    r = restore("00000002.history", tmp_path / "RECOVERYHISTORY", "--from", archive.url,
                env=s3.env)
    assert (r.returncode, r.stderr) == (0, "")
    assert (tmp_path / "RECOVERYHISTORY").read_bytes() == history
    r = restore("000000010000000000000002.00000028.backup", tmp_path / "b", "--from",
                archive.url, env=s3.env)
    assert (r.returncode, r.stderr) == (0, "")
    assert (tmp_path / "b").read_bytes() == backup


def test_missing_file_is_exit_1_and_quiet(s3, archive, tmp_path):
    """What PostgreSQL asks for all the time (the next timeline's history
    file, the segment after the last): exit 1, no output; -v: one line."""
    archive.put(name_of(1), segment(1))
    for name in ("00000002.history", name_of(2)):
        r = restore(name, tmp_path / "RECOVERYXLOG", "--from", archive.url, "--partial",
                    "--prefetch=4", env=s3.env)
        assert (r.returncode, r.stdout, r.stderr) == (1, "", "")
        assert not (tmp_path / "RECOVERYXLOG").exists()
    r = restore(name_of(2), tmp_path / "RECOVERYXLOG", "--from", archive.url, "-v",
                env=s3.env)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == f'walfast restore: "{name_of(2)}" is not in the archive "{archive.url}"\n'
    assert sorted(os.listdir(tmp_path)) == []


def _corrupt_cases():
    data = segment(5)
    name = name_of(5)
    damaged = bytearray(gzip.compress(data))
    damaged[-6] ^= 0xFF                   # its CRC-32: every byte decodes, the check fails
    return [
        pytest.param(name + ".gz", bytes(damaged), "cannot be decompressed", id="damaged-gzip"),
        pytest.param(name + ".zst", zstandard.ZstdCompressor().compress(data)[:-100],
                     "cut short", id="truncated-zstd"),
        pytest.param(name, data[:MB // 2], "holds 524288 bytes of WAL, not the 1048576 of a "
                     "segment", id="short-segment"),
        pytest.param(name + ".lz4", lz4.frame.compress(data + data[:8192]),
                     "more than the 1048576 bytes", id="too-long"),
        pytest.param(name, segment(6), "xlp_pageaddr", id="another-segment"),
        pytest.param(name, os.urandom(MB), "no valid long page header", id="not-wal"),
        pytest.param(name, b"", "holds 0 bytes", id="empty"),
    ]


@pytest.mark.parametrize("obj,content,reason", _corrupt_cases())
def test_damaged_file_is_an_error_naming_it(s3, archive, tmp_path, obj, content, reason):
    """A file that is there but cannot be the segment: one error line with
    the object's location and why, exit 1, DEST not written."""
    archive.put(obj, content)
    dest = tmp_path / "RECOVERYXLOG"
    r = restore(name_of(5), dest, "--from", archive.url, env=s3.env)
    line = one_error_line(r)
    assert f'"{archive.url}/{obj}" cannot be restored as {name_of(5)}: ' in line, line
    assert reason in line
    assert not dest.exists()
    no_temporaries(tmp_path)


def test_no_such_bucket_is_an_error(s3, tmp_path):
    r = restore(name_of(1), tmp_path / "x", "--from", "s3://walfast-no-such-bucket/wal",
                env=s3.env, timeout=60)
    line = one_error_line(r)
    assert "s3://walfast-no-such-bucket/wal/" + name_of(1) in line and "NoSuchBucket" in line


def test_partial_zero_padded_for_the_end_of_recovery(s3, archive, tmp_path):
    """Only with --partial, and only when no complete form exists: the
    .partial (full size, as a receiver preallocates it) or a compressed one
    (as long as what was received), delivered up to its last valid page and
    zero-padded to the segment size."""
    received = 300_000                    # mid-page: the last page is partly written
    prefix = segment(9)[:received]
    name = name_of(9)
    archive.put(name + ".partial", prefix + bytes(MB - received))
    dest = tmp_path / "RECOVERYXLOG"
    r = restore(name, dest, "--from", archive.url, env=s3.env)
    assert (r.returncode, r.stderr) == (1, "")
    r = restore(name, dest, "--from", archive.url, "--partial", "-v", env=s3.env)
    assert r.returncode == 0, r.stderr
    assert dest.read_bytes() == prefix + bytes(MB - received)
    pages = -(-received // 8192) * 8192   # up to the end of its last valid page
    assert r.stderr == (f'walfast restore: restored "{name}" from "{archive.url}/{name}.partial"'
                        f", {pages} bytes of WAL zero-padded to {MB}\n")

    # a compressed .partial: only what was received, zero-padded here
    name = name_of(10)
    prefix = segment(10)[:received]
    archive.put(name + ".zst.partial", COMPRESS[".zst"](prefix))
    r = restore(name, dest, "--from", archive.url, "--partial", env=s3.env)
    assert (r.returncode, r.stderr) == (0, "")
    assert dest.read_bytes() == prefix + bytes(MB - received)

    # a complete form wins over the .partial
    archive.put(name + ".gz", gzip.compress(segment(10)))
    r = restore(name, dest, "--from", archive.url, "--partial", env=s3.env)
    assert r.returncode == 0 and dest.read_bytes() == segment(10)

    # a .partial nothing was received into yet (the start marker) is not WAL
    archive.put(name_of(11) + ".partial", b"")
    archive.put(name_of(12) + ".partial", bytes(MB))
    for segno in (11, 12):
        r = restore(name_of(segno), dest, "--from", archive.url, "--partial", env=s3.env)
        assert (r.returncode, r.stderr) == (1, ""), segno
    no_temporaries(tmp_path)


# --------------------------------------------------------------------------- #
# a local directory
# --------------------------------------------------------------------------- #

def test_from_a_directory(tmp_path):
    """A directory of WAL files (walfast's -D, or any copy): the same lookup;
    its .walfast/ state is never a WAL file; a missing directory is an error,
    not "the archive has nothing"."""
    src = tmp_path / "wal"
    (src / ".walfast").mkdir(parents=True)
    (src / name_of(1)).write_bytes(segment(1))
    (src / (name_of(2) + ".lz4")).write_bytes(lz4.frame.compress(segment(2)))
    (src / (name_of(3) + ".gz.partial")).write_bytes(gzip.compress(segment(3)[:100_000]))
    (src / "00000002.history").write_bytes(b"1\t0/1000000\tno recovery target specified\n")
    out = tmp_path / "out"
    out.mkdir()
    for name, want in [(name_of(1), segment(1)), (name_of(2), segment(2)),
                       ("00000002.history", (src / "00000002.history").read_bytes())]:
        r = restore(name, out / "f", "--from", src)
        assert (r.returncode, r.stderr) == (0, ""), name
        assert (out / "f").read_bytes() == want, name
    r = restore(name_of(3), out / "f", "--from", src)
    assert (r.returncode, r.stderr) == (1, "")
    r = restore(name_of(3), out / "f", "--from", src, "--partial")
    assert r.returncode == 0
    assert (out / "f").read_bytes() == segment(3)[:100_000] + bytes(MB - 100_000)

    r = restore(".walfast", out / "f", "--from", src)
    assert r.returncode == 1 and '".walfast" is not a name restore_command is asked for' \
        in r.stderr

    # a file that cannot be read: an error naming it
    (src / name_of(4)).mkdir()
    line = one_error_line(restore(name_of(4), out / "g", "--from", src))
    assert f'could not read "{src / name_of(4)}"' in line or \
        f'could not open "{src / name_of(4)}"' in line, line
    assert not (out / "g").exists()

    line = one_error_line(restore(name_of(1), out / "g", "--from", tmp_path / "nowhere"))
    assert f'archive directory "{tmp_path / "nowhere"}" does not exist' in line
    no_temporaries(out)


def decodable_prefix(data: bytes, suffix: str) -> bytes:
    """What the compression library itself gets out of a file that may end
    mid-stream (a .partial being written, flushed at a sync point)."""
    if suffix == ".gz":
        return zlib.decompressobj(31).decompress(data)
    if suffix == ".lz4":
        return lz4.frame.LZ4FrameDecompressor().decompress(data, max_length=64 * MB)
    if suffix == ".zst":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


@pytest.mark.parametrize("method", ["none", "gzip", "lz4", "zstd"])
def test_from_a_walfast_receive_directory(pg_cluster, procs, tmp_path, method):
    """A real `walfast receive [-Z METHOD]` directory: every completed
    segment restored byte-identical to the server's pg_wal; the open
    segment's .partial, with --partial, is the server's WAL up to where it
    was received, then zeros."""
    cluster = pg_cluster
    seg = cluster.wal_segment_size
    directory = tmp_path / "wal"
    directory.mkdir()
    compress = [] if method == "none" else ["-Z", method]
    receiver = procs.walfast("-D", str(directory), "-d", cluster.conninfo(), "--synchronous",
                             "-n", "-v", *compress)
    wait_streaming(cluster, ["walfast"], [receiver])
    cluster.generate_wal(3 * seg)
    cluster.switch_wal()
    cluster.generate_wal(seg // 3)
    end = cluster.current_wal_lsn()
    r = subprocess.run([sys.executable, "-m", "walfast.cli", "wait", str(directory), "--lsn",
                        format_lsn(end), "--timeout", "60"], capture_output=True, text=True,
                       timeout=90)
    assert r.returncode == 0, r.stderr + receiver.stderr()
    assert receiver.interrupt() == 0, receiver.stderr()

    suffix = {"none": "", "gzip": ".gz", "lz4": ".lz4", "zstd": ".zst"}[method]
    completed = sorted(n for n in os.listdir(directory)
                       if (w := parse_wal_file_name(n)) is not None and w.complete
                       and w.compression == suffix)
    assert len(completed) >= 3, os.listdir(directory)
    out = tmp_path / "out"
    out.mkdir()
    for name in completed:
        base = name[:24]
        r = restore(base, out / "RECOVERYXLOG", "--from", directory)
        assert (r.returncode, r.stderr) == (0, ""), name
        assert (out / "RECOVERYXLOG").read_bytes() == (cluster.pg_wal / base).read_bytes(), name

    open_segment = cluster.segment_name(end // seg)
    partial = directory / (open_segment + suffix + ".partial")
    r = restore(open_segment, out / "RECOVERYXLOG", "--from", directory)
    assert (r.returncode, r.stderr) == (1, "")
    r = restore(open_segment, out / "RECOVERYXLOG", "--from", directory, "--partial", "-v")
    assert r.returncode == 0, r.stderr
    assert f'from "{partial}"' in r.stderr
    got = (out / "RECOVERYXLOG").read_bytes()
    assert len(got) == seg
    n = int(r.stderr.rsplit(", ", 1)[1].split(" bytes")[0])    # WAL before the padding
    assert n >= end % seg
    assert got[:end % seg] == (cluster.pg_wal / open_segment).read_bytes()[:end % seg]
    assert got[:n] == decodable_prefix(partial.read_bytes(), suffix)[:n]
    assert got[n:] == bytes(seg - n)


# --------------------------------------------------------------------------- #
# a store that fails
# --------------------------------------------------------------------------- #

class _CountingProxy(FaultProxy):
    """A FaultProxy that counts connection attempts, refused ones too."""

    attempts = 0

    def _accept(self) -> None:
        self.attempts += 1
        super()._accept()


def test_store_down_for_a_moment_is_retried(s3, archive, tmp_path):
    """Connections refused (botocore's own two tries fail), then the store
    is back: the call tries again inside itself and delivers (a non-zero
    exit would make PostgreSQL think the archive ends here)."""
    archive.put(name_of(1), segment(1))
    with _CountingProxy(free_port()) as proxy:            # nothing listens there
        env = {**os.environ, **s3_env(f"http://127.0.0.1:{proxy.port}")}
        p = subprocess.Popen([sys.executable, "-m", "walfast.cli", "restore", name_of(1),
                              str(tmp_path / "f"), "--from", archive.url],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: proxy.attempts >= 2, "the first attempt to fail", 60)
            proxy.target = ("127.0.0.1", s3.port)
            out, err = p.communicate(timeout=60)
        finally:
            p.kill()
            p.wait()
    assert (p.returncode, out, err) == (0, b"", b""), err
    assert (tmp_path / "f").read_bytes() == segment(1)


def test_store_down_for_good_is_an_error_after_retries(s3, archive, tmp_path):
    with FaultProxy(free_port()) as proxy:
        t0 = time.monotonic()
        r = restore(name_of(1), tmp_path / "f", "--from", archive.url,
                    env=s3_env(f"http://127.0.0.1:{proxy.port}"))
        took = time.monotonic() - t0
    line = one_error_line(r)
    assert f'could not download "{archive.url}/{name_of(1)}"' in line, line
    assert took >= 2.8                   # 0.5 + 1 + 2 s of waiting, less the jitter
    assert not (tmp_path / "f").exists()
    no_temporaries(tmp_path)


def test_sigterm_removes_the_temporary_and_ends_by_the_signal(s3, archive, tmp_path):
    """PostgreSQL's shutdown sends SIGTERM to restore_command: the download
    stops, no temporary stays in pg_wal, the process ends by the signal (so
    the server knows it was not "file missing")."""
    archive.put(name_of(1), segment(1))
    with FaultProxy(s3.port) as proxy:
        proxy.freeze()                    # the request never gets an answer
        env = {**os.environ, **s3_env(f"http://127.0.0.1:{proxy.port}")}
        p = subprocess.Popen([sys.executable, "-m", "walfast.cli", "restore", name_of(1),
                              str(tmp_path / "RECOVERYXLOG"), "--from", archive.url],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: proxy.connections > 0 and any(
                n.endswith(".tmp") for n in os.listdir(tmp_path)), "the download to start", 30)
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=30)
        finally:
            p.kill()
            p.wait()
    assert p.returncode == -signal.SIGTERM, err
    assert err == b"" and out == b""
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- #
# prefetch
# --------------------------------------------------------------------------- #

def test_prefetch_spool_serves_the_next_calls(s3, archive, tmp_path):
    """--prefetch=3: the call delivers its segment and a background process
    fetches the next 3 (compressed ones decompressed) into the spool in
    pg_wal; with those objects deleted from the bucket, the next calls
    still deliver them, from the spool, and each call removes what the
    spool holds at or before its segment."""
    pg_wal = tmp_path / "pg_wal"
    pg_wal.mkdir()
    spool = pg_wal / ".walfast-prefetch"
    for segno in range(1, 8):
        data = segment(segno)
        archive.put(name_of(segno) + (".gz" if segno % 2 == 0 else ""),
                    gzip.compress(data) if segno % 2 == 0 else data)
    dest = pg_wal / "RECOVERYXLOG"
    r = restore(name_of(1), dest, "--from", archive.url, "--prefetch=3", env=s3.env)
    assert (r.returncode, r.stderr) == (0, "")
    assert dest.read_bytes() == segment(1)
    wait_prefetchers(spool, expect=(name_of(2), name_of(3), name_of(4)))
    assert sorted(n for n in os.listdir(spool) if not n.startswith(".")) == \
        [name_of(2), name_of(3), name_of(4)]
    for segno in (2, 3, 4):
        assert (spool / name_of(segno)).read_bytes() == segment(segno)
        archive.delete(name_of(segno) + (".gz" if segno % 2 == 0 else ""))
    # a stale spooled segment from before (a restart of recovery): removed
    (spool / name_of(1)).write_bytes(segment(1))

    r = restore(name_of(2), dest, "--from", archive.url, "--prefetch=3", "-v", env=s3.env)
    assert r.returncode == 0, r.stderr
    assert r.stderr == (f'walfast restore: restored "{name_of(2)}" from the prefetch spool '
                        f'("{spool / name_of(2)}")\n')
    assert dest.read_bytes() == segment(2)
    wait_prefetchers(spool, expect=(name_of(5),))
    assert sorted(n for n in os.listdir(spool) if not n.startswith(".")) == \
        [name_of(3), name_of(4), name_of(5)]
    for segno in (3, 4, 5):
        archive.delete(name_of(segno) + (".gz" if segno % 2 == 0 else ""))
        r = restore(name_of(segno), dest, "--from", archive.url, "--prefetch=3", env=s3.env)
        assert (r.returncode, r.stderr) == (0, ""), segno
        assert dest.read_bytes() == segment(segno)
        # the next 3, of what the bucket still has (6 and 7) or the spool held
        wait_prefetchers(spool, expect=tuple(name_of(k) for k in range(segno + 1,
                                                                      min(segno + 4, 8))))
    no_temporaries(pg_wal)
    no_temporaries(spool)


def test_the_call_does_not_wait_for_the_prefetch(s3, archive, tmp_path):
    """The store hangs (a frozen connection): a call served from the spool
    returns at once, while its prefetcher waits for the store; once the
    store answers again the prefetcher finishes."""
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / name_of(1)).write_bytes(segment(1))
    for segno in (2, 3):
        archive.put(name_of(segno), segment(segno))
    with FaultProxy(s3.port) as proxy:
        proxy.freeze()
        t0 = time.monotonic()
        r = restore(name_of(1), tmp_path / "RECOVERYXLOG", "--from", archive.url,
                    "--prefetch=2", "--spool", spool,
                    env=s3_env(f"http://127.0.0.1:{proxy.port}"))
        took = time.monotonic() - t0
        assert (r.returncode, r.stderr) == (0, "")
        assert (tmp_path / "RECOVERYXLOG").read_bytes() == segment(1)
        assert took < 5, took
        wait_until(lambda: proxy.connections > 0, "the prefetcher to connect", 30)
        assert prefetcher_running(spool)
        assert not (spool / name_of(2)).exists()
        proxy.forward()
        wait_prefetchers(spool)
    assert (spool / name_of(2)).read_bytes() == segment(2)
    assert (spool / name_of(3)).read_bytes() == segment(3)


def test_concurrent_prefetchers_leave_only_whole_segments(s3, archive, tmp_path):
    """Several calls at once, one spool: every spooled file is a whole,
    right segment, no temporary stays."""
    spool = tmp_path / "spool"
    for segno in range(1, 12):
        archive.put(name_of(segno) + ".zst", COMPRESS[".zst"](segment(segno)))
    env = {**os.environ, **s3.env}
    calls = [subprocess.Popen(
        [sys.executable, "-m", "walfast.cli", "restore", name_of(1 + k % 3),
         str(tmp_path / f"dest{k}"), "--from", archive.url, "--prefetch=8", "--spool",
         str(spool)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for k in range(4)]
    for k, p in enumerate(calls):
        out, err = p.communicate(timeout=120)
        assert (p.returncode, err) == (0, b""), k
        assert (tmp_path / f"dest{k}").read_bytes() == segment(1 + k % 3)
    # Each call's prefetcher is a detached process that may take the lock
    # after another's finished: wait until none is left.
    wait_prefetchers(spool)
    time.sleep(1.0)
    wait_prefetchers(spool)
    spooled = [n for n in os.listdir(spool) if not n.startswith(".")]
    assert spooled, "nothing was prefetched"
    for n in spooled:
        segno = int(n[16:], 16)
        assert (spool / n).read_bytes() == segment(segno), n
    no_temporaries(spool)


# --------------------------------------------------------------------------- #
# usage
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("argv,message", [
    ([name_of(1), "d"], "the following arguments are required: --from"),
    ([name_of(1), "d", "--from", "x", "--prefetch", "-1"], 'invalid --prefetch value "-1"'),
    ([name_of(1), "d", "--from", "x", "--prefetch=65"], 'invalid --prefetch value "65"'),
    ([name_of(1) + ".gz", "d", "--from", "x"], "is not a name restore_command is asked for"),
    (["../etc/passwd", "d", "--from", "x"], "is not a name restore_command is asked for"),
    ([name_of(1), "d", "--from", "ftp://x/y"], 'invalid archive location "ftp://x/y"'),
])
def test_usage_errors(tmp_path, argv, message):
    r = restore(*argv)
    assert r.returncode == 1 and r.stdout == ""
    assert message in r.stderr.splitlines()[0], r.stderr
    assert r.stderr.startswith("walfast restore: error: ")
    assert "Traceback" not in r.stderr


def test_help_is_listed():
    r = subprocess.run([sys.executable, "-m", "walfast.cli", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert "restore " in r.stdout and "restore_command" in r.stdout
    r = restore("--help")
    assert r.returncode == 0
    assert "restore_command = 'walfast restore %f %p --from s3://bucket/prefix'" in r.stdout


# --------------------------------------------------------------------------- #
# end to end: a base backup recovered from the bucket
# --------------------------------------------------------------------------- #

def _server_side_walfast(server_user: pwd.struct_passwd | None, directory: Path) -> str:
    """A ``walfast`` command the database server can run as
    ``restore_command``.  As a normal user: the venv's own ``walfast``.  As
    root the server runs as ``postgres``, who may not be able to run this
    interpreter (pyenv's lives in /root): a ``walfast`` script in
    *directory* then runs a Python of the same version that ``postgres``
    can run, with this environment's packages on its path."""
    own = Path(sys.executable).parent / "walfast"
    if server_user is None:
        return str(own) if own.exists() else f"{sys.executable} -m walfast.cli"
    import site

    import walfast

    paths = [str(Path(walfast.__file__).resolve().parent.parent), *site.getsitepackages()]
    pythonpath = ":".join(paths)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable, os.path.realpath(sys.executable),
                  *(shutil.which(f"python{version}", path=d) for d in
                    ("/usr/local/bin", "/usr/bin", "/bin"))]
    probe = "import walfast._core, walfast.cli.restore, boto3, lz4.frame, zstandard"
    tried = []
    for python in dict.fromkeys(c for c in candidates if c):
        try:
            r = subprocess.run([python, "-c", probe], capture_output=True, text=True,
                               timeout=60, env={**os.environ, "PYTHONPATH": pythonpath},
                               user=server_user.pw_uid, group=server_user.pw_gid,
                               extra_groups=[], cwd="/")
        except OSError as exc:            # it cannot even be started
            tried.append(f"{python}: {exc.strerror}")
            continue
        if r.returncode != 0 and "ModuleNotFoundError" in r.stderr:
            # It runs, but cannot read this checkout or its packages (a
            # 0700 temporary directory, a venv under /root): copies then.
            copied = _packages_for(python, probe, server_user, directory / "site")
            if copied is not None:
                pythonpath, r = copied, subprocess.CompletedProcess(r.args, 0)
        if r.returncode == 0:
            script = directory / "walfast"
            script.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(pythonpath)} exec "
                              f"{shlex.quote(python)} -m walfast.cli \"$@\"\n")
            script.chmod(0o755)
            return str(script)
        tried.append(f"{python}: {r.stderr.strip().splitlines()[-1:] or r.returncode}")
    reason = ("no Python the postgres user can run imports walfast and boto3 "
              f"({'; '.join(tried)})")
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


def _packages_for(python: str, probe: str, user: pwd.struct_passwd, site: Path) -> str | None:
    """Copy into *site* (readable by *user*) the top-level packages *probe*
    needs under *python*, one at a time as its ModuleNotFoundError names
    them; the path to put on PYTHONPATH, or None when one cannot be found
    here."""
    site.mkdir(exist_ok=True)
    copied: set[str] = set()
    while True:
        r = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(site)}, user=user.pw_uid,
                           group=user.pw_gid, extra_groups=[], cwd="/")
        if r.returncode == 0:
            return str(site)
        m = re.search(r"No module named '([^'.]+)", r.stderr)
        spec = importlib.util.find_spec(m.group(1)) if m else None
        if m is None or m.group(1) in copied or spec is None or spec.origin is None:
            return None
        origin = Path(spec.origin)
        if spec.submodule_search_locations:
            shutil.copytree(origin.parent, site / m.group(1),
                            ignore=shutil.ignore_patterns("__pycache__", "*.c"))
        else:
            shutil.copy2(origin, site / origin.name)
        copied.add(m.group(1))
        subprocess.run(["chmod", "-R", "a+rX", str(site)], check=True)


@pytest.fixture
def server_bin_dir():
    """A directory the database server's user can read (pytest's tmp_path
    is private to the user running the tests)."""
    d = Path(tempfile.mkdtemp(prefix="walfast-restore-bin-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _checksum(cluster: Cluster) -> tuple[int, str]:
    (count, digest), = cluster.execute(
        "SELECT count(*), md5(string_agg(id::text || ':' || v, ',' ORDER BY id)) FROM t")
    return count, digest


@pytest.mark.slow
@pytest.mark.parametrize("shipped_by", ["put", "archive"])
def test_standby_recovers_from_the_bucket_to_the_primarys_data(
        pg_bindir, pg_cluster_factory, procs, s3, archive, tmp_path, server_bin_dir,
        monkeypatch, record_property, shipped_by):
    """A primary's WAL, received by walfast receive and in the bucket: put
    there by the test (completed segments, half of them gzip-compressed, and
    the open segment's .partial), or shipped by the receiver itself
    (``--archive ... --archive-partial-interval 1``); a pg_basebackup with
    no -R and no WAL of its own; recovery.signal and restore_command =
    'walfast restore %f %p --from s3://... --partial --prefetch=4': it
    replays everything the archive has, ends recovery, and holds exactly
    the primary's data."""
    primary = pg_cluster_factory(1)
    seg = primary.wal_segment_size
    primary.execute("SELECT pg_create_physical_replication_slot('restore_test', true)")
    waldir = tmp_path / "wal"
    waldir.mkdir()
    argv = walfast_argv("-D", str(waldir), "-d", primary.conninfo(), "-S", "restore_test",
                        "--synchronous", "-n", "-v")
    if shipped_by == "archive":
        argv += ["--archive", archive.url, "--archive-partial-interval", "1"]
    receiver = procs.program("walfast", argv, env={**clean_env(), **s3.env})
    wait_streaming(primary, ["walfast"], [receiver])

    primary.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    primary.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g")
    primary.generate_wal(2 * seg)

    # The base backup: its WAL too must come from the archive (-X none).
    for k, v in s3.env.items():
        monkeypatch.setenv(k, v)          # the standby's server process gets them
    owner = None
    if os.geteuid() == 0:
        owner = pwd.getpwnam("postgres")
    walfast_cmd = _server_side_walfast(owner, server_bin_dir)
    restore_command = (f"{walfast_cmd} restore %f %p --from {archive.url} --partial "
                       f"--prefetch=4 -v")
    standby = Cluster(pg_bindir, wal_segsize_mb=1,
                      settings={"restore_command": restore_command})
    try:
        standby.init_standby(primary, streaming=False, wal_method="none")
        signal_file = standby.datadir / "recovery.signal"
        signal_file.touch()
        if owner is not None:
            os.chown(signal_file, owner.pw_uid, owner.pw_gid)

        # After the backup: more changes, several segments of them.
        primary.execute("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(5001, 20000) g")
        primary.execute("UPDATE t SET v = 'updated ' || v WHERE id % 7 = 0")
        primary.execute("DELETE FROM t WHERE id % 11 = 0")
        primary.generate_wal(4 * seg)
        primary.execute("INSERT INTO t VALUES (0, 'the last commit')")
        want = _checksum(primary)
        end = primary.current_wal_lsn()
        r = subprocess.run([sys.executable, "-m", "walfast.cli", "wait", str(waldir), "--lsn",
                            format_lsn(end), "--timeout", "60"], capture_output=True, text=True,
                           timeout=90)
        assert r.returncode == 0, r.stderr
        store = open_store(archive.url)
        put = []
        if shipped_by == "archive":
            # Everything completed uploaded, and the open segment's snapshot
            # past the last commit.
            def shipped():
                status = read_archive_status(waldir) or {}
                return (status.get("pending_files") == 0 and status.get("partial")
                        and parse_lsn(str(status["partial"])) >= end)
            wait_until(shipped, f"the bucket to hold everything up to {format_lsn(end)}", 60,
                       [receiver])
            put = list(store.names())
        assert receiver.interrupt() == 0, receiver.stderr()

        # Into the bucket, as an archiving receiver would put them.
        for path in sorted(waldir.iterdir()) if shipped_by == "put" else ():
            wal = parse_wal_file_name(path.name)
            if wal is not None and wal.plain and wal.complete:
                segno = int(path.name[16:], 16)
                if segno % 2:
                    store.put(path.name, path)
                else:
                    gz = tmp_path / (path.name + ".gz")
                    gz.write_bytes(gzip.compress(path.read_bytes()))
                    store.put(gz.name, gz)
                put.append(path.name)
            elif wal is not None and wal.plain and wal.partial:
                store.put(path.name, path)
                put.append(path.name)
            else:
                try:
                    parse_history_file_name(path.name)
                except ValueError:
                    continue
                store.put(path.name, path)
                put.append(path.name)
        assert any(n.endswith(".partial") for n in put)
        assert len(put) >= 6, put

        t0 = time.monotonic()
        standby.start()

        def recovered() -> bool:
            (in_recovery,), = standby.execute("SELECT pg_is_in_recovery()")
            return not in_recovery
        deadline = time.monotonic() + 180
        while not recovered():
            assert time.monotonic() < deadline, standby.logfile.read_text()[-5000:]
            time.sleep(0.05)
        replay = time.monotonic() - t0
        record_property("replay", f"standby start to end of recovery: {replay:.2f} s for "
                                  f"{len(put)} files ({format_lsn(end)}), shipped by {shipped_by}")

        assert _checksum(standby) == want
        (timeline,), = standby.execute(
            "SELECT timeline_id FROM pg_control_checkpoint()")
        assert timeline == 2
        log = standby.logfile.read_text()
        print("\n".join(line for line in log.splitlines()
                        if "walfast" in line or "recover" in line or "redo" in line))
        assert "walfast restore: error" not in log, log[-5000:]
        assert "Traceback" not in log
        assert "from the prefetch spool" in log, log[-5000:]
        assert "zero-padded to" in log, log[-5000:]
        assert f'"{history_file_name(2)}" is not in the archive' in log
        wait_prefetchers(standby.pg_wal / ".walfast-prefetch")
    finally:
        standby.cleanup()
