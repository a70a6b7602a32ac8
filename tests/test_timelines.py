"""Timeline switches against real PostgreSQL: a primary, a standby of it
(``pg_basebackup -R``), walfast streaming from the standby, the standby
promoted.

* following the switch on the same connection, side by side with
  pg_receivewal (files, history file and messages identical);
* a restart whose start position is exactly the end of the old timeline
  (the walsender answers START_REPLICATION with the next timeline, no COPY),
  and a history file missing from the directory, fetched again;
* a mid-segment resume point past the server's fork point, moved back to
  the segment start so the result is pg_receivewal's;
* a server without the history file of the timeline to stream, and a
  directory on a timeline the server does not have: a clear error, exit 1
  even without ``-n``, nothing overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.receivers import (
    START_RE,
    completed_files,
    holds_wal,
    make_dirs,
    partial_files,
    same_output,
    small_commit,
    wait_streaming,
    wait_until,
    wal_files,
)
from walfast.waldir.layout import STATE_DIR
from walfast.lsn import format_lsn, history_file_name, parse_lsn


@pytest.fixture
def bindir(pg_bindir):
    if not (pg_bindir / "pg_receivewal").exists():
        pytest.skip(f"no pg_receivewal in {pg_bindir}")
    return pg_bindir


def _switch_point(history: bytes, old_timeline: int) -> int:
    """The LSN where *old_timeline* ends, from a history file's text."""
    for line in history.decode().splitlines():
        fields = line.split()
        if fields and fields[0] == str(old_timeline):
            return parse_lsn(fields[1])
    raise AssertionError(f"timeline {old_timeline} not in history:\n{history.decode()}")


def _snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


