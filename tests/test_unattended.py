"""Left alone for months: faults a receiver meets, tried for real.

For each fault: what walfast says, its exit status under ``-n``, and without
``-n`` that it recovers by itself, ending with WAL byte-identical to the
server's pg_wal.  Faults are real: the walsender process stopped with
SIGSTOP, a loopback proxy that blackholes or cuts the connection
(helpers.faultproxy), a slot held by another connection or missing, WAL the
server already removed, a full disk, a read-only file system, write
permission taken away.  Where pg_receivewal behaves the same, it runs side
by side.  Times are kept short with ``--receive-timeout``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from helpers.faultproxy import FaultProxy
from helpers.receivers import (
    Receiver, assert_completed_like_pg_wal, clean_env, holds_wal, make_dirs, mismatch,
    partial_files, pg_receivewal_argv, replication_rows, run_cli, segno_of, small_commit,
    wait_streaming, wait_until, walfast_argv,
)
from walfast.cluster import tool_env
from walfast.lsn import format_lsn, parse_lsn
from walfast.monitor.progress import ProgressStateError, read_progress
from walfast.replication import walrcv
from walfast.stream import RECONNECT_SLEEP

pytestmark = pytest.mark.slow


@pytest.fixture
def bindir(pg_bindir):
    if not (pg_bindir / "pg_receivewal").exists():
        pytest.skip(f"no pg_receivewal in {pg_bindir}")
    return pg_bindir


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """The process *pid* stopped (SIGSTOP) while inside, continued after."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def state_of(d) -> str | None:
    try:
        return read_progress(d, check_running=False).state
    except (ProgressStateError, OSError):
        return None


def streams_again(receiver, directory, cluster, since: float) -> float:
    """Wait until *receiver* holds WAL from its start position through a
    new commit; the seconds since *since* (when the fault went away)."""
    start, _ = receiver.start_position()
    end = small_commit(cluster)
    wait_until(lambda: holds_wal(directory, cluster, start, end),
               f"WAL up to {format_lsn(end)}", 30, [receiver])
    return time.monotonic() - since


def lines(r) -> list[str]:
    return r.stderr().replace(f"{r.name}: ", "PROG: ").replace("walfast: ", "PROG: ") \
        .replace("pg_receivewal: ", "PROG: ").splitlines()


def test_frozen_walsender_is_noticed_and_streaming_resumes(pg_cluster, procs, tmp_path,
                                                           record_property):
    """The walsender stops (SIGSTOP), as a frozen server would: after half
    the receive timeout the state says silent and a reply is asked for;
    after the whole of it the connection is given up, with the time waited.
    The retry is refused while the frozen walsender still holds the slot
    (the server's words, retried every 5 s); once it is gone, streaming
    resumes by itself and nothing is missing."""
    cluster = pg_cluster
    cluster.execute("SELECT pg_create_physical_replication_slot('frozen', true)")
    (d,) = make_dirs(tmp_path, "wal")
    wf = procs.walfast("-D", str(d), "-d", cluster.conninfo(), "-S", "frozen",
                       "--receive-timeout", "4", "-v")
    pid = wait_streaming(cluster, ["walfast"], [wf])["walfast"]["pid"]
    start, _ = wf.start_position()
    t0 = time.monotonic()
    with stopped(pid):
        wait_until(lambda: state_of(d) == "silent", "the state to say silent", 10, [wf])
        silent_after = time.monotonic() - t0
        status = run_cli([sys.executable, "-m", "walfast.cli", "status", str(d)])
        assert "walfast receiver in" in status.stdout and ": silent (pid" in status.stdout
        assert "behind              unknown: no message from the server for" \
            in status.stdout, status.stdout
        wait_until(lambda: "no message from the server in 4 s" in wf.stderr(),
                   "the receive timeout", 15, [wf])
        timed_out_after = time.monotonic() - t0
        wait_until(lambda: 'replication slot "frozen" is active for PID' in wf.stderr(),
                   "the refused retry", 20, [wf])
    end = small_commit(cluster)
    wait_until(lambda: holds_wal(d, cluster, start, end), f"WAL up to {format_lsn(end)}",
               30, [wf])
    recovered_after = time.monotonic() - t0
    record_property("recovery", f"silent after {silent_after:.1f} s, gave up after "
                                f"{timed_out_after:.1f} s, streaming again "
                                f"{recovered_after:.1f} s after the freeze")
    assert 1.5 <= silent_after <= 4, silent_after
    assert 3.5 <= timed_out_after <= 8, timed_out_after
    err = wf.stderr()
    assert "Traceback" not in err
    assert ('walfast: error: could not send replication command "START_REPLICATION": '
            'ERROR:  replication slot "frozen" is active for PID') in err
    assert "walfast: disconnected; waiting 5 seconds to try again" in err
    assert wf.alive()
    assert state_of(d) == "streaming"


