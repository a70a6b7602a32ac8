"""Crash safety: resuming inside a ``.partial`` (walfast/resume.py), a
``.partial`` of the wrong size, and the kill loop: walfast killed with
SIGKILL at random moments while a real primary generates WAL, restarted
each time; the server's flush view never runs ahead of the files, and the
end result is byte-identical to the primary's pg_wal.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

import psycopg
import pytest

from helpers.receivers import (
    START_RE,
    assert_completed_like_pg_wal,
    holds_wal,
    mismatch,
    small_commit,
    wait_until,
    wal_files,
)
from helpers.wal_synth import OTHER_MAGIC, SYSID, make_wal
from walfast import SegmentError, SegmentWriter
from walfast.lsn import format_lsn, parse_lsn
from walfast.waldir.layout import BOOT, STATE_DIR, state_file
from walfast.waldir.resume import current_boot_id, last_valid_page, note_boot, resume_position

MB = 1 << 20
P = 8192
SEG_START = 3 * MB
NAME = "000000010000000000000003.partial"


def _partial(tmp_path: Path, nbytes: int, **kw) -> Path:
    """A full-size .partial of segment 3 holding *nbytes* of WAL, then zeros."""
    path = tmp_path / NAME
    path.write_bytes(make_wal(SEG_START, nbytes, segment_size=MB, **kw) + bytes(MB - nbytes))
    return path


def _last(path: Path, timeline: int = 1, sysid: int = SYSID) -> int | None:
    return last_valid_page(path, segment_start=SEG_START, timeline=timeline, segment_size=MB,
                           page_size=P, system_identifier=sysid)


# --------------------------------------------------------------------------- #
# the page scan
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("nbytes, last_page", [
    (10 * P + 100, 10),     # page 10's header arrived: its page may be incomplete
    (10 * P, 9),            # page 10 never started
    (10 * P + 2, 9),        # page 10's header cut before xlp_tli
    # Cut inside xlp_pageaddr, whose high bytes are zeros anyway: reads as
    # valid, which is safe, since page 10 was begun, all before it is there.
    (10 * P + 12, 10),
    (100, 0),
    (MB, MB // P - 1),      # all of it: the last page may still be incomplete
])
def test_last_valid_page(tmp_path, nbytes, last_page):
    assert _last(_partial(tmp_path, nbytes)) == SEG_START + last_page * P


def test_first_page_must_match_the_server(tmp_path):
    path = _partial(tmp_path, 5 * P)
    assert _last(path, sysid=SYSID + 1) is None
    assert last_valid_page(path, segment_start=SEG_START, timeline=1, segment_size=MB,
                           page_size=2 * P, system_identifier=SYSID) is None
    assert _last(_partial(tmp_path, 0)) is None


@pytest.mark.parametrize("page, offset, fmt, value", [
    (4, 0, "<H", OTHER_MAGIC),     # xlp_magic of another major
    (4, 2, "<H", 0x0010),          # unknown xlp_info flag
    (4, 2, "<H", 0x0002),          # a long header inside the segment
    (4, 4, "<I", 2),               # xlp_tli above the timeline
    (4, 4, "<I", 0),               # xlp_tli 0
    (4, 8, "<Q", SEG_START),       # xlp_pageaddr of another page
])
def test_scan_stops_at_first_bad_header(tmp_path, page, offset, fmt, value):
    import struct

    path = _partial(tmp_path, 8 * P)
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, page * P + offset, value)
    path.write_bytes(bytes(data))
    assert _last(path) == SEG_START + (page - 1) * P


def test_older_timeline_pages_are_valid(tmp_path):
    """A timeline-2 segment starting with timeline-1 pages (before the switch)."""
    path = _partial(tmp_path, 3 * P)
    assert _last(path, timeline=2) == SEG_START + 2 * P


# --------------------------------------------------------------------------- #
# resume_position and the boot record
# --------------------------------------------------------------------------- #

def _resume(tmp_path: Path, start: int = SEG_START, untrusted: int | None = -1) -> int:
    return resume_position(tmp_path, start, 1, segment_size=MB, page_size=P,
                           system_identifier=SYSID, untrusted_through=untrusted)


def test_resume_position(tmp_path):
    assert _resume(tmp_path) == SEG_START                     # no file
    (tmp_path / NAME).write_bytes(b"")
    assert _resume(tmp_path) == SEG_START                     # empty: a new segment
    _partial(tmp_path, 7 * P + 5000)
    assert _resume(tmp_path) == SEG_START + 7 * P             # written in this boot
    assert _resume(tmp_path, untrusted=3) == SEG_START        # maybe from an earlier boot
    assert _resume(tmp_path, untrusted=2) == SEG_START + 7 * P
    assert _resume(tmp_path, untrusted=None) == SEG_START     # no boot id
    assert _resume(tmp_path, start=4 * MB) == 4 * MB          # after a completed segment
    _partial(tmp_path, 0)
    assert _resume(tmp_path) == SEG_START                     # nothing valid in it


def test_wrong_size_partial_refused_before_streaming(tmp_path):
    (tmp_path / NAME).write_bytes(b"x" * 12345)
    with pytest.raises(SegmentError) as ei:
        _resume(tmp_path)
    msg = str(ei.value)
    assert ei.value.filename == str(tmp_path / NAME)
    assert msg.startswith(f'segment file "{tmp_path / NAME}" has 12345 bytes, should be 0 or '
                          f"1048576 (the WAL segment size)")
    assert "Move it out of the directory" in msg and "truncate it to 0 bytes" in msg
    assert (tmp_path / NAME).read_bytes() == b"x" * 12345


def test_boot_record(tmp_path):
    if current_boot_id() is None:
        pytest.skip("no kernel boot id here")
    (tmp_path / "000000010000000000000005").write_bytes(b"")
    (tmp_path / "000000020000000000000007.partial").write_bytes(b"")
    (tmp_path / "00000002.history").write_bytes(b"")
    assert note_boot(tmp_path, MB) == 7
    record = json.loads(state_file(tmp_path, BOOT).read_text())
    assert record == {"boot_id": current_boot_id(), "untrusted_through_segno": 7}
    # Files created later in this boot are trusted: the record stays.
    (tmp_path / "000000020000000000000009.partial").write_bytes(b"")
    assert note_boot(tmp_path, MB) == 7
    # Another boot wrote the record: everything present now is suspect.
    record["boot_id"] = "00000000-0000-0000-0000-000000000000"
    state_file(tmp_path, BOOT).write_text(json.dumps(record))
    assert note_boot(tmp_path, MB) == 9
    state_file(tmp_path, BOOT).write_text("garbage")
    assert note_boot(tmp_path, MB) == 9
    assert sorted(os.listdir(tmp_path / STATE_DIR)) == [BOOT]


def test_empty_directory_trusts_everything_later(tmp_path):
    if current_boot_id() is None:
        pytest.skip("no kernel boot id here")
    assert note_boot(tmp_path, MB) == -1


def test_writer_resumes_at_the_scanned_page(tmp_path):
    """A writer dropped without close() (what SIGKILL leaves: no sync, no
    rename), then a new one started where resume_position says: the
    segment comes out identical to the WAL."""
    wal = make_wal(SEG_START, MB, segment_size=MB)
    w = SegmentWriter(tmp_path, timeline=1, start_lsn=SEG_START, segment_size=MB,
                      system_identifier=SYSID)
    for k in range(0, 300_123, 7_000):          # message by message, as received
        w.write(SEG_START + k, wal[k:min(k + 7_000, 300_123)])
    del w
    start = _resume(tmp_path)
    assert start == SEG_START + (300_123 // P) * P
    with SegmentWriter(tmp_path, timeline=1, start_lsn=start, segment_size=MB,
                       system_identifier=SYSID) as w:
        assert w.flush_lsn == start
        w.write(start, wal[start - SEG_START:])
    assert os.listdir(tmp_path) == [NAME[:24]]
    assert (tmp_path / NAME[:24]).read_bytes() == wal


# --------------------------------------------------------------------------- #
# real server
# --------------------------------------------------------------------------- #

def test_wrong_size_partial_with_server(pg_cluster, procs, tmp_path):
    """Without -n too: exit 1 with what to do, the file untouched, no
    retry loop."""
    cluster = pg_cluster
    seg = cluster.wal_segment_size
    name = cluster.segment_name(cluster.current_wal_lsn() // seg) + ".partial"
    d = tmp_path / "wal"
    d.mkdir()
    (d / name).write_bytes(b"\0" * 4096)
    wf = procs.walfast("-D", str(d), "-d", cluster.conninfo(), "-v")
    assert wf.wait(30) == 1
    err = wf.stderr()
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(
        f'walfast: error: segment file "{d / name}" has 4096 bytes, should be 0 or {seg}')
    assert "truncate it to 0 bytes; walfast then streams that segment again" in err
    assert (d / name).read_bytes() == b"\0" * 4096


class _WalGenerator(threading.Thread):
    """Commits rows on the primary until stopped, a few MB of WAL a second."""

    def __init__(self, cluster) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.cluster.connect() as conn:
                conn.execute("CREATE TABLE IF NOT EXISTS kill_fill (id bigint, payload text)")
                n = 0
                while not self.stop.is_set():
                    conn.execute("INSERT INTO kill_fill SELECT g, repeat(md5(g::text), 20) "
                                 "FROM generate_series(%s::bigint, %s::bigint) g", (n, n + 99))
                    n += 100
                    time.sleep(0.02)
        except BaseException as e:  # reported by the test
            self.error = e


def _common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    step = 1 << 14
    i = 0
    while i < n and a[i:i + step] == b[i:i + step]:
        i += step
    if i >= n:
        return n
    end = min(i + step, n)
    while i < end and a[i] == b[i]:
        i += 1
    return i


def _contiguous_end(d: Path, cluster, start: int, verified: set[str]) -> int:
    """End of the WAL the directory holds contiguously from *start*,
    every byte equal to the primary's: completed segments, then the
    .partial's matching prefix."""
    seg = cluster.wal_segment_size
    segno = start // seg
    while True:
        name = cluster.segment_name(segno)
        if (d / name).exists():
            if name not in verified:
                assert (d / name).read_bytes() == (cluster.pg_wal / name).read_bytes(), \
                    f"completed {name} differs from pg_wal"
                verified.add(name)
            segno += 1
            continue
        if (d / (name + ".partial")).exists():
            ours = (d / (name + ".partial")).read_bytes()
            theirs = (cluster.pg_wal / name).read_bytes()
            return segno * seg + _common_prefix(ours, theirs)
        return segno * seg


