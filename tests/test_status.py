"""Standby status update ('r') encoding and the wire clock; ``walfast
status`` and ``walfast wait`` (the receiver's progress, walfast/status.py)."""

import dataclasses
import io
import json
import struct
import subprocess
import sys
import time

import pytest

from helpers.receivers import clean_env, run_cli, wait_streaming, wait_until
from walfast import encode_status_update, pg_time_now
from walfast.monitor import progress as P
from walfast.lsn import format_lsn, parse_lsn
from walfast.monitor.extras import CatchUpBar

PG_EPOCH = 946684800  # 2000-01-01 00:00:00 UTC in Unix seconds


def test_status_update_layout():
    msg = encode_status_update(0x1_0300_0000, 0x1_0200_0000, 0, 123456789, False)
    assert len(msg) == 34
    assert struct.unpack(">cQQQqB", msg) == (b"r", 0x1_0300_0000, 0x1_0200_0000, 0, 123456789, 0)
    msg = encode_status_update((1 << 64) - 1, 0, 5, -1, reply_requested=True)
    assert struct.unpack(">cQQQqB", msg) == (b"r", (1 << 64) - 1, 0, 5, -1, 1)


def test_pg_time_now_is_microseconds_since_2000():
    before = int((time.time() - PG_EPOCH) * 1_000_000)
    now = pg_time_now()
    after = int((time.time() - PG_EPOCH) * 1_000_000)
    assert before - 1000 <= now <= after + 1000


# --------------------------------------------------------------------------- #
# walfast status / walfast wait (walfast/status.py) against a real receiver
# --------------------------------------------------------------------------- #

SECRET = "Sekr1tPassw0rd"


def walfast_cmd(*args):
    return [sys.executable, "-m", "walfast.cli", *args]


def _flushed_commit(cluster) -> int:
    with cluster.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS waited (x int)")
        conn.execute("INSERT INTO waited VALUES (1)")
        return parse_lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])


@pytest.fixture
def receiver(pg_cluster, tmp_path, procs):
    """A --synchronous receiver with a slot and a password in its conninfo
    (trust authentication: the server never asks for it)."""
    pg_cluster.execute("SELECT pg_create_physical_replication_slot('st', true)")
    out = tmp_path / "wal"
    out.mkdir()
    r = procs.walfast("-D", str(out), "-d", pg_cluster.conninfo(password=SECRET), "-S", "st",
                      "--synchronous", "-n", "-v")
    wait_streaming(pg_cluster, ["walfast"], [r])
    wait_until(lambda: P.state_path(out).exists(), "the progress state", procs=[r])
    return pg_cluster, out, r


def test_status_human_and_json(receiver):
    cluster, out, r = receiver
    lsn = _flushed_commit(cluster)
    wait_until(lambda: P.read_progress(out).flushed_lsn >= lsn, "commit flushed", procs=[r])
    human = run_cli(walfast_cmd("status", str(out)))
    assert human.returncode == 0, human.stderr
    assert f'walfast receiver in "{out}": streaming (pid {r.pid})' in human.stdout
    assert "slot                st" in human.stdout
    assert f"sender              127.0.0.1:{cluster.port}" in human.stdout
    assert str(cluster.system_identifier()) in human.stdout
    js = run_cli(walfast_cmd("status", "--json", str(out)))
    assert js.returncode == 0, js.stderr
    doc = json.loads(js.stdout)
    assert doc["status"] == "streaming" and doc["pid"] == r.pid and doc["sync"] is True
    assert doc["flushed_lsn"] >= lsn
    assert doc["flushed_lsn_text"] == format_lsn(doc["flushed_lsn"])
    assert doc["lag_bytes"] == max(0, doc["latest_end_lsn"] - doc["written_lsn"])
    assert r.interrupt() == 0
    after = run_cli(walfast_cmd("status", str(out)))
    assert f'"{out}": not running (pid {r.pid})' in after.stdout
    # No secret anywhere: state file, status, logs.
    for text in (P.state_path(out).read_bytes().decode("latin-1"), human.stdout,
                 js.stdout, after.stdout, r.stderr()):
        assert SECRET not in text


def test_wait_reached_timeout_and_not_running(receiver):
    cluster, out, r = receiver
    lsn = _flushed_commit(cluster)
    done = run_cli(walfast_cmd("wait", str(out), "--lsn", format_lsn(lsn), "--timeout", "30"))
    assert done.returncode == 0, done.stderr
    assert P.read_progress(out).flushed_lsn >= lsn        # it returned for a flushed LSN
    future = P.read_progress(out).written_lsn + (1 << 30)
    timed = run_cli(walfast_cmd("wait", str(out), "--lsn", format_lsn(future), "--timeout",
                                "0.5"))
    assert timed.returncode == 2
    assert f"timed out after 0.5 s waiting for {format_lsn(future)}" in timed.stderr
    # A waiter is woken when the position gets flushed later.
    waiter = subprocess.Popen(
        walfast_cmd("wait", str(out), "--lsn", format_lsn(lsn + 100_000), "--timeout", "60"),
        env=clean_env(), stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    assert waiter.poll() is None
    cluster.generate_wal(200_000)
    _, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    assert r.interrupt() == 0
    gone = run_cli(walfast_cmd("wait", str(out), "--lsn", format_lsn(future)))
    assert gone.returncode == 3 and "no walfast receiver is running" in gone.stderr
    # Already flushed: reached even though the receiver is gone.
    assert run_cli(walfast_cmd("wait", str(out), "--lsn", format_lsn(lsn))).returncode == 0


def test_wait_errors(tmp_path, pg_cluster, procs):
    res = run_cli(walfast_cmd("wait", str(tmp_path), "--lsn", "0/1"))
    assert res.returncode == 1 and "no walfast progress state in" in res.stderr
    res = run_cli(walfast_cmd("wait", str(tmp_path), "--lsn", "nope"))
    assert res.returncode == 1 and 'invalid LSN "nope"' in res.stderr
    res = run_cli(walfast_cmd("status", str(tmp_path)))
    assert res.returncode == 1 and "no walfast progress state in" in res.stderr
    assert "Traceback" not in res.stderr
    r = procs.walfast("-D", str(tmp_path), "-d", pg_cluster.conninfo(), "--no-sync", "-n")
    wait_until(lambda: P.state_path(tmp_path).exists(), "the progress state", procs=[r])
    res = run_cli(walfast_cmd("wait", str(tmp_path), "--lsn", "0/1", "--timeout", "5"))
    assert res.returncode == 1 and "runs with --no-sync" in res.stderr


def test_catch_up_bar_shows_bytes_behind_then_closes(tmp_path):
    s = P.create_state(tmp_path)
    s.update(state=P.STREAMING, segment_size=1 << 20)
    base = P.parse_progress(s.snapshot())
    s.close()
    buf = io.StringIO()
    bar = CatchUpBar(tmp_path, file=buf)
    behind = dataclasses.replace(base, running=True, written_lsn=1 << 20,
                                 latest_end_lsn=9 << 20)
    bar.update(behind)
    bar.update(dataclasses.replace(behind, written_lsn=5 << 20))
    assert bar._bar is not None and bar._bar.n == 4 << 20 and bar._bar.total == 8 << 20
    bar._bar.refresh()
    assert "4096 kB behind" in buf.getvalue() and "catching up" in buf.getvalue()
    bar.update(dataclasses.replace(behind, written_lsn=9 << 20))
    assert bar._bar is None                                # caught up: gone
    # Less than a segment behind: no bar at all.
    bar.update(dataclasses.replace(behind, written_lsn=(9 << 20) - 1000))
    assert bar._bar is None