def test_frozen_walsender_with_no_loop_exits_1(pg_cluster, procs, tmp_path):
    cluster = pg_cluster
    (d,) = make_dirs(tmp_path, "wal")
    wf = procs.walfast("-D", str(d), "-d", cluster.conninfo(), "--receive-timeout", "2", "-n")
    pid = wait_streaming(cluster, ["walfast"], [wf])["walfast"]["pid"]
    with stopped(pid):
        assert wf.wait(15) == 1
    assert lines(wf)[-2:] == [
        "PROG: error: terminating the connection: no message from the server in 2 s "
        "(--receive-timeout)",
        "PROG: error: disconnected"]


def test_idle_server_never_trips_the_timeout(pg_cluster, procs, tmp_path):
    """An idle server sends nothing on its own while we send status updates:
    the reply asked for at half the timeout keeps the connection."""
    cluster = pg_cluster
    (d,) = make_dirs(tmp_path, "wal")
    wf = procs.walfast("-D", str(d), "-d", cluster.conninfo(), "--receive-timeout", "2",
                       "-n", "-v")
    wait_streaming(cluster, ["walfast"], [wf])
    time.sleep(6)           # three timeouts' worth of silence from an idle server
    assert wf.alive(), wf.stderr()
    assert "error" not in wf.stderr()
    assert state_of(d) in ("streaming", "silent")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_while_the_server_is_silent(pg_cluster, procs, tmp_path, signum):
    """SIGTERM/SIGINT end walfast within a second even when the server does
    not answer the end of the COPY (its walsender is stopped), exit 0, with
    what was received synced."""
    cluster = pg_cluster
    (d,) = make_dirs(tmp_path, "wal")
    wf = procs.walfast("-D", str(d), "-d", cluster.conninfo(), "-n", "-v")
    pid = wait_streaming(cluster, ["walfast"], [wf])["walfast"]["pid"]
    with stopped(pid):
        time.sleep(0.5)
        t0 = time.monotonic()
        wf.popen.send_signal(signum)
        rc = wf.wait(10)
        took = time.monotonic() - t0
    assert rc == 0, wf.stderr()
    assert took < 1.0, f"took {took:.2f} s to stop"
    assert "walfast: received interrupt signal, exiting" in wf.stderr()
    assert state_of(d) == "stopped"


def test_blackholed_path(pg_cluster, procs, tmp_path, record_property):
    """Packets vanish (no reset, no answer): the receive timeout ends the
    connection; reconnecting through the same path gives up after the
    connect timeout instead of hanging; once the path is back, streaming
    resumes and nothing is missing."""
    cluster = pg_cluster
    cluster.execute("SELECT pg_create_physical_replication_slot('holed', true)")
    (d,) = make_dirs(tmp_path, "wal")
    with FaultProxy(cluster.port) as proxy:
        conninfo = f"host=127.0.0.1 port={proxy.port} user=postgres"
        wf = procs.walfast("-D", str(d), "-d", conninfo, "-S", "holed",
                           "--receive-timeout", "3", "-v")
        wait_streaming(cluster, ["walfast"], [wf])
        start, _ = wf.start_position()
        proxy.blackhole()
        t0 = time.monotonic()
        wait_until(lambda: "no message from the server in 3 s" in wf.stderr(),
                   "the receive timeout", 15, [wf])
        wait_until(lambda: wf.stderr().count("disconnected; waiting 5 seconds") >= 2,
                   "a reconnect that gave up", 30, [wf])
        proxy.forward()
        # The old walsender still holds the slot until wal_sender_timeout
        # (60 s) unless it is ended: as an operator would, end it.
        cluster.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                        "WHERE slot_name = 'holed' AND active_pid IS NOT NULL")
        end = small_commit(cluster)
        wait_until(lambda: holds_wal(d, cluster, start, end),
                   f"WAL up to {format_lsn(end)}", 40, [wf])
        record_property("recovery", f"streaming again {time.monotonic() - t0:.1f} s after the "
                                    "path went dark")
    err = wf.stderr()
    assert "Traceback" not in err
    assert "timeout expired" in err, err        # the reconnect through the black hole