def _slot_after_disconnect(cluster, slot: str) -> int:
    """The slot's restart_lsn once its walsender is gone (a status update
    still in the socket buffer is processed before it exits)."""
    def inactive():
        (active, lsn), = cluster.execute(
            "SELECT active, restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            (slot,))
        return None if active else lsn
    return parse_lsn(wait_until(inactive, f"slot {slot} to be released", 30))


@pytest.mark.majors
def test_kill_loop(shared_cluster, procs, tmp_path):
    kills_wanted = 24
    seed = int(os.environ.get("WALFAST_KILL_SEED", time.time_ns() % (1 << 32)))
    print(f"kill loop seed {seed} (set WALFAST_KILL_SEED to repeat)")
    rng = random.Random(seed)
    cluster = shared_cluster(wal_segsize_mb=1, autovacuum=False)
    seg = cluster.wal_segment_size
    (reserved,), = cluster.execute(
        "SELECT lsn::text FROM pg_create_physical_replication_slot('kill_slot', true)")
    # The slot starts at the position it reserved, which no receiver
    # reported: until a flush report passes it, restart_lsn stays there.
    reserved = parse_lsn(reserved)
    d = tmp_path / "wal"
    d.mkdir()
    conninfo = cluster.conninfo()
    gen = _WalGenerator(cluster)
    gen.start()
    first_start: int | None = None
    verified: set[str] = set()
    kills = mid_segment = mid_flush = 0
    try:
        for i in range(kills_wanted):
            args = ["-D", str(d), "-d", conninfo, "-S", "kill_slot", "-s", "1", "-v"]
            if rng.random() < 0.5:
                args.append("--synchronous")   # a status update after every flush
            wf = procs.walfast(*args, name=f"walfast-{i}")
            time.sleep(rng.uniform(0.05, 1.6))
            assert wf.alive(), f"seed {seed}: run {i} exited by itself:\n{wf.stderr()}"
            wf.kill()
            kills += 1
            assert gen.error is None, gen.error
            err = wf.stderr()
            assert "error" not in err and "Traceback" not in err, f"seed {seed}:\n{err}"
            m = START_RE.search(err)
            if m:
                start = parse_lsn(m.group(1))
                if first_start is None:
                    first_start = start
                mid_segment += start % seg != 0
            if first_start is None:
                continue    # killed before it even chose where to start
            restart = _slot_after_disconnect(cluster, "kill_slot")
            held = _contiguous_end(d, cluster, first_start, verified)
            assert restart <= held or restart == reserved, (
                f"seed {seed}, kill {kills}: the server saw flush {format_lsn(restart)}, but the "
                f"directory holds valid WAL only up to {format_lsn(held)}")
            mid_flush += restart % seg != 0
    finally:
        gen.stop.set()
        gen.join(30)
    assert gen.error is None, gen.error
    assert first_start is not None

    # Catch up to a known position and compare the whole range.
    end = small_commit(cluster)
    last = procs.walfast("-D", str(d), "-d", conninfo, "-S", "kill_slot", "-v", name="final")
    wait_until(lambda: holds_wal(d, cluster, first_start, end),
               f"the final run to reach {format_lsn(end)}", 60, [last])
    assert last.interrupt() == 0
    assert "Traceback" not in last.stderr()
    names = assert_completed_like_pg_wal(d, cluster)
    assert names and names[0] == cluster.segment_name(first_start // seg)
    problem = mismatch(d, cluster, first_start, end)
    assert problem is None, f"seed {seed}: {problem}"
    compared = end - first_start
    print(f"kill loop: seed {seed}: {kills} SIGKILLs survived, {mid_segment} restarts resumed "
          f"inside a .partial, {compared} bytes ({len(names)} completed segments and the "
          f".partial up to {format_lsn(end)}) identical to pg_wal; {mid_flush} kills left the "
          f"server with a flush position inside a segment, none past the directory's WAL")
    assert kills >= 20
    assert compared > 10 * seg, "too little WAL for the test to mean much"
    assert mid_segment >= 3, "hardly any restart resumed inside a .partial"
    assert mid_flush >= 1, "the server never saw a flush position inside a segment"
    with psycopg.connect(cluster.conninfo(), autocommit=True) as conn:
        conn.execute("SELECT pg_drop_replication_slot('kill_slot')")


@pytest.mark.majors
def test_kill_before_the_first_wal_loses_nothing(shared_cluster, pg_major, procs, tmp_path):
    """Rounds of: walfast starts into an empty directory with a slot and is
    killed (SIGKILL) as soon as it says where it starts, before any WAL
    reached it; WAL is written while no receiver runs; walfast starts again
    and catches up.  The restart must start no later than the first run
    (the directory holds every byte between), and the directory ends up
    holding all the WAL from the first start.

    Before 15 the server cannot say where a slot stands, so an empty
    directory's start is the server's position, which moves on: unless the
    first run wrote its start down before START_REPLICATION (the empty
    .partial of WalDirectory.mark_start), the restart started after the WAL
    written meanwhile and never received it.  Each round starts with the
    server idle at a segment start, so the first run has nothing to receive
    before the kill (checked where the start is the server's position)."""
    cluster = shared_cluster(wal_segsize_mb=1, autovacuum=False)
    seg = cluster.wal_segment_size
    conninfo = cluster.conninfo()
    killed_before_wal = 0
    for r in range(3):
        slot = f"first_wal_{r}"
        cluster.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
        d = tmp_path / f"round-{r}"
        d.mkdir()
        cluster.switch_wal()
        idle_at = cluster.current_wal_lsn()
        first = procs.walfast("-D", str(d), "-d", conninfo, "-S", slot, "-v", name=f"first-{r}")
        start, _ = first.start_position()
        first.kill()
        assert "Traceback" not in first.stderr()
        if start == idle_at and cluster.current_wal_lsn() == idle_at:
            # Nothing to send from there: killed before any WAL reached it.
            killed_before_wal += 1
            assert all((d / n).stat().st_size == 0 for n in wal_files(d)), wal_files(d)

        cluster.generate_wal(2 * seg)        # while no receiver runs
        end = small_commit(cluster)
        again = procs.walfast("-D", str(d), "-d", conninfo, "-S", slot, "-v", name=f"again-{r}")
        restart, _ = again.start_position()
        assert restart <= start or holds_wal(d, cluster, start, restart), (
            f"round {r}: the first run started at {format_lsn(start)}, the restart at "
            f"{format_lsn(restart)}: {mismatch(d, cluster, start, restart)}")
        wait_until(lambda: holds_wal(d, cluster, start, end),
                   f"the restart to receive up to {format_lsn(end)}", 60, [again])
        assert again.interrupt() == 0
        assert_completed_like_pg_wal(d, cluster)
    if not pg_major.read_replication_slot:
        assert killed_before_wal >= 1, "no round killed a receiver before its first WAL"

