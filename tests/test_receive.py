"""``walfast receive`` against a real PostgreSQL server, side by side with
pg_receivewal.

Both programs run as subprocesses through their command lines.  What they
write is compared with the server's own ``pg_wal`` files and with each
other: completed segments byte for byte, the ``.partial`` segment up to the
end of the WAL the server had flushed, file names exactly.

Timing: each test generates only a few segments of WAL (1 MiB segments
unless the segment size is the point); the slowest are marked ``slow``.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from helpers.receivers import (
    assert_completed_like_pg_wal,
    completed_files,
    holds_wal,
    make_dirs as _dirs,
    mismatch,
    partial_files,
    replication_rows,
    same_output as _same_output,
    segno_of,
    small_commit as _small_commit,
    wait_streaming,
    wait_until,
    wal_files,
)
from walfast.cluster import make_tls_files
from walfast.lsn import format_lsn, parse_lsn

MiB = 1 << 20


@pytest.fixture
def bindir(pg_bindir):
    if not (pg_bindir / "pg_receivewal").exists():
        pytest.skip(f"no pg_receivewal in {pg_bindir}")
    return pg_bindir


def _insert_lsn(cluster) -> int:
    (lsn,), = cluster.execute("SELECT pg_current_wal_insert_lsn()::text")
    return parse_lsn(lsn)


def _assert_partial_like_pg_wal(directory: Path, cluster, name: str, upto: int) -> None:
    """The .partial holds the server's bytes up to *upto* and is full-size."""
    path = directory / (name + ".partial")
    assert path.stat().st_size == cluster.wal_segment_size, f"{path} is not full-size"
    problem = mismatch(directory, cluster, segno_of(name, cluster) * cluster.wal_segment_size,
                       upto)
    assert problem is None, f"{directory}: {problem}"


# --------------------------------------------------------------------------- #
# 1 + 2: several segments, side by side, over TCP, TLS and the unix socket
# --------------------------------------------------------------------------- #

def _start_both(cluster, bindir, procs, tmp_path, conninfo, *args):
    """Start walfast and pg_receivewal with the same options, each into its
    own directory, and wait until the server shows both streaming.
    Returns (walfast dir, pg_receivewal dir, walfast, pg_receivewal, rows)."""
    wf_dir, pg_dir = _dirs(tmp_path, "walfast", "pg_receivewal")
    wf = procs.walfast("-D", str(wf_dir), "-d", conninfo, *args)
    pg = procs.pg_receivewal(bindir, "-D", str(pg_dir), "-d", conninfo, *args)
    rows = wait_streaming(cluster, ["walfast", "pg_receivewal"], [wf, pg])
    return wf_dir, pg_dir, wf, pg, rows