def test_connection_cut_mid_frame(pg_cluster, procs, tmp_path, record_property):
    """The connection is cut after a chosen number of bytes, in the middle of
    a message: walfast reconnects and the WAL is complete and identical."""
    cluster = pg_cluster
    cluster.execute("SELECT pg_create_physical_replication_slot('cut', true)")
    (d,) = make_dirs(tmp_path, "wal")
    seg = cluster.wal_segment_size
    with FaultProxy(cluster.port) as proxy:
        conninfo = f"host=127.0.0.1 port={proxy.port} user=postgres"
        wf = procs.walfast("-D", str(d), "-d", conninfo, "-S", "cut", "-v")
        wait_streaming(cluster, ["walfast"], [wf])
        start, _ = wf.start_position()
        proxy.cut_after(3 * seg + 12345)       # inside some XLogData message
        cluster.generate_wal(4 * seg)
        wait_until(lambda: proxy.connections >= 1 and "could not receive data" in wf.stderr(),
                   "the cut", 30, [wf])
        t0 = time.monotonic()
        wait_until(lambda: proxy.connections >= 2, "a reconnect", 30, [wf])
        proxy.cut_after(10**12)                 # no more cuts
        end = small_commit(cluster)
        wait_until(lambda: holds_wal(d, cluster, start, end),
                   f"WAL up to {format_lsn(end)}", 40, [wf])
        record_property("recovery", f"all WAL received {time.monotonic() - t0:.1f} s after "
                                    "the cut")
    assert "Traceback" not in wf.stderr()
    assert "walfast: disconnected; waiting 5 seconds to try again" in wf.stderr()


def test_slot_in_use_like_pg_receivewal(pg_cluster, bindir, procs, tmp_path, record_property):
    """Another connection holds the slot: under -n both programs say the
    server's words and exit 1 the same way; without -n walfast retries
    every 5 s and streams once the slot is free."""
    cluster = pg_cluster
    cluster.execute("SELECT pg_create_physical_replication_slot('busy_slot', true)")
    holder = walrcv.connect(cluster.conninfo(), cluster.current_wal_lsn() & ~0xFFFFF,
                            slot="busy_slot", application_name="holder")
    try:
        wf_dir, pg_dir, loop_dir = make_dirs(tmp_path, "walfast", "pg", "loop")
        wf = procs.walfast("-D", str(wf_dir), "-d", cluster.conninfo(), "-S", "busy_slot", "-n")
        pg = procs.pg_receivewal(bindir, "-D", str(pg_dir), "-d", cluster.conninfo(),
                                 "-S", "busy_slot", "-n")
        assert wf.wait(30) == pg.wait(30) == 1
        assert lines(wf) == lines(pg)
        assert lines(wf)[-1] == "PROG: error: disconnected"
        assert "is active for PID" in lines(wf)[0]
        loop = procs.walfast("-D", str(loop_dir), "-d", cluster.conninfo(), "-S", "busy_slot",
                             "-v", name="walfast-loop")
        wait_until(lambda: "disconnected; waiting 5 seconds" in loop.stderr(), "a retry",
                   20, [loop])
    finally:
        holder.disconnect()
        freed = time.monotonic()
    took = streams_again(loop, loop_dir, cluster, since=freed)
    record_property("recovery", f"streaming {took:.1f} s after the slot was freed")


