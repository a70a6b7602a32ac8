"""SIGINT/SIGTERM stop walfast promptly even while it is busy catching up."""

import signal
import time

import pytest

from helpers.receivers import wait_until
from walfast.lsn import parse_lsn
from walfast.waldir.layout import STATE_DIR

MB = 1 << 20


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_while_busy(pg_cluster_factory, tmp_path, procs, signum):
    cluster = pg_cluster_factory(wal_segsize_mb=1)
    (reserved,), = cluster.execute(
        "SELECT lsn::text FROM pg_create_physical_replication_slot('busy', true)")
    cluster.generate_wal(400 * MB)          # a backlog to catch up on
    out = tmp_path / "wal"
    out.mkdir()
    # The backlog's first segment, empty: the start on every major (before
    # 15 a slot's position cannot be read, and the server's is past it).
    segno = parse_lsn(reserved) // cluster.wal_segment_size
    (out / (cluster.segment_name(segno) + ".partial")).write_bytes(b"")
    # --synchronous makes every batch fsync: the loop is as busy as it gets.
    r = procs.walfast("-D", str(out), "-d", cluster.conninfo(), "-S", "busy", "--synchronous",
                      "-n", "-v")
    def segments():
        return [p for p in out.iterdir() if p.name != STATE_DIR]

    wait_until(lambda: len(segments()) >= 20 or not r.alive(), "20 segments received")
    assert r.alive(), r.stderr()
    t0 = time.monotonic()
    r.popen.send_signal(signum)
    rc = r.wait(10)
    elapsed = time.monotonic() - t0
    done = len([p for p in segments() if not p.name.endswith(".partial")])
    assert done < 390, "it finished the backlog before the signal: not a busy-loop test"
    assert rc == 0, r.stderr()
    assert "received interrupt signal, exiting" in r.stderr()
    # The loop returns to Python at least every 0.1 s; interpreter exit adds a
    # little.  Generous bound for a shared machine; typically ~0.1 s.
    print(f"stopped {done} segments in, {elapsed:.3f} s after the signal")
    assert elapsed < 1.0, f"took {elapsed:.2f} s to stop"
