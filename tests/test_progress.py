"""The shared progress state (walfast.monitor.progress): layout, lock-free
reads, and what a receiver publishes while streaming from a real server."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import time

import pytest

from helpers.receivers import clean_env, wait_streaming, wait_until
from helpers.wal_synth import keepalive, make_wal, xlogdata
from walfast import SegmentWriter, StreamParser, _core
from walfast.monitor import progress as P

MB = 1 << 20


# --------------------------------------------------------------------------- #
# the file, without a server
# --------------------------------------------------------------------------- #

def test_layout_field_by_field(tmp_path):
    """Every field of the C struct (walfast/_progress.pxi), written with a
    distinctive value through the writer's paths (ProgressState.update, the
    receive loop's per-batch and per-fdatasync publications), reads back
    through parse_progress, and the raw bytes at the offset the engine's
    field table gives hold it."""
    s = P.create_state(tmp_path)
    s.update(state=P.STOPPING, received_tli=0x0A0B0C0D, system_identifier=0x1122334455667788,
             segment_size=0x0000_0004_0000_0000 + 16 * MB, receive_start_lsn=0x0102030405060708,
             receive_start_tli=0x31323334, sync=True, report_flush=True, slot_name="slot_a",
             sender_host="db.example", sender_port=0x4142, reconnects=0x5152535455565758)
    s.publish(written_lsn=0x2122232425262728, flushed_lsn=0x2021222324252627,
              latest_end_lsn=0x3132333435363738, latest_end_time=0x0001_0203_0405_0607,
              last_msg_send_time=0x0001_1213_1415_1617, caught_up_time=0x0001_2223_2425_2627,
              last_msg_receipt_time=0x0001_3233_3435_3637, messages=0x6162636465666768,
              wal_bytes=0x7172737475767778, segments_completed=0x0102, status_updates=0x0304)
    # One flush in the first bucket, two in the second, ... (+Inf last).
    took = []
    for bucket, bound in enumerate(P.FLUSH_BUCKETS_US + (P.FLUSH_BUCKETS_US[-1] + 1,)):
        for _ in range(bucket + 1):
            s.publish_flush(0x10, 0x10, bound)      # positions never move back
            took.append(bound)
    raw = s.snapshot()
    snap = P.parse_progress(raw)
    s.close()
    t = P.pg_time_to_unix
    expected = {
        "magic": b"WALFPROG", "version": 2, "size": P.SIZE, "seq": snap.seq,
        "checksum": P._fnv1a64(raw[32:P.SIZE], "<"), "byte_order": 0x01020304,
        "state": P.STOPPING, "pid": os.getpid(), "flags": 3, "received_tli": 0x0A0B0C0D,
        "system_identifier": 0x1122334455667788, "segment_size": 0x0000_0004_0000_0000 + 16 * MB,
        "receive_start_lsn": 0x0102030405060708, "receive_start_tli": 0x31323334,
        "sender_port": 0x4142, "written_lsn": 0x2122232425262728,
        "flushed_lsn": 0x2021222324252627, "latest_end_lsn": 0x3132333435363738,
        "latest_end_time": 0x0001_0203_0405_0607, "last_msg_send_time": 0x0001_1213_1415_1617,
        "last_msg_receipt_time": 0x0001_3233_3435_3637, "caught_up_time": 0x0001_2223_2425_2627,
        "start_time": None, "update_time": None,     # clocks: checked below
        "messages": 0x6162636465666768, "wal_bytes": 0x7172737475767778,
        "segments_completed": 0x0102, "reconnects": 0x5152535455565758,
        "status_updates": 0x0304, "flushes": len(took), "flush_time_us": sum(took),
        "flush_buckets": tuple(range(1, 17)), "slot_name": "slot_a", "sender_host": "db.example",
    }
    # The table covers the struct, in order, without gaps or overlaps, and
    # every field got a value above.
    names = [name for name, _, _, _ in _core.PROGRESS_FIELDS]
    assert names == list(expected)
    pos = 0
    for name, offset, size, kind in _core.PROGRESS_FIELDS:
        assert offset == pos, name
        pos = offset + size
    assert pos == P.SIZE == len(raw) == 664

    # What parse_progress made of each field.
    read_back = {
        "seq": snap.seq, "state": P.STATES.index(snap.state), "pid": snap.pid,
        "flags": snap.sync | snap.report_flush << 1, "received_tli": snap.received_tli,
        "system_identifier": snap.system_identifier, "segment_size": snap.segment_size,
        "receive_start_lsn": snap.receive_start_lsn, "receive_start_tli": snap.receive_start_tli,
        "sender_port": snap.sender_port, "written_lsn": snap.written_lsn,
        "flushed_lsn": snap.flushed_lsn, "latest_end_lsn": snap.latest_end_lsn,
        "latest_end_time": snap.latest_end_time, "last_msg_send_time": snap.last_msg_send_time,
        "last_msg_receipt_time": snap.last_msg_receipt_time,
        "caught_up_time": snap.caught_up_time, "messages": snap.messages,
        "wal_bytes": snap.wal_bytes, "segments_completed": snap.segments_completed,
        "reconnects": snap.reconnects, "status_updates": snap.status_updates,
        "flushes": snap.flushes, "flush_time_us": round(snap.flush_time * 1e6),
        "flush_buckets": snap.flush_buckets, "slot_name": snap.slot_name,
        "sender_host": snap.sender_host,
    }
    for name, value in read_back.items():
        want = expected[name]
        if name.endswith("_time"):
            want = t(want)
        assert value == want, name
    now = time.time()
    assert now - 60 < snap.start_time <= snap.update_time <= now + 1

    # The raw bytes at each field's offset, in the writer's (native) order.
    native = "<" if sys.byteorder == "little" else ">"
    codes = {"u32": "I", "u64": "Q", "i64": "q"}
    for name, offset, size, kind in _core.PROGRESS_FIELDS:
        field = raw[offset:offset + size]
        if kind == "bytes":
            value = field
        elif kind == "text":
            value = field.rstrip(b"\0").decode()
            assert not any(field[len(value):]), name          # NUL-padded
        else:
            n = size // struct.calcsize(codes[kind])
            values = struct.unpack(native + codes[kind] * n, field)
            value = values if n > 1 else values[0]
        if expected[name] is not None:
            assert value == expected[name], name


def test_reader_matches_the_writers_own_snapshot(tmp_path):
    s = P.create_state(tmp_path)
    s.update(state=P.WAITING, slot_name="é" * 40, sender_host="h", sender_port=5)
    mine = P.parse_progress(s.snapshot())
    theirs = P.read_progress(tmp_path)
    assert theirs == mine
    # Text is cut to its field (63 bytes and a NUL) on a character boundary.
    assert mine.slot_name == "é" * 31
    assert (theirs.status, theirs.running) == ("waiting", True)
    s.close()


def test_stale_file_is_not_running_and_can_be_taken_over(tmp_path):
    s = P.create_state(tmp_path)
    s.update(state=P.STREAMING)
    s.close()                         # as a killed receiver: the lock is gone
    snap = P.read_progress(tmp_path)
    assert (snap.state, snap.running, snap.status) == ("streaming", False, "not running")
    again = P.create_state(tmp_path)
    assert P.read_progress(tmp_path).status == "starting"
    again.close()


def test_receiver_killed_mid_update_leaves_a_readable_takeover(tmp_path):
    s = P.create_state(tmp_path)
    s.close()
    path = P.state_path(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[16] |= 1                      # seq odd: died between begin and end
    path.write_bytes(bytes(raw))
    with pytest.raises(P.ProgressStateError, match="inconsistent"):
        P.read_progress(tmp_path, attempts=20)
    again = P.create_state(tmp_path)
    assert P.read_progress(tmp_path).seq % 2 == 0
    again.update(state=P.STREAMING)
    assert P.read_progress(tmp_path).status == "streaming"
    again.close()


def test_second_writer_is_refused(tmp_path):
    s = P.create_state(tmp_path)
    with pytest.raises(P.ProgressStateError, match=rf"another walfast receiver \(pid {os.getpid()}\)"):
        P.create_state(tmp_path, timeout=0.05)
    s.close()


def test_torn_or_foreign_images_are_rejected(tmp_path):
    s = P.create_state(tmp_path)
    raw = bytearray(s.snapshot())
    s.close()
    P.parse_progress(bytes(raw))
    torn = bytearray(raw)
    torn[100] ^= 1                    # a field changed after the checksum was taken
    with pytest.raises(P.ProgressStateError, match="inconsistent"):
        P.parse_progress(bytes(torn))
    odd = bytearray(raw)
    odd[16] |= 1                      # seq odd: being written
    with pytest.raises(P.ProgressStateError, match="inconsistent"):
        P.parse_progress(bytes(odd))
    with pytest.raises(P.ProgressStateError, match="not a walfast progress state"):
        P.parse_progress(b"x" * 664)
    P.state_path(tmp_path).write_bytes(b"NOTOURS!" + bytes(656))
    with pytest.raises(P.ProgressStateError, match="not a walfast progress state"):
        P.read_progress(tmp_path)


def test_no_state_file_is_a_clear_error(tmp_path):
    with pytest.raises(P.ProgressStateError, match="no walfast progress state in"):
        P.read_progress(tmp_path)


# --------------------------------------------------------------------------- #
# walEnd / sendTime bookkeeping in the parser
# --------------------------------------------------------------------------- #

def test_parser_latest_end_time_and_caught_up_time(tmp_path):
    pg = 1024
    wal = make_wal(0, 4 * pg, segment_size=MB, page_size=pg, seed=3)
    w = SegmentWriter(tmp_path, timeline=1, start_lsn=0, segment_size=MB, page_size=pg)
    p = StreamParser(w)
    # Behind from the start: the first message's send time.
    p.feed_copydata(xlogdata(0, wal[:pg], wal_end=4 * pg, send_time=100))
    assert (p.wal_end, p.wal_end_time, p.caught_up_time) == (4 * pg, 100, 100)
    p.feed_copydata(xlogdata(pg, wal[pg:2 * pg], wal_end=4 * pg, send_time=200))
    # walEnd did not advance: latest_end_time stays; still behind.
    assert (p.wal_end_time, p.caught_up_time, p.send_time) == (100, 100, 200)
    p.feed_copydata(xlogdata(2 * pg, wal[2 * pg:4 * pg], wal_end=4 * pg, send_time=300))
    assert p.caught_up_time == 300                      # everything up to walEnd written
    p.feed_copydata(keepalive(6 * pg, send_time=400))   # the server moved on
    assert (p.wal_end_time, p.caught_up_time) == (400, 300)
    w.close()


# --------------------------------------------------------------------------- #
# a receiver streaming from a real server, watched by a reader process
# --------------------------------------------------------------------------- #

READER = textwrap.dedent("""
    import json, sys, time
    from walfast.monitor.progress import read_progress, ProgressStateError
    directory, seconds = sys.argv[1], float(sys.argv[2])
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            s = read_progress(directory, check_running=False)
        except ProgressStateError:
            continue
        print(json.dumps([s.seq, s.state, s.written_lsn, s.flushed_lsn, s.messages,
                          s.wal_bytes, s.flushes, s.segments_completed, s.segment_size,
                          s.latest_end_lsn, sum(s.flush_buckets)]), flush=True)
        time.sleep(0.0005)