@pytest.mark.majors
def test_missing_slot_is_retried_until_it_exists(pg_cluster, pg_major, bindir, procs, tmp_path,
                                                 record_property):
    cluster = pg_cluster
    wf_dir, pg_dir, loop_dir = make_dirs(tmp_path, "walfast", "pg", "loop")
    wf = procs.walfast("-D", str(wf_dir), "-d", cluster.conninfo(), "-S", "nope", "-n")
    pg = procs.pg_receivewal(bindir, "-D", str(pg_dir), "-d", cluster.conninfo(),
                             "-S", "nope", "-n")
    assert wf.wait(30) == pg.wait(30) == 1
    assert lines(wf) == lines(pg)
    missing = 'replication slot "nope" does not exist'
    if not pg_major.read_replication_slot:
        # Before 15 no READ_REPLICATION_SLOT: the slot is first named in
        # START_REPLICATION, which the server refuses.
        missing = f'could not send replication command "START_REPLICATION": ERROR:  {missing}'
    assert lines(wf) == [f"PROG: error: {missing}", "PROG: error: disconnected"]
    loop = procs.walfast("-D", str(loop_dir), "-d", cluster.conninfo(), "-S", "nope", "-v",
                         name="walfast-loop")
    wait_until(lambda: "disconnected; waiting 5 seconds" in loop.stderr(), "a retry", 20,
               [loop])
    cluster.execute("SELECT pg_create_physical_replication_slot('nope', true)")
    created = time.monotonic()
    took = streams_again(loop, loop_dir, cluster, since=created)
    record_property("recovery", f"streaming {took:.1f} s after the slot was created")


def test_wal_already_removed(pg_cluster_factory, bindir, procs, tmp_path):
    """The directory's WAL ends where the server has removed WAL since: the
    server's own words reach the user (never a libpq state message), then
    what it means for the archive."""
    cluster = pg_cluster_factory(wal_segsize_mb=1, wal_keep_size=0, max_wal_size="32MB",
                                 min_wal_size="2MB")
    seg = cluster.wal_segment_size
    first = cluster.completed_segments()[-1] if cluster.completed_segments() else None
    cluster.switch_wal()
    old = cluster.completed_segments()[-1]
    wf_dir, pg_dir = make_dirs(tmp_path, "walfast", "pg")
    for d in (wf_dir, pg_dir):
        (d / old.name).write_bytes(old.read_bytes())
    for _ in range(3):
        cluster.generate_wal(4 * seg)
        cluster.switch_wal()
        cluster.execute("CHECKPOINT")
    assert not (cluster.pg_wal / cluster.segment_name(
        cluster.parse_segment_name(old.name)[1] + 1)).exists(), "the next segment is still there"
    del first
    wf = procs.walfast("-D", str(wf_dir), "-d", cluster.conninfo(), "-n")
    pg = procs.pg_receivewal(bindir, "-D", str(pg_dir), "-d", cluster.conninfo(), "-n")
    assert wf.wait(30) == pg.wait(30) == 1
    ours, theirs = lines(wf), lines(pg)
    assert "Traceback" not in wf.stderr()
    assert ours[0] == theirs[0]
    assert ours[0].startswith("PROG: error: unexpected termination of replication stream: "
                              "ERROR:  requested WAL segment ")
    assert ours[0].endswith("has already been removed")
    assert ours[1].startswith("the server no longer has the WAL this directory needs next: "
                              "the archive has a gap from ")
    assert ours[-1] == theirs[-1] == "PROG: error: disconnected"


# --------------------------------------------------------------------------- #
# the disk: full, below --min-free, read-only
# --------------------------------------------------------------------------- #

@contextmanager
def small_tmpfs(path, size: str) -> Iterator[None]:
    """A tmpfs of *size* mounted at *path* (root only: skipped elsewhere,
    except under CI, where it must work)."""
    path.mkdir()
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("mounting a small tmpfs needs root; under CI that is a failure")
        pytest.skip("needs root to mount a small tmpfs")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                    str(path)], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def remount(path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True,
                   capture_output=True)