def _side_by_side(cluster, bindir, procs, tmp_path, conninfo, nsegments, *,
                  check_connections=None):
    """Start walfast and pg_receivewal together (-n, -v), stream *nsegments*
    segments of WAL plus the start of one more, stop both with SIGINT and
    compare everything.  Returns the directories."""
    seg = cluster.wal_segment_size
    wf_dir, pg_dir, wf, pg, rows = _start_both(cluster, bindir, procs, tmp_path, conninfo,
                                               "-n", "-v")
    if check_connections is not None:
        check_connections(rows)
    start, tli = wf.start_position()
    assert (start, tli) == pg.start_position(), "the two did not start at the same place"
    assert start % seg == 0 and tli == 1

    cluster.generate_wal(nsegments * seg)
    cluster.switch_wal()
    end = _small_commit(cluster)           # some WAL in the next segment: a .partial
    last_segno = end // seg
    assert end % seg != 0
    expected = [cluster.segment_name(s) for s in range(start // seg, last_segno)]
    expected.append(cluster.segment_name(last_segno) + ".partial")
    assert len(expected) >= nsegments + 1

    for d, p in ((wf_dir, wf), (pg_dir, pg)):
        wait_until(lambda: wal_files(d) == expected and holds_wal(d, cluster, start, end),
                   f"{p.name} to receive up to {format_lsn(end)}", 120, [wf, pg])
    assert wf.interrupt() == 0, wf.stderr()
    assert pg.interrupt() == 0, pg.stderr()

    assert "Traceback" not in wf.stderr()
    assert wal_files(wf_dir) == wal_files(pg_dir) == expected
    for name in expected[:-1]:
        data = (wf_dir / name).read_bytes()
        assert len(data) == seg
        assert data == (cluster.pg_wal / name).read_bytes(), f"walfast's {name} differs from pg_wal"
        assert data == (pg_dir / name).read_bytes(), f"walfast's {name} differs from pg_receivewal's"
    partial = expected[-1][:24]
    for d in (wf_dir, pg_dir):
        _assert_partial_like_pg_wal(d, cluster, partial, end)
    if _insert_lsn(cluster) == end:
        # Nothing was written after our last commit: both received exactly
        # the same bytes, and the rest of both files is zeros.
        assert (wf_dir / expected[-1]).read_bytes() == (pg_dir / expected[-1]).read_bytes()
    # The same messages: start, each finished segment, the interrupt, the
    # .partial left incomplete.
    assert wf.stderr().count("finished segment at") == len(expected) - 1
    _same_output(wf, pg)
    return wf_dir, pg_dir


@pytest.mark.parametrize("segsize_mb, nsegments", [
    pytest.param(1, 3, marks=pytest.mark.majors, id="1MiB"),
    pytest.param(16, 2, marks=pytest.mark.majors, id="16MiB"),
    pytest.param(64, 2, marks=pytest.mark.slow, id="64MiB"),
])
def test_segments_identical_to_pg_wal_and_pg_receivewal(
        shared_cluster, bindir, procs, tmp_path, segsize_mb, nsegments):
    cluster = shared_cluster(wal_segsize_mb=segsize_mb, autovacuum=False)

    def tcp(rows):
        assert rows["walfast"]["client_addr"] == "127.0.0.1/32"

    _side_by_side(cluster, bindir, procs, tmp_path, cluster.conninfo(), nsegments,
                  check_connections=tcp)


@pytest.fixture
def tls_files():
    """A self-signed server certificate and key, readable by the server's
    user only (a directory outside the test's tmp_path, which the postgres
    user may not be able to traverse)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command")
    d, crt, key = make_tls_files()
    try:
        yield crt, key
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.majors
def test_over_tls(pg_cluster_factory, bindir, procs, tmp_path, tls_files):
    crt, key = tls_files
    cluster = pg_cluster_factory(wal_segsize_mb=1, autovacuum=False, ssl=True,
                                 ssl_cert_file=str(crt), ssl_key_file=str(key))

    def both_use_ssl(rows):
        ssl = dict(cluster.execute(
            "SELECT r.application_name, s.ssl FROM pg_stat_replication r "
            "JOIN pg_stat_ssl s ON s.pid = r.pid"))
        assert ssl == {"walfast": True, "pg_receivewal": True}

    _side_by_side(cluster, bindir, procs, tmp_path, cluster.conninfo(sslmode="require"), 3,
                  check_connections=both_use_ssl)


def test_over_unix_socket(pg_cluster, bindir, procs, tmp_path):
    def unix(rows):
        # A unix-socket client has no address.
        assert rows["walfast"]["client_addr"] is None
        assert rows["pg_receivewal"]["client_addr"] is None

    _side_by_side(pg_cluster, bindir, procs, tmp_path, pg_cluster.conninfo(via="unix"), 3,
                  check_connections=unix)


# --------------------------------------------------------------------------- #
# 3: resume from the directory
# --------------------------------------------------------------------------- #

def test_resume_reopens_partial(pg_cluster, procs, tmp_path):
    cluster = pg_cluster
    seg = cluster.wal_segment_size
    (d,) = _dirs(tmp_path, "wal")
    conninfo = cluster.conninfo()

    first = procs.walfast("-D", str(d), "-d", conninfo, "-v")
    wait_streaming(cluster, ["walfast"], [first])
    start, _ = first.start_position()
    cluster.generate_wal(seg + seg // 2)
    mid = _small_commit(cluster)
    assert mid % seg != 0
    wait_until(lambda: holds_wal(d, cluster, start, mid), "the first run's WAL", 60, [first])
    assert first.interrupt() == 0
    assert "received interrupt signal, exiting" in first.stderr()
    partial = cluster.segment_name(mid // seg) + ".partial"
    assert partial_files(d) == [partial]
    assert (d / partial).stat().st_size == seg
    completed_before = completed_files(d)
    assert completed_before

    # More WAL while walfast is not running, then resume.
    cluster.generate_wal(seg + seg // 2)
    cluster.switch_wal()
    end = _small_commit(cluster)
    second = procs.walfast("-D", str(d), "-d", conninfo, "-v")
    resumed_at, tli = second.start_position()
    # pg_receivewal would restart at the segment start; walfast resumes at
    # the start of the .partial's last valid page, as the file was written
    # in this boot (walfast/resume.py).
    (page,), = cluster.execute("SELECT current_setting('wal_block_size')::int")
    assert tli == 1 and resumed_at % page == 0, "did not resume at a page start"
    assert (mid // seg) * seg < resumed_at <= mid, "did not resume inside the .partial"
    wait_until(lambda: holds_wal(d, cluster, start, end), "the second run's WAL", 60, [second])
    assert second.interrupt() == 0
    assert "Traceback" not in first.stderr() + second.stderr()

    names = assert_completed_like_pg_wal(d, cluster)
    assert names[:len(completed_before)] == completed_before
    assert partial[:24] in names, "the reopened .partial was not completed"
    assert segno_of(names[-1], cluster) == end // seg - 1
    assert partial_files(d) == [cluster.segment_name(end // seg) + ".partial"]
    _assert_partial_like_pg_wal(d, cluster, cluster.segment_name(end // seg), end)
    assert mismatch(d, cluster, start, end) is None


# --------------------------------------------------------------------------- #
# 4: replication slot
# --------------------------------------------------------------------------- #

def _restart_lsn(cluster, slot: str) -> int:
    (lsn,), = cluster.execute(
        "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    return parse_lsn(lsn)


@pytest.mark.majors
def test_slot_advances_never_past_synced(pg_cluster, pg_major, procs, tmp_path):
    cluster = pg_cluster
    seg = cluster.wal_segment_size
    (d,) = _dirs(tmp_path, "wal")
    cluster.execute("SELECT pg_create_physical_replication_slot('walfast_slot', true)")
    initial = _restart_lsn(cluster, "walfast_slot")
    # Some WAL before walfast starts: it must start from the slot, not from
    # the server's current position...
    cluster.generate_wal(seg // 2)
    before = _insert_lsn(cluster)

    wf = procs.walfast("-D", str(d), "-d", cluster.conninfo(), "-S", "walfast_slot", "-s", "1",
                       "-v")
    start, _ = wf.start_position()
    if pg_major.read_replication_slot:
        assert start == initial - initial % seg, "did not start at the slot's restart_lsn"
    else:
        # ...except before 15, where the server cannot say where the slot
        # stands: the server's position, as pg_receivewal.
        assert before - before % seg <= start <= _insert_lsn(cluster), \
            "did not start at the server's position"

    # walfast's first status update confirms its start position, the start
    # of the slot's segment (pg_receivewal's first one does the same), which
    # may be before the slot's initial restart_lsn; from then on the
    # confirmed position only grows.
    seen = [initial]

    def check_slot() -> int:
        lsn = _restart_lsn(cluster, "walfast_slot")
        seen.append(lsn)
        if lsn == initial:      # not confirmed by walfast yet
            return lsn
        confirmed = [x for x in seen[:-1] if x != initial]
        assert lsn >= (confirmed[-1] if confirmed else start), "restart_lsn went backwards"
        problem = mismatch(d, cluster, start, lsn)
        assert problem is None, \
            f"restart_lsn {format_lsn(lsn)} is past what walfast wrote: {problem}"
        return lsn

    for _ in range(4):
        cluster.generate_wal(seg // 2 + 12345)
        for _ in range(5):
            check_slot()
            time.sleep(0.1)
    end = _small_commit(cluster)
    assert end % seg != 0
    # The slot follows within a status interval (walfast flushes before each
    # periodic status update), even in the middle of a segment.
    wait_until(lambda: check_slot() >= end, f"restart_lsn to reach {format_lsn(end)}", 20, [wf])
    assert wf.interrupt() == 0
    final = check_slot()
    assert final >= end
    assert len(set(seen)) >= 3, f"restart_lsn barely moved: {[format_lsn(x) for x in seen]}"
    assert_completed_like_pg_wal(d, cluster)
    _assert_partial_like_pg_wal(d, cluster, cluster.segment_name(end // seg), end)


# --------------------------------------------------------------------------- #
# 5: the primary shuts down while streaming
# --------------------------------------------------------------------------- #

def _end_of_wal(cluster) -> int:
    """End of the last record (the shutdown checkpoint) of a stopped server:
    pg_controldata's latest checkpoint location plus its length by
    pg_waldump, MAXALIGNed as the server's insert position is."""
    out = subprocess.run([str(cluster.bindir / "pg_controldata"), str(cluster.datadir)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    assert info["Database cluster state"].strip() == "shut down"
    ckpt = parse_lsn(info["Latest checkpoint location"].strip())
    dump = subprocess.run(
        [str(cluster.bindir / "pg_waldump"), "-p", str(cluster.pg_wal), "-s", format_lsn(ckpt)],
        capture_output=True, text=True, timeout=60)
    records = [line for line in dump.stdout.splitlines() if line.startswith("rmgr:")]
    assert records and "CHECKPOINT_SHUTDOWN" in records[0], dump.stdout + dump.stderr
    assert len(records) == 1, "WAL after the shutdown checkpoint?\n" + dump.stdout
    total = int(records[0].split("len (rec/tot):", 1)[1].split(",")[0].split("/")[1])
    end = ckpt + total
    return (end + 7) & ~7


def test_primary_fast_shutdown(pg_cluster, bindir, procs, tmp_path):
    cluster = pg_cluster
    seg = cluster.wal_segment_size
    conninfo = cluster.conninfo()
    wf_dir, pg_dir, wf, pg, _ = _start_both(cluster, bindir, procs, tmp_path, conninfo, "-n", "-v")
    start, _ = wf.start_position()
    assert pg.start_position()[0] == start
    cluster.generate_wal(seg + seg // 3)

    cluster.stop("fast")
    end = _end_of_wal(cluster)
    assert wf.wait() == 1
    assert pg.wait() == 1

    for d in (wf_dir, pg_dir):
        assert_completed_like_pg_wal(d, cluster)
        name = cluster.segment_name((end - 1) // seg)
        assert partial_files(d) == [name + ".partial"]
        # Every byte up to the end of the shutdown checkpoint, nothing after.
        _assert_partial_like_pg_wal(d, cluster, name, end)
        data = (d / (name + ".partial")).read_bytes()
        assert data[end % seg:].count(0) == seg - end % seg, f"{d}: bytes after the end of WAL"
    assert wal_files(wf_dir) == wal_files(pg_dir)
    for name in wal_files(wf_dir):
        assert (wf_dir / name).read_bytes() == (pg_dir / name).read_bytes(), name

    assert wf.stderr().splitlines()[-2:] == [
        "walfast: error: replication stream was terminated before stop point",
        "walfast: error: disconnected",
    ]
    _same_output(wf, pg)


@pytest.mark.slow
def test_primary_restart_is_retried_without_no_loop(pg_cluster, bindir, procs, tmp_path):
    """Without -n both log the disconnection, wait 5 s, reconnect and go on
    where they stopped."""
    cluster = pg_cluster
    seg = cluster.wal_segment_size
    conninfo = cluster.conninfo()
    wf_dir, pg_dir, wf, pg, _ = _start_both(cluster, bindir, procs, tmp_path, conninfo, "-v")
    start, _ = wf.start_position()
    cluster.generate_wal(seg // 2)
    cluster.stop("fast")
    for p in (wf, pg):
        wait_until(lambda: "disconnected; waiting 5 seconds to try again" in p.stderr(),
                   f"{p.name} to wait for a retry", 30, [wf, pg])
    cluster.start()
    cluster.generate_wal(seg + seg // 2)
    cluster.switch_wal()
    end = _small_commit(cluster)
    for d, p in ((wf_dir, wf), (pg_dir, pg)):
        wait_until(lambda: holds_wal(d, cluster, start, end),
                   f"{p.name} to receive up to {format_lsn(end)}", 60, [wf, pg])
    assert wf.interrupt() == 0
    assert pg.interrupt() == 0
    assert wf.stderr().count("starting log streaming at") == 2
    _same_output(wf, pg, segsize=seg)
    assert wal_files(wf_dir) == wal_files(pg_dir)
    assert completed_files(wf_dir) == assert_completed_like_pg_wal(wf_dir, cluster)
    for name in completed_files(wf_dir):
        assert (wf_dir / name).read_bytes() == (pg_dir / name).read_bytes(), name


def test_walsender_terminated_no_loop(pg_cluster, bindir, procs, tmp_path):
    """pg_terminate_backend on the walsender: the stream ends with an
    ErrorResponse; both report it the same way and, with -n, exit 1."""
    cluster = pg_cluster
    conninfo = cluster.conninfo()
    wf_dir, pg_dir, wf, pg, _ = _start_both(cluster, bindir, procs, tmp_path, conninfo, "-n")
    cluster.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
    assert wf.wait() == 1
    assert pg.wait() == 1
    assert "terminating connection due to administrator command" in wf.stderr()
    _same_output(wf, pg)


# --------------------------------------------------------------------------- #
# 6: --synchronous as a synchronous standby
# --------------------------------------------------------------------------- #

def test_synchronous_standby(shared_cluster, procs, tmp_path, sync_standby_reset):
    cluster = shared_cluster(wal_segsize_mb=1, autovacuum=False)
    (d,) = _dirs(tmp_path, "wal")
    wf = procs.walfast("-D", str(d), "-d", cluster.conninfo(), "--synchronous", "-v")
    rows = wait_streaming(cluster, ["walfast"], [wf])
    assert rows["walfast"]["sync_state"] == "async"
    start, _ = wf.start_position()
    cluster.execute("CREATE TABLE IF NOT EXISTS receive_sync_t (id int)")

    sync_standby_reset(cluster)
    with cluster.connect() as conn:
        conn.execute("ALTER SYSTEM SET synchronous_standby_names = 'walfast'")
        conn.execute("SELECT pg_reload_conf()")
    wait_until(lambda: replication_rows(cluster)["walfast"]["sync_state"] == "sync",
               "walfast to become the synchronous standby", 20, [wf])

    with cluster.connect() as conn:
        notices: list[str] = []
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        for i in range(5):
            # statement_timeout does not cover the wait for the standby (it is
            # disabled before the commit), so cancel from a timer instead: a
            # cancelled wait commits with a WARNING, caught below.
            timer = threading.Timer(10, conn.cancel_safe)
            timer.start()
            t0 = time.monotonic()
            try:
                conn.execute("BEGIN")
                conn.execute("INSERT INTO receive_sync_t VALUES (%s)", (i,))
                before_commit = parse_lsn(conn.execute(
                    "SELECT pg_current_wal_insert_lsn()::text").fetchone()[0])
                conn.execute("COMMIT")
                after = parse_lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
                row = conn.execute(
                    "SELECT flush_lsn::text, sync_state FROM pg_stat_replication "
                    "WHERE application_name = 'walfast'").fetchone()
            finally:
                timer.cancel()
            elapsed = time.monotonic() - t0
            assert not notices, f"commit {i} was not acknowledged: {notices}"
            assert elapsed < 10
            flush, sync_state = parse_lsn(row[0]), row[1]
            assert sync_state == "sync"
            # The commit record starts at or after before_commit and ends at
            # or before after; the commit returned, so it was acknowledged.
            assert flush > before_commit
            assert flush >= after or _insert_lsn(cluster) > after, \
                f"flush {format_lsn(flush)} < commit end {format_lsn(after)}"
            # What walfast acknowledged as flushed is in its files.
            assert mismatch(d, cluster, start, flush) is None
    assert wf.interrupt() == 0


# --------------------------------------------------------------------------- #
# 7: --endpos
# --------------------------------------------------------------------------- #

def test_endpos_stops_where_pg_receivewal_stops(pg_cluster, bindir, procs, tmp_path):
    cluster = pg_cluster
    seg = cluster.wal_segment_size
    cluster.generate_wal(4 * seg)
    cluster.switch_wal()
    completed = [p.name for p in cluster.completed_segments()]
    first = completed[-4]
    a = segno_of(first, cluster)
    assert cluster.segment_name(a + 2) in completed
    # Both directories start with segment a: both resume at a + 1.
    wf_dir, pg_dir = _dirs(tmp_path, "walfast", "pg_receivewal")
    for d in (wf_dir, pg_dir):
        shutil.copyfile(cluster.pg_wal / first, d / first)
    endpos = (a + 2) * seg + seg // 2 + 1234
    e = format_lsn(endpos)
    conninfo = cluster.conninfo()
    wf = procs.walfast("-D", str(wf_dir), "-d", conninfo, "-E", e, "-n", "-v")
    pg = procs.pg_receivewal(bindir, "-D", str(pg_dir), "-d", conninfo, "-E", e, "-n", "-v")
    assert wf.wait() == 0, wf.stderr()
    assert pg.wait() == 0, pg.stderr()
    assert wf.start_position() == pg.start_position() == ((a + 1) * seg, 1)

    expected = [first, cluster.segment_name(a + 1), cluster.segment_name(a + 2) + ".partial"]
    assert wal_files(wf_dir) == wal_files(pg_dir) == expected
    for name in expected:
        assert (wf_dir / name).read_bytes() == (pg_dir / name).read_bytes(), name
    assert_completed_like_pg_wal(wf_dir, cluster)
    _assert_partial_like_pg_wal(wf_dir, cluster, expected[-1][:24], endpos)
    assert "stopped log streaming at" in wf.stderr()
    _same_output(wf, pg)