""")


def _start_reader(directory, seconds, cwd):
    return subprocess.Popen([sys.executable, "-c", READER, str(directory), str(seconds)],
                            stdout=subprocess.PIPE, text=True, cwd=cwd, env=clean_env())


@pytest.mark.slow
def test_reader_sees_monotonic_consistent_snapshots(pg_cluster, tmp_path, procs):
    cluster = pg_cluster
    seg = cluster.wal_segment_size
    cluster.execute("SELECT pg_create_physical_replication_slot('watched', true)")
    out = tmp_path / "wal"
    out.mkdir()
    # --synchronous: an fdatasync and a flushed-LSN publication every batch,
    # the most updates per second a reader can race with.
    r = procs.walfast("-D", str(out), "-d", cluster.conninfo(), "-S", "watched",
                      "--synchronous", "-n")
    wait_streaming(cluster, ["walfast"], [r])
    wait_until(lambda: P.state_path(out).exists(), "the progress state", procs=[r])
    reader = _start_reader(out, 12, os.getcwd())
    for _ in range(4):
        cluster.generate_wal(3 * seg)
    end = cluster.current_wal_lsn()
    wait_until(lambda: P.read_progress(out).flushed_lsn >= end, "WAL flushed", procs=[r])
    rows = [json.loads(line) for line in reader.communicate(timeout=60)[0].splitlines()]
    assert reader.returncode == 0
    assert len(rows) > 100, f"the reader got only {len(rows)} snapshots"
    prev = None
    for row in rows:
        seq, state, written, flushed, messages, nbytes, flushes, segs, segsize, end_lsn, hist = row
        assert seq % 2 == 0
        assert flushed <= written, row
        assert hist == flushes                # histogram and counter in the same update
        assert segsize in (0, seg)
        if prev is not None:
            pseq, _, pwritten, pflushed, pmessages, pbytes, pflushes, psegs, *_ = prev
            assert seq >= pseq
            assert written >= pwritten and flushed >= pflushed and messages >= pmessages \
                and nbytes >= pbytes and flushes >= pflushes and segs >= psegs, (prev, row)
            # Flushed moves mid-segment only through an fdatasync of the loop,
            # published together with its count.
            if flushed > pflushed and flushed % seg and state == "streaming":
                assert flushes > pflushes, (prev, row)
        prev = row
    assert rows[-1][3] >= end and rows[-1][6] > 0
    # Flushed was never past bytes on disk: the files hold the server's WAL
    # up to it.
    from helpers.receivers import mismatch
    final = P.read_progress(out)
    assert mismatch(out, cluster, final.receive_start_lsn, final.flushed_lsn) is None
    assert r.interrupt() == 0
    stopped = P.read_progress(out)
    assert (stopped.state, stopped.status) == ("stopped", "not running")
    assert stopped.flushed_lsn == stopped.written_lsn >= end


def test_published_fields_match_the_server(pg_cluster, tmp_path, procs):
    cluster = pg_cluster
    cluster.execute("SELECT pg_create_physical_replication_slot('fields', true)")
    out = tmp_path / "wal"
    out.mkdir()
    r = procs.walfast("-D", str(out), "-d", cluster.conninfo(), "-S", "fields", "-n", "-v")
    wait_streaming(cluster, ["walfast"], [r])
    start, tli = r.start_position()
    cluster.generate_wal(2 * cluster.wal_segment_size)
    end = cluster.current_wal_lsn()
    s = wait_until(lambda: (lambda s: s if s.written_lsn >= end else None)(P.read_progress(out)),
                   "WAL written", procs=[r])
    assert s.status == "streaming" and s.pid == r.pid
    assert s.system_identifier == cluster.system_identifier()
    assert (s.receive_start_lsn, s.receive_start_tli, s.received_tli) == (start, tli, tli)
    assert s.segment_size == cluster.wal_segment_size
    assert (s.slot_name, s.sender_host, s.sender_port) == ("fields", "127.0.0.1", cluster.port)
    assert s.sync and s.report_flush
    assert s.latest_end_lsn >= s.written_lsn     # the server had at least what we wrote
    assert s.segments_completed >= 2 and s.wal_bytes >= end - start
    assert s.last_msg_receipt_time >= s.last_msg_send_time - 5   # same host, same clock
    assert 0 <= s.lag_seconds() < 30
    # Completed segments are durable, and published in the same update.
    assert s.flushed_lsn >= start + s.segments_completed * cluster.wal_segment_size
    assert r.interrupt() == 0


def test_no_sync_publishes_written_but_never_flushed(pg_cluster, tmp_path, procs):
    cluster = pg_cluster
    out = tmp_path / "wal"
    out.mkdir()
    r = procs.walfast("-D", str(out), "-d", cluster.conninfo(), "--no-sync", "-n")
    wait_streaming(cluster, ["walfast"], [r])
    cluster.generate_wal(2 * cluster.wal_segment_size)
    end = cluster.current_wal_lsn()
    s = wait_until(lambda: (lambda s: s if s.written_lsn >= end else None)(P.read_progress(out)),
                   "WAL written", procs=[r])
    assert (s.sync, s.flushed_lsn, s.flushes) == (False, 0, 0)
    assert s.segments_completed >= 1
    assert r.interrupt() == 0
    assert P.read_progress(out).flushed_lsn == 0


def test_no_state_file_when_the_first_connection_fails(tmp_path):
    from helpers.receivers import run_cli, walfast_argv
    out = tmp_path / "wal"
    out.mkdir()
    res = run_cli(walfast_argv("-D", str(out), "-d", "host=127.0.0.1 port=1 connect_timeout=5"))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert list(out.iterdir()) == []