@pytest.mark.parametrize("limit", ["full", "min-free"])
def test_no_space_pauses_receiving_and_keeps_the_connection(pg_cluster, procs, tmp_path,
                                                           limit, record_property):
    """The next segment file does not fit (or would leave less than
    --min-free): receiving pauses, the same connection stays up (status
    updates keep it), the .partial is left as it is; once there is space,
    receiving goes on by itself and nothing is missing."""
    cluster = pg_cluster
    seg = cluster.wal_segment_size
    # A new slot reserves WAL from the last checkpoint's redo point: make it
    # the current position, so catching up needs one segment file at most.
    cluster.execute("CHECKPOINT")
    cluster.execute("SELECT pg_create_physical_replication_slot('nospace', true)")
    d = tmp_path / "wal"
    size, extra = ("3600k", []) if limit == "full" else ("12M", ["--min-free", "8MB"])
    with small_tmpfs(d, size):
        wf = procs.walfast("-D", str(d), "-d", cluster.conninfo(), "-S", "nospace", "-v",
                           "--receive-timeout", "3", *extra)
        pid = wait_streaming(cluster, ["walfast"], [wf])["walfast"]["pid"]
        start, _ = wf.start_position()
        cluster.generate_wal(6 * seg)
        wait_until(lambda: "receiving paused until there is space" in wf.stderr(),
                   "the pause", 30, [wf])
        wait_until(lambda: state_of(d) == "paused", "the state to say paused", 10, [wf])
        paused_at = time.monotonic()
        time.sleep(4)           # longer than the receive timeout: it waits too
        assert replication_rows(cluster)["walfast"]["pid"] == pid, "the connection was lost"
        assert wf.alive() and "disconnected" not in wf.stderr(), wf.stderr()
        remount(d, "size=32M")
        end = small_commit(cluster)
        wait_until(lambda: holds_wal(d, cluster, start, end), f"WAL up to {format_lsn(end)}",
                   30, [wf])
        record_property("recovery", f"resumed {time.monotonic() - paused_at:.1f} s after the "
                                    "pause began")
        assert "there is space again: receiving resumed" in wf.stderr()
        assert replication_rows(cluster)["walfast"]["pid"] == pid
        assert wf.interrupt() == 0
    err = wf.stderr()
    assert "Traceback" not in err and "[Errno" not in err
    if limit == "full":
        assert "could not preallocate write-ahead log file" in err
        assert "No space left on device; receiving paused" in err
    else:
        assert "would leave less free space than --min-free" in err


def test_read_only_file_system_is_retried(pg_cluster, procs, tmp_path, record_property):
    """The directory turns read-only (a read-only file system is mounted
    over it: a mounted file system with files open for writing cannot be
    remounted read-only, and the kernel's own remount after an I/O error
    cannot be caused on purpose): said as such, never "Permission denied",
    retried every 5 s as pg_receivewal does (under -n: exit 1); once it is
    writable again, receiving goes on and nothing is missing."""
    cluster = pg_cluster
    seg = cluster.wal_segment_size
    cluster.execute("SELECT pg_create_physical_replication_slot('rofs', true)")
    (d,) = make_dirs(tmp_path, "wal")
    wf = procs.walfast("-D", str(d), "-d", cluster.conninfo(), "-S", "rofs", "-v")
    pid = wait_streaming(cluster, ["walfast"], [wf])["walfast"]["pid"]
    start, _ = wf.start_position()
    if os.geteuid() != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("mounting a tmpfs needs root; under CI that is a failure")
        pytest.skip("needs root to mount a tmpfs")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1M", "tmpfs", str(d)], check=True,
                   capture_output=True)
    try:
        cluster.execute(f"SELECT pg_terminate_backend({pid})")    # a reconnect meets it
        wait_until(lambda: "Read-only file system" in wf.stderr(), "the error", 30, [wf])
        wait_until(lambda: wf.stderr().count("disconnected; waiting 5 seconds") >= 2,
                   "a retry", 30, [wf])
        once = procs.walfast("-D", str(d), "-d", cluster.conninfo(), "-n", name="walfast-n")
        assert once.wait(30) == 1
        assert "Read-only file system" in once.stderr()
        assert "Permission denied" not in once.stderr()
    finally:
        subprocess.run(["umount", str(d)], capture_output=True)
        writable = time.monotonic()
    cluster.generate_wal(2 * seg)
    end = small_commit(cluster)
    wait_until(lambda: holds_wal(d, cluster, start, end), f"WAL up to {format_lsn(end)}",
               40, [wf])
    record_property("recovery", f"all WAL received {time.monotonic() - writable:.1f} s after "
                                "the directory was writable again")
    assert wf.interrupt() == 0
    err = wf.stderr()
    assert "Traceback" not in err and "[Errno" not in err and "Permission denied" not in err


