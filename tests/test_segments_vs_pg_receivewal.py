"""find_streaming_start against the real pg_receivewal, directory by directory.

pg_receivewal -v logs ``starting log streaming at X/X (timeline N)`` after its
FindStreamingStart; with ``-E 0/1`` it stops before START_REPLICATION (or
fails afterwards on a timeline the server lacks, but only after logging the
line).  So the same hand-built directory is given to both and the answers are
compared.  When the directory has nothing usable pg_receivewal falls back to
the server's position, which walfast's ``None`` leaves to the caller.

Compressed layouts (``.gz``, ``.lz4``, their ``.partial`` forms) are built
with the standard codecs; pg_receivewal checks a completed ``.gz`` by its
ISIZE trailer and a completed ``.lz4`` by decompressing it.  ``.zst`` is
walfast's own: pg_receivewal does not know the name (see the last test).

Before 15 pg_receivewal's scan knows no ``.lz4`` name either (it had no
lz4): its answer is walfast's for the directory without them, and walfast's
own answer is a 15+ pg_receivewal's.
"""

from __future__ import annotations

import gzip
import re
import shutil
import subprocess
from pathlib import Path

import lz4.frame
import pytest
import zstandard

from helpers.receivers import clean_env
from walfast.cluster import tool_env
from walfast.lsn import parse_lsn, segment_file_name
from walfast.replication.commands import identify_system
from walfast.replication.connection import connect
from walfast.waldir.scan import find_streaming_start

MiB = 1 << 20
_START_RE = re.compile(r"starting log streaming at ([0-9A-F]+/[0-9A-F]+) \(timeline (\d+)\)")


def _gz_file(path: Path, usize: int) -> None:
    # A gzip member whose trailer says ``usize`` (pg_receivewal only reads
    # the last 4 bytes); real content for small sizes.
    if usize <= 2 * MiB:
        path.write_bytes(gzip.compress(bytes(usize), compresslevel=1))
    else:
        trailer = bytes(4) + (usize % (1 << 32)).to_bytes(4, "little")  # CRC32, ISIZE
        path.write_bytes(gzip.compress(b"")[:-8] + trailer)