@pytest.mark.majors
def test_follows_promoted_standby_like_pg_receivewal(
        pg_cluster, standby_factory, bindir, procs, tmp_path):
    """Both receivers stream from a standby; it is promoted: the walsender
    ends timeline 1, both follow onto timeline 2 on the same connection and
    write the same files (the old timeline's last segment stays .partial,
    the history file is the server's) and the same messages."""
    primary = pg_cluster
    seg = primary.wal_segment_size
    primary.execute("CREATE TABLE IF NOT EXISTS walfast_fill (id bigint, payload text)")
    standby = standby_factory(primary)
    conninfo = standby.conninfo()
    wf_dir, pg_dir = make_dirs(tmp_path, "walfast", "pg_receivewal")
    wf = procs.walfast("-D", str(wf_dir), "-d", conninfo, "-n", "-v")
    pg = procs.pg_receivewal(bindir, "-D", str(pg_dir), "-d", conninfo, "-n", "-v")
    wait_streaming(standby, ["walfast", "pg_receivewal"], [wf, pg])
    start, tli = wf.start_position()
    assert tli == 1 and pg.start_position() == (start, 1)

    primary.generate_wal(seg + seg // 2)
    lsn = small_commit(primary)
    wait_until(lambda: all(holds_wal(d, primary, start, lsn) for d in (wf_dir, pg_dir)),
               "both to receive the primary's WAL through the standby", 60, [wf, pg])

    assert standby.promote() == 2
    history = (standby.pg_wal / history_file_name(2)).read_bytes()
    switch = _switch_point(history, 1)
    standby.generate_wal(seg)
    standby.switch_wal()
    end = small_commit(standby)
    new_partial = standby.segment_name(end // seg, timeline=2) + ".partial"
    for d, p in ((wf_dir, wf), (pg_dir, pg)):
        wait_until(lambda: new_partial in wal_files(d)
                   and holds_wal(d, standby, switch - switch % seg, end, timeline=2),
                   f"{p.name} to follow timeline 2", 60, [wf, pg])
    assert wf.interrupt() == 0
    assert pg.interrupt() == 0
    assert "Traceback" not in wf.stderr()

    names = wal_files(wf_dir)
    assert names == wal_files(pg_dir)
    # The old timeline's last segment, cut by the switch, stays .partial.
    old_partial = standby.segment_name(switch // seg, timeline=1) + ".partial"
    assert [n for n in partial_files(wf_dir) if n.startswith("00000001")] == [old_partial]
    assert holds_wal(wf_dir, primary, start, switch, timeline=1)
    assert new_partial in names
    for name in names:
        assert (wf_dir / name).read_bytes() == (pg_dir / name).read_bytes(), name
    for name in completed_files(wf_dir):
        assert (wf_dir / name).read_bytes() == (standby.pg_wal / name).read_bytes(), name
    assert (wf_dir / "00000002.history").read_bytes() == (pg_dir / "00000002.history") \
        .read_bytes() == history
    assert f"switched to timeline 2 at {format_lsn(switch)}" in wf.stderr()
    same_output(wf, pg)


def test_start_at_end_of_timeline_and_missing_history(
        pg_cluster, standby_factory, procs, tmp_path):
    """The directory ends exactly where timeline 1 ends (the promotion
    happened right after a segment switch): START_REPLICATION on timeline 1
    is answered with the next timeline and no COPY, and walfast goes on with
    timeline 2 (pg_receivewal 15 stops there with "could not send
    replication command").  Then, with the history file removed from the
    directory, a restart on timeline 2 fetches it again."""
    primary = pg_cluster
    seg = primary.wal_segment_size
    standby = standby_factory(primary)
    (d,) = make_dirs(tmp_path, "wal")
    conninfo = standby.conninfo()

    wf = procs.walfast("-D", str(d), "-d", conninfo, "-v")
    wait_streaming(standby, ["walfast"], [wf])
    start, _ = wf.start_position()
    primary.generate_wal(seg // 2)
    switch_end = primary.switch_wal()
    boundary = switch_end + (-switch_end) % seg
    # Nothing may follow the switch on timeline 1: stop the primary at once
    # (an immediate shutdown writes no WAL) once the standby replayed it.
    wait_until(lambda: parse_lsn(standby.execute(
        "SELECT pg_last_wal_replay_lsn()::text")[0][0]) >= switch_end,
        "the standby to replay the segment switch", 30, [wf])
    primary.stop("immediate")
    last_tli1 = primary.segment_name(boundary // seg - 1)
    wait_until(lambda: (d / last_tli1).exists(), f"walfast to complete {last_tli1}", 30, [wf])
    assert wf.interrupt() == 0

    assert standby.promote() == 2
    history = (standby.pg_wal / history_file_name(2)).read_bytes()
    assert _switch_point(history, 1) == boundary, "timeline 2 does not begin at a segment start"
    assert not partial_files(d), "walfast left a .partial: its start would not be the switch"

    second = procs.walfast("-D", str(d), "-d", conninfo, "-v", name="walfast-after")
    wait_streaming(standby, ["walfast"], [second])
    assert second.start_position() == (boundary, 1)
    end = small_commit(standby)
    wait_until(lambda: holds_wal(d, standby, boundary, end, timeline=2),
               "walfast to stream timeline 2", 30, [second])
    assert second.interrupt() == 0
    assert f"switched to timeline 2 at {format_lsn(boundary)}" in second.stderr()
    assert (d / "00000002.history").read_bytes() == history
    assert partial_files(d) == [standby.segment_name(end // seg, timeline=2) + ".partial"]
    assert holds_wal(d, standby, start, boundary, timeline=1)

    # The history file goes missing: fetched again, durably, at start.
    (d / "00000002.history").unlink()
    third = procs.walfast("-D", str(d), "-d", conninfo, "-v", name="walfast-third")
    wait_streaming(standby, ["walfast"], [third])
    resumed, tli = third.start_position()
    assert tli == 2 and boundary <= resumed <= end
    end2 = small_commit(standby)
    wait_until(lambda: holds_wal(d, standby, boundary, end2, timeline=2),
               "walfast to resume timeline 2", 30, [third])
    assert third.interrupt() == 0
    assert (d / "00000002.history").read_bytes() == history
    assert not (d / "00000002.history.tmp").exists()
    assert "Traceback" not in wf.stderr() + second.stderr() + third.stderr()


def test_server_without_history_file(pg_cluster, standby_factory, procs, tmp_path):
    """The server lost the history file of its own timeline: walfast cannot
    stream timeline 2 from it and says so; without -n too it exits instead
    of reconnecting forever, and writes no WAL (at most the empty .partial
    that records where it would have started, WalDirectory.mark_start)."""
    standby = standby_factory(pg_cluster)
    assert standby.promote() == 2
    (standby.pg_wal / history_file_name(2)).unlink()
    (d,) = make_dirs(tmp_path, "wal")
    wf = procs.walfast("-D", str(d), "-d", standby.conninfo())
    assert wf.wait(30) == 1
    err = wf.stderr()
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    assert err.startswith("walfast: error: the server has no history file for timeline 2 (")
    assert "connect to the server that has it" in err
    assert [(d / name).stat().st_size for name in wal_files(d)] in ([], [0])
    assert not (d / "00000002.history").exists()


def test_timeline_the_server_does_not_have(pg_cluster, procs, tmp_path):
    """The directory's newest WAL is on timeline 2, the server is on
    timeline 1: refused with pg_receivewal's message and what to do; nothing
    in the directory changes."""
    cluster = pg_cluster
    seg = cluster.wal_segment_size
    cluster.generate_wal(seg)
    cluster.switch_wal()
    first = cluster.completed_segments()[-1]
    segno = cluster.parse_segment_name(first.name)[1]
    (d,) = make_dirs(tmp_path, "wal")
    # A real segment of this cluster (so the directory's identity matches),
    # named as the start of timeline 2.
    (d / cluster.segment_name(segno, timeline=2)).write_bytes(first.read_bytes())
    before = _snapshot(d)
    wf = procs.walfast("-D", str(d), "-d", cluster.conninfo())
    assert wf.wait(30) == 1
    err = wf.stderr()
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("walfast: error: starting timeline 2 is not present in the server "
                          "(the directory says timeline 2, the server is on timeline 1)")
    assert "use another directory" in err
    after = _snapshot(d)
    # Only walfast's own records were added (in its state directory), no
    # WAL file was created or changed.
    assert after == before
    assert sorted(os.listdir(d)) == sorted([*before, STATE_DIR])
    assert not START_RE.search(err)


@pytest.mark.majors
def test_resume_past_the_fork_point(pg_cluster, standby_factory, bindir, procs, tmp_path):
    """walfast received from the old primary WAL its standby never got;
    the standby is promoted, so timeline 2 forks before that WAL, in the
    same segment.  The .partial's last valid page is past the fork, where
    the standby would refuse to start: walfast starts at the segment start
    instead, as pg_receivewal does, and both end with the same files."""
    primary = pg_cluster
    seg = primary.wal_segment_size
    standby = standby_factory(primary)
    primary.switch_wal()
    fork = small_commit(primary)
    wait_until(lambda: parse_lsn(standby.execute(
        "SELECT pg_last_wal_replay_lsn()::text")[0][0]) >= fork,
        "the standby to replay the commit", 30)
    standby.stop("fast")

    wf_dir, pg_dir = make_dirs(tmp_path, "walfast", "pg_receivewal")
    first = procs.walfast("-D", str(wf_dir), "-d", primary.conninfo(), "-v", name="from-primary")
    wait_streaming(primary, ["walfast"], [first])
    assert first.start_position() == (fork - fork % seg, 1)
    primary.generate_wal(seg // 4)
    beyond = small_commit(primary)
    assert beyond // seg == fork // seg, "the test needs the fork and the WAL after it in one segment"
    wait_until(lambda: holds_wal(wf_dir, primary, fork - fork % seg, beyond),
               "walfast to receive the WAL the standby lacks", 30, [first])
    assert first.interrupt() == 0
    primary.stop("immediate")

    standby.start()
    assert standby.promote() == 2
    switch = _switch_point((standby.pg_wal / history_file_name(2)).read_bytes(), 1)
    assert fork <= switch < beyond - 8192
    for p in (p for p in wf_dir.iterdir() if p.is_file()):
        (pg_dir / p.name).write_bytes(p.read_bytes())
    conninfo = standby.conninfo()
    wf = procs.walfast("-D", str(wf_dir), "-d", conninfo, "-n", "-v")
    pg = procs.pg_receivewal(bindir, "-D", str(pg_dir), "-d", conninfo, "-n", "-v")
    wait_streaming(standby, ["walfast", "pg_receivewal"], [wf, pg])
    end = small_commit(standby)
    for d, p in ((wf_dir, wf), (pg_dir, pg)):
        wait_until(lambda: holds_wal(d, standby, switch - switch % seg, end, timeline=2),
                   f"{p.name} to follow timeline 2", 30, [wf, pg])
    assert wf.interrupt() == 0
    assert pg.interrupt() == 0
    assert wf.start_position() == pg.start_position() == (fork - fork % seg, 1)
    same_output(wf, pg)
    assert wal_files(wf_dir) == wal_files(pg_dir)
    for name in wal_files(wf_dir) + ["00000002.history"]:
        assert (wf_dir / name).read_bytes() == (pg_dir / name).read_bytes(), name