# --------------------------------------------------------------------------- #
# write permission taken away (EACCES)
# --------------------------------------------------------------------------- #

def without_permission_bypass(argv: list[str]) -> list[str]:
    """*argv* run so that file permissions apply to it.  Root passes every
    permission check through two capabilities, so under root the command
    runs without them (still as root, not as another user, who may not
    reach the suite's interpreter: a pyenv under /root)."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--inh-caps=-all", "--bounding-set=-dac_override,-dac_read_search",
            "--", *argv]


def reported_flushed(cluster, slot: str, d) -> int:
    """The furthest flush position walfast reported: to the server (the
    slot's restart_lsn) or in its progress state."""
    (lsn,), = cluster.execute(
        "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    state = read_progress(d, check_running=False)
    return max(parse_lsn(lsn) if lsn else 0, state.flushed_lsn)


@pytest.mark.parametrize("denied", ["directory", "partial"])
def test_permission_denied_is_retried(pg_cluster, procs, tmp_path, record_property, denied):
    """Write permission is taken away while streaming: from the directory
    (the full segment cannot be renamed) or from the open .partial
    (reopening it after a reconnect fails).  Said naming the file, retried
    every 5 s as pg_receivewal does; the .partial is kept, and nothing past
    the WAL it holds is ever reported flushed.  Once permission is back,
    receiving goes on by itself and the directory is byte-identical to
    pg_wal."""
    cluster = pg_cluster
    seg = cluster.wal_segment_size
    cluster.execute("SELECT pg_create_physical_replication_slot('noperm', true)")
    (d,) = make_dirs(tmp_path, "wal")
    wf = procs.program("walfast", without_permission_bypass(walfast_argv(
        "-D", str(d), "-d", cluster.conninfo(), "-S", "noperm", "-v")))
    pid = wait_streaming(cluster, ["walfast"], [wf])["walfast"]["pid"]
    start, _ = wf.start_position()
    # Caught up first: a receiver still catching up renames its .partial
    # before the fault could meet it.
    caught_up = small_commit(cluster)
    wait_until(lambda: holds_wal(d, cluster, start, caught_up), "the receiver to catch up",
               60, [wf])
    # The open .partial, write permission taken away (it may be completed
    # and renamed under our feet if the server writes WAL meanwhile: then
    # the next one).
    deadline = time.monotonic() + 10
    while True:
        names = partial_files(d)
        if len(names) == 1:
            (partial,) = names
            target = d if denied == "directory" else d / partial
            try:
                mode = target.stat().st_mode & 0o777
                target.chmod(mode & ~0o222)
                break
            except FileNotFoundError:
                pass
        assert time.monotonic() < deadline, f"no single .partial in {d}: {names}"
        time.sleep(0.05)
    try:
        if denied == "directory":
            cluster.generate_wal(2 * seg)       # the open segment fills up
        else:
            cluster.execute(f"SELECT pg_terminate_backend({pid})")    # a reconnect meets it
        denials: list[float] = []               # when each attempt was denied

        def three_denials() -> bool:
            n = wf.stderr().count("Permission denied")
            denials.extend([time.monotonic()] * (n - len(denials)))
            return n >= 3
        wait_until(three_denials, "three attempts denied", 40, [wf])
        assert (d / partial).stat().st_size == seg
        flushed = reported_flushed(cluster, "noperm", d)
        assert holds_wal(d, cluster, start, flushed), \
            f"{format_lsn(flushed)} reported flushed: {mismatch(d, cluster, start, flushed)}"
    finally:
        target.chmod(mode)
    restored = time.monotonic()
    cluster.generate_wal(2 * seg)           # past the end of the .partial's segment
    end = small_commit(cluster)
    wait_until(lambda: holds_wal(d, cluster, start, end), f"WAL up to {format_lsn(end)}",
               30, [wf])
    recovered = time.monotonic() - restored
    gaps = [round(b - a, 1) for a, b in zip(denials, denials[1:])]
    record_property("recovery", f"streaming again {recovered:.1f} s after permission was "
                    f"back (attempts denied {gaps} s apart)")
    assert all(RECONNECT_SLEEP - 0.5 <= g <= RECONNECT_SLEEP + 3 for g in gaps), gaps
    assert recovered <= RECONNECT_SLEEP + 5, f"streaming again only after {recovered:.1f} s"
    assert wf.interrupt() == 0
    assert partial[:24] in assert_completed_like_pg_wal(d, cluster)
    flushed = reported_flushed(cluster, "noperm", d)
    assert holds_wal(d, cluster, start, flushed), mismatch(d, cluster, start, flushed)
    err = wf.stderr()
    assert "Traceback" not in err and "[Errno" not in err
    verb = "rename" if denied == "directory" else "open"
    assert lines(wf).count(f'PROG: error: could not {verb} write-ahead log file '
                           f'"{d / partial}": Permission denied') >= 3, err
    assert err.count("walfast: disconnected; waiting 5 seconds to try again") >= 3


def test_permission_denied_with_no_loop_exits_1(pg_cluster, bindir, procs, tmp_path):
    """Under -n a permission error ends walfast with exit 1 and one line
    that names the file, as it ends pg_receivewal (side by side; each words
    the failed step its own way): first the directory (the full segment
    cannot be renamed), then the .partial left behind (it cannot be
    reopened)."""
    cluster = pg_cluster
    seg = cluster.wal_segment_size
    wf_dir, pg_dir = make_dirs(tmp_path, "walfast", "pg")
    mode = wf_dir.stat().st_mode & 0o777

    def run_both() -> tuple[Receiver, Receiver]:
        wf = procs.program("walfast", without_permission_bypass(walfast_argv(
            "-D", str(wf_dir), "-d", cluster.conninfo(), "-n", "-v")))
        pg = procs.program("pg_receivewal", without_permission_bypass(pg_receivewal_argv(
            bindir, "-D", str(pg_dir), "-d", cluster.conninfo(), "-n", "-v")),
            env=tool_env(bindir, clean_env()))
        return wf, pg

    def denied(wf: Receiver, pg: Receiver, partial: str) -> str:
        """walfast's error line, once both said their errors the same way."""
        for r in (wf, pg):
            *errors, last = lines(r)[1:]
            assert last == "PROG: error: disconnected"
            assert errors and all(partial in e and e.endswith(": Permission denied")
                                  for e in errors), lines(r)
        assert "Traceback" not in wf.stderr() and "[Errno" not in wf.stderr()
        (error,) = lines(wf)[1:-1]
        return error

    wf, pg = run_both()
    wait_streaming(cluster, ["walfast", "pg_receivewal"], [wf, pg])
    start, _ = wf.start_position()
    for d in (wf_dir, pg_dir):
        d.chmod(0o500)
    try:
        cluster.generate_wal(2 * seg)
        assert wf.wait(30) == pg.wait(30) == 1
    finally:
        for d in (wf_dir, pg_dir):
            d.chmod(mode)
    (partial,) = partial_files(wf_dir)
    assert partial_files(pg_dir) == [partial]
    assert denied(wf, pg, partial) == (
        f'PROG: error: could not rename write-ahead log file "{wf_dir / partial}": '
        "Permission denied")
    # The full segment was synced before the rename failed: it is all there.
    segment_end = (segno_of(partial, cluster) + 1) * seg
    assert holds_wal(wf_dir, cluster, start, segment_end)

    for d in (wf_dir, pg_dir):
        (d / partial).chmod(0o400)
    wf, pg = run_both()
    assert wf.wait(30) == pg.wait(30) == 1
    assert denied(wf, pg, partial) == (
        f'PROG: error: could not open write-ahead log file "{wf_dir / partial}": '
        "Permission denied")
    assert holds_wal(wf_dir, cluster, start, segment_end)