def _build(directory: Path, seg: int, files: list[tuple]) -> None:
    per_id = (1 << 32) // seg
    for tli, segno, suffix, size in files:
        if isinstance(segno, str):  # symbolic segment numbers
            segno = {"last_of_log0": per_id - 1, "first_of_log1": per_id,
                     "far": 0x16 * per_id + 3}[segno]
        path = directory / (segment_file_name(tli, segno, seg) + suffix)
        if isinstance(size, str):  # "full" / "half"
            size = {"full": seg, "half": seg // 2, "full+1": seg + 1}[size]
        if suffix.startswith(".gz") and not suffix.endswith(".partial"):
            _gz_file(path, size)
        elif suffix == ".lz4":
            path.write_bytes(lz4.frame.compress(bytes(size)))
        elif suffix == ".zst":
            path.write_bytes(zstandard.ZstdCompressor().compress(bytes(size)))
        elif suffix == ".lz4.partial" and size:
            # what walfast and pg_receivewal leave after a clean stop: a frame
            path.write_bytes(lz4.frame.compress(bytes(size)))
        else:
            with open(path, "wb") as f:
                f.truncate(size)


CASES = {
    "empty": [],
    "junk only": "junk",
    "one complete": [(1, 7, "", "full")],
    "completes then partial": [(1, 3, "", "full"), (1, 4, "", "full"), (1, 5, ".partial", 0)],
    "partial of odd size": [(1, 3, "", "full"), (1, 4, ".partial", 12345)],
    "wrong-size complete on top": [(1, 3, "", "full"), (1, 4, "", "half")],
    "oversized complete on top": [(1, 3, "", "full"), (1, 4, "", "full+1")],
    "only wrong-size files": [(1, 4, "", "half")],
    "complete beats partial": [(1, 4, ".partial", "full"), (1, 4, "", "full")],
    "higher timeline wins tie": [(1, 5, "", "full"), (2, 5, ".partial", "full")],
    "higher timeline complete": [(1, 5, ".partial", 0), (2, 5, "", "full"), (3, 4, "", "full")],
    "segment number beats timeline": [(3, 9, "", "full"), (1, 10, ".partial", 0)],
    "gz complete": [(1, 3, "", "full"), (1, 4, ".gz", "full")],
    "gz wrong isize on top": [(1, 3, ".gz", "full"), (1, 4, ".gz", "half")],
    "gz partial on top": [(1, 3, ".gz", "full"), (1, 4, ".gz.partial", 0)],
    "lz4 partial on top": [(1, 3, "", "full"), (1, 4, ".lz4.partial", 0)],
    "lz4 complete": [(1, 3, ".gz", "full"), (1, 4, ".lz4", "full")],
    "lz4 wrong size on top": [(1, 3, ".lz4", "full"), (1, 4, ".lz4", "half")],
    "lz4 oversized on top": [(1, 3, ".lz4", "full"), (1, 4, ".lz4", "full+1")],
    "gz oversized on top": [(1, 3, "", "full"), (1, 4, ".gz", "full+1")],
    "gz complete beats gz partial": [(1, 4, ".gz.partial", 0), (1, 4, ".gz", "full")],
    "lz4 complete beats lz4 partial": [(1, 4, ".lz4", "full"), (1, 4, ".lz4.partial", "half")],
    "partial of another method": [(1, 3, ".lz4", "full"), (1, 4, ".gz.partial", 0),
                                  (1, 4, ".lz4.partial", "half")],
    "plain, gz and lz4 mixed": [(1, 3, "", "full"), (1, 4, ".gz", "full"),
                                (1, 5, ".lz4", "full"), (1, 6, ".gz", "half")],
    "compressed higher timeline": [(1, 5, ".gz", "full"), (2, 5, ".lz4.partial", 0)],
    "across log ids": [(1, "last_of_log0", "", "full"), (1, "first_of_log1", "", "full")],
    "far LSN": [(1, 3, "", "full"), (2, "far", ".partial", 0)],
}


def _pg_receivewal_start(bindir: Path, conninfo: str, directory: Path) -> tuple[int, int]:
    proc = subprocess.run(
        [str(bindir / "pg_receivewal"), "-d", conninfo, "-D", str(directory),
         "-E", "0/1", "-n", "-v", "-w"],
        capture_output=True, text=True, timeout=60, env=tool_env(bindir, clean_env()),
    )
    m = _START_RE.search(proc.stderr)
    assert m, f"pg_receivewal did not log its start position:\n{proc.stderr}"
    return parse_lsn(m.group(1)), int(m.group(2))


@pytest.fixture(scope="module", params=[1, 64], ids=["1MB", "64MB"])
def server(request, pg_bindir):
    from walfast.cluster import Cluster
    if not (pg_bindir / "pg_receivewal").exists():
        pytest.skip(f"no pg_receivewal in {pg_bindir}")
    with Cluster(pg_bindir, wal_segsize_mb=request.param) as c:
        yield c


@pytest.mark.majors
@pytest.mark.parametrize("case", list(CASES))
def test_same_start_as_pg_receivewal(server, pg_bindir, pg_major, receivewal_oracle, tmp_path,
                                     case):
    seg = server.wal_segment_size
    d = tmp_path / "wal"
    d.mkdir()
    if CASES[case] == "junk":
        for junk in ["00000002.history", "0000000a000000000000002b", "archive_status",
                     segment_file_name(1, 9, seg) + ".tmp"]:
            (d / junk).write_bytes(b"x")
    else:
        _build(d, seg, CASES[case])

    ours = find_streaming_start(d, seg)
    if not pg_major.receivewal_command_line:
        # walfast's answer is a 15+ pg_receivewal's (None: the server's
        # position, which the run below checks)...
        if ours is not None:
            assert _pg_receivewal_start(receivewal_oracle, server.conninfo(), d) == ours
        # ...and this one's is walfast's for the directory without .lz4 files.
        without = tmp_path / "without-lz4"
        shutil.copytree(d, without, ignore=shutil.ignore_patterns("*.lz4", "*.lz4.partial"))
        ours = find_streaming_start(without, seg)

    with connect(server.conninfo()) as c:
        before = identify_system(c)
    theirs = _pg_receivewal_start(pg_bindir, server.conninfo(), d)
    with connect(server.conninfo()) as c:
        after = identify_system(c)

    if ours is None:
        # pg_receivewal fell back to the server's position (segment start).
        lsn, tli = theirs
        assert tli == before.timeline
        assert before.xlogpos - before.xlogpos % seg <= lsn <= after.xlogpos - after.xlogpos % seg
    else:
        assert ours == theirs


@pytest.mark.majors
def test_segment_zero_differs_on_purpose(server, pg_bindir, tmp_path):
    """pg_receivewal ignores a directory whose best file is segment 0;
    walfast deliberately does not."""
    seg = server.wal_segment_size
    # A partial of segment 0 on timeline 3: walfast resumes there, while
    # pg_receivewal uses the server's position and timeline 1 instead.
    _build(tmp_path, seg, [(3, 0, ".partial", 0)])
    assert find_streaming_start(tmp_path, seg) == (0, 3)
    with connect(server.conninfo()) as c:
        xlogpos = identify_system(c).xlogpos
    lsn, tli = _pg_receivewal_start(pg_bindir, server.conninfo(), tmp_path)
    assert (lsn, tli) == (xlogpos - xlogpos % seg, 1)


@pytest.mark.majors
def test_zst_is_walfast_only(server, pg_bindir, tmp_path):
    """walfast resumes after its own completed ``.zst`` files; pg_receivewal
    does not know the suffix and goes by the rest of the directory."""
    seg = server.wal_segment_size
    _build(tmp_path, seg, [(1, 3, ".gz", "full"), (1, 4, ".zst", "full"),
                           (1, 5, ".zst", "half")])
    assert find_streaming_start(tmp_path, seg) == (5 * seg, 1)
    assert _pg_receivewal_start(pg_bindir, server.conninfo(), tmp_path) == (4 * seg, 1)
