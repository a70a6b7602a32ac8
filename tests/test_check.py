"""``walfast check`` (walfast/monitor/check.py): against a real server and
receiver for what the server and the receiver say, and the evaluation
functions on their own for what a PostgreSQL 15 server cannot show
(PostgreSQL 18's idle slot timeout and invalidation) and for the edges."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers.receivers import clean_env, run_cli, small_commit, wait_streaming, wait_until
from walfast import majors
from walfast.cluster import free_port
from walfast.monitor import check as C
from walfast.monitor import progress as P
from walfast.waldir.identity import DirectoryIdentity, write_identity

SLOT = "chk"
ITEMS = ["connection", "replication role", "max_wal_senders", "slot", "disk", "directory",
         "receiver", "behind"]


#: For the tests that expect every item but one to be OK: the default disk
#: warning (below 5 % free) is about the test machine, not the test.
ANY_DISK = ("--warning-free", "0")


def run_check(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli([sys.executable, "-m", "walfast.cli", "check", *args])


def items(out: str) -> dict[str, tuple[str, str]]:
    """``{name: (status, detail)}`` of a human report; checks its shape."""
    lines = out.rstrip("\n").split("\n")
    assert lines[0].startswith('walfast check "') and lines[0].endswith('":')
    assert lines[-1].startswith("overall: ")
    found = {}
    for line in lines[1:-1]:
        assert line.startswith("\t"), line
        name, _, rest = line[1:].partition(": ")
        status, _, detail = rest.partition(" (")
        assert status in ("OK", "WARNING", "CRITICAL") and detail.endswith(")"), line
        found[name] = (status, detail[:-1])
    assert list(found) == ITEMS
    return found


def assert_clean(res: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in res.stdout + res.stderr, res.stderr
    assert res.stderr == "", res.stderr


@pytest.fixture
def receiver(pg_cluster, tmp_path, procs):
    """A receiver streaming with slot chk into tmp_path/wal."""
    pg_cluster.execute(f"SELECT pg_create_physical_replication_slot('{SLOT}', true)")
    out = tmp_path / "wal"
    out.mkdir()
    r = procs.walfast("-D", str(out), "-d", pg_cluster.conninfo(), "-S", SLOT, "-n")
    wait_streaming(pg_cluster, ["walfast"], [r])
    wait_until(lambda: P.state_path(out).exists() and P.read_progress(out).state == "streaming",
               "the receiver streaming", procs=[r])
    return pg_cluster, out, r


# --------------------------------------------------------------------------- #
# against a real server
# --------------------------------------------------------------------------- #

def test_healthy_receiver_with_slot_all_ok(receiver):
    cluster, out, r = receiver
    res = run_check("-D", str(out), "-d", cluster.conninfo(), "-S", SLOT, *ANY_DISK)
    assert_clean(res)
    found = items(res.stdout)
    assert res.returncode == 0, res.stdout
    assert all(status == "OK" for status, _ in found.values()), res.stdout
    assert res.stdout.endswith("overall: OK\n")
    assert f"pid {r.pid}" in found["receiver"][1]
    assert "our receiver" in found["slot"][1]
    # Without -S the receiver's own slot is checked.
    res = run_check("-D", str(out), "-d", cluster.conninfo(), *ANY_DISK)
    assert res.returncode == 0, res.stdout
    assert f'"{SLOT}" (the receiver\'s) physical' in items(res.stdout)["slot"][1]


def test_json_shape(receiver):
    cluster, out, r = receiver
    res = run_check("-D", str(out), "-d", cluster.conninfo(), "-S", SLOT, "--json", *ANY_DISK)
    assert_clean(res)
    doc = json.loads(res.stdout)
    assert res.returncode == 0 == doc["exit_code"]
    assert doc["status"] == "OK" and doc["directory"] == str(out)
    assert [i["name"] for i in doc["items"]] == ITEMS
    for item in doc["items"]:
        assert set(item) == {"name", "status", "checked", "detail", "values"}
        assert item["status"] == "OK" and item["checked"] is True
    values = {i["name"]: i["values"] for i in doc["items"]}
    assert values["connection"]["system_identifier"] == str(cluster.system_identifier())
    assert values["connection"]["segment_size"] == 1 << 20
    assert values["receiver"]["pid"] == r.pid and values["receiver"]["running"] is True
    assert values["slot"]["active"] is True and values["slot"]["wal_status"] == "reserved"
    assert values["max_wal_senders"]["max_wal_senders"] == 10
    assert values["max_wal_senders"]["receiver_connected"] is True
    assert values["disk"]["free_bytes"] > 0
    assert values["behind"]["flushed_behind_bytes"] >= 0


def test_no_receiver_is_critical_and_json_marks_unchecked(pg_cluster, tmp_path):
    pg_cluster.execute(f"SELECT pg_create_physical_replication_slot('{SLOT}', true)")
    res = run_check("-D", str(tmp_path), "-d", pg_cluster.conninfo(), "-S", SLOT)
    assert_clean(res)
    found = items(res.stdout)
    assert res.returncode == 2
    status, detail = found["receiver"]
    assert status == "CRITICAL" and f'start walfast receive -D "{tmp_path}"' in detail
    assert found["behind"] == ("WARNING", "not checked: no progress state in the directory")
    assert found["slot"][0] == "OK" and "inactive" in found["slot"][1]
    assert res.stdout.endswith("overall: CRITICAL (receiver, behind)\n")
    doc = json.loads(run_check("-D", str(tmp_path), "-d", pg_cluster.conninfo(), "-S", SLOT,
                               "--json").stdout)
    assert doc["status"] == "CRITICAL" and doc["exit_code"] == 2
    behind = next(i for i in doc["items"] if i["name"] == "behind")
    assert behind["checked"] is False


def test_missing_slot_names_create_slot(pg_cluster, tmp_path):
    res = run_check("-D", str(tmp_path), "-h", "127.0.0.1", "-p", str(pg_cluster.port),
                    "-U", "postgres", "-S", "nope")
    assert_clean(res)
    assert res.returncode == 2
    status, detail = items(res.stdout)["slot"]
    assert status == "CRITICAL"
    assert (f'"nope" does not exist: create it with "walfast receive --create-slot -S nope '
            f'-h 127.0.0.1 -p {pg_cluster.port} -U postgres"') in detail


def test_slot_held_by_another_connection_names_its_pid(pg_cluster, tmp_path):
    from walfast.lsn import parse_lsn
    from walfast.replication.commands import start_replication
    from walfast.replication.connection import connect

    (restart,), = pg_cluster.execute(
        f"SELECT lsn::text FROM pg_create_physical_replication_slot('{SLOT}', true)")
    other = connect(pg_cluster.conninfo(), application_name="intruder")
    try:
        lsn = parse_lsn(restart)
        assert start_replication(other, slot=SLOT, start_lsn=lsn - lsn % (1 << 20),
                                 timeline=1) is None
        pid = other.info.backend_pid
        res = run_check("-D", str(tmp_path), "-d", pg_cluster.conninfo(), "-S", SLOT)
        assert_clean(res)
        status, detail = items(res.stdout)["slot"]
        assert status == "WARNING"
        assert f"active for PID {pid} (application_name \"intruder\"" in detail
        assert "another receiver holds it, or a half-open connection" in detail
        assert f"pg_terminate_backend({pid})" in detail
    finally:
        other.close()


def test_max_wal_senders_headroom(pg_cluster, tmp_path):
    """9 of the 10 walsenders taken: the check's own connection gets the last
    one (and leaves itself out of the count): WARNING, one left for the
    receiver.  All 10 taken: the replication connection is refused, the SQL
    items still tell why."""
    from walfast.replication.connection import connect

    conns = []
    try:
        for _ in range(9):
            conns.append(connect(pg_cluster.conninfo()))
        res = run_check("-D", str(tmp_path), "-d", pg_cluster.conninfo())
        found = items(res.stdout)
        assert found["connection"][0] == "OK"
        assert found["max_wal_senders"] == (
            "WARNING", "9 of 10 in use, only one free, for the receiver; raise "
                       "max_wal_senders (needs a restart) or stop a replication client")
        conns.append(connect(pg_cluster.conninfo()))
        res = run_check("-D", str(tmp_path), "-d", pg_cluster.conninfo())
        assert_clean(res)
        found = items(res.stdout)
        status, detail = found["connection"]
        assert status == "CRITICAL"
        assert "number of requested standby connections exceeds" in detail   # 18 quotes the name
        assert "raise max_wal_senders" in detail
        assert found["max_wal_senders"][0] == "CRITICAL"
        assert found["max_wal_senders"][1].startswith(
            "10 of 10 in use, none free: the receiver cannot connect")
    finally:
        for c in conns:
            c.close()


def test_directory_of_another_cluster_is_critical(pg_cluster, tmp_path):
    write_identity(tmp_path, DirectoryIdentity(12345, 16 << 20, 8192), sync=False)
    res = run_check("-D", str(tmp_path), "-d", pg_cluster.conninfo())
    assert_clean(res)
    status, detail = items(res.stdout)["directory"]
    assert status == "CRITICAL" and res.returncode == 2
    sysid = pg_cluster.system_identifier()
    assert "holds WAL of another cluster or segment size" in detail
    assert "identity\" records system identifier 12345, WAL segment size 16 MB" in detail
    assert f"the server has system identifier {sysid}, WAL segment size 1 MB" in detail


def test_directory_without_identity_checked_through_its_wal(pg_cluster, tmp_path):
    """A directory pg_receivewal wrote (WAL, no .walfast/identity): its
    newest segment's page header is compared, as walfast receive does."""
    pg_cluster.switch_wal()
    segment = pg_cluster.completed_segments()[-1]
    data = bytearray(segment.read_bytes())
    (tmp_path / segment.name).write_bytes(data)
    res = run_check("-D", str(tmp_path), "-d", pg_cluster.conninfo())
    status, detail = items(res.stdout)["directory"]
    assert status == "OK" and detail.startswith("writable, its WAL is the server's"), detail
    data[24:32] = (12345).to_bytes(8, sys.byteorder)        # xlp_sysid: another cluster
    (tmp_path / segment.name).write_bytes(data)
    res = run_check("-D", str(tmp_path), "-d", pg_cluster.conninfo())
    status, detail = items(res.stdout)["directory"]
    assert status == "CRITICAL", detail
    assert (f'"{tmp_path / segment.name}" (its first page header) has system identifier '
            f"12345") in detail


def test_nothing_listening(tmp_path):
    port = free_port()
    res = run_check("-D", str(tmp_path), "-d", f"host=127.0.0.1 port={port}", "-S", SLOT)
    assert_clean(res)
    found = items(res.stdout)
    assert res.returncode == 2
    status, detail = found["connection"]
    assert status == "CRITICAL"
    assert f'connection to server at "127.0.0.1", port {port} failed: Connection refused' \
        in detail
    assert "check -d/-h/-p/-U" in detail
    for name in ("replication role", "max_wal_senders", "slot"):
        assert found[name] == ("WARNING", "not checked: the server cannot be reached "
                                          "(see connection)")
    assert found["behind"][1].startswith("not checked")
    assert found["directory"][0] == "WARNING" and "no connection" in found["directory"][1]


def test_role_without_replication_is_critical(pg_cluster, tmp_path):
    pg_cluster.execute("DROP ROLE IF EXISTS walfast_norep")
    pg_cluster.execute("CREATE ROLE walfast_norep LOGIN")
    try:
        # No dbname: libpq's default (the user's name) does not exist, so the SQL
        # connection falls back to postgres.
        res = run_check("-D", str(tmp_path), "-h", "127.0.0.1", "-p", str(pg_cluster.port),
                        "-U", "walfast_norep")
        assert_clean(res)
        found = items(res.stdout)
        assert res.returncode == 2
        status, detail = found["connection"]
        assert status == "CRITICAL" and "ALTER ROLE name REPLICATION" in detail
        assert found["replication role"] == (
            "CRITICAL", 'role walfast_norep has neither REPLICATION nor SUPERUSER: run '
                        'ALTER ROLE "walfast_norep" REPLICATION as a superuser')
        assert found["max_wal_senders"][0] == "OK"       # the SQL items still run
    finally:
        pg_cluster.execute("DROP ROLE walfast_norep")


def test_sql_refused_items_not_checked(receiver):
    """Only the replication connection works (here: the conninfo's dbname
    does not exist; in real life pg_hba.conf often allows only replication):
    the SQL items are WARNING "not checked", the role is implied."""
    cluster, out, r = receiver
    res = run_check("-D", str(out), "-d", cluster.conninfo(dbname="no_such_db"), "-S", SLOT,
                    *ANY_DISK)
    assert_clean(res)
    found = items(res.stdout)
    assert res.returncode == 1, res.stdout
    why = ('could not connect for SQL (connection to server at "127.0.0.1", port '
           f'{cluster.port} failed: FATAL: database "no_such_db" does not exist)')
    assert found["max_wal_senders"] == ("WARNING", f"not checked: {why}")
    assert found["slot"] == ("WARNING", f"not checked: {why}")
    assert found["replication role"] == (
        "OK", f"postgres may replicate: the replication connection was accepted ({why})")
    assert all(found[n][0] == "OK" for n in ("connection", "directory", "receiver", "behind"))


def test_silent_receiver_warns(receiver):
    cluster, out, r = receiver
    (pid,), = cluster.execute(
        "SELECT pid FROM pg_stat_replication WHERE application_name = 'walfast'")
    os.kill(pid, signal.SIGSTOP)
    try:
        small_commit(cluster)           # WAL the stopped walsender cannot send
        last = P.read_progress(out).last_msg_receipt_time
        time.sleep(max(0.0, last + 1.2 - time.time()))
        res = run_check("-D", str(out), "-d", cluster.conninfo(), "-S", SLOT,
                        "--warning-silent", "1", "--critical-silent", "60", *ANY_DISK)
        assert_clean(res)
        found = items(res.stdout)
        status, detail = found["receiver"]
        assert status == "WARNING", res.stdout
        assert "(more than 1.0 s) while the server has more WAL" in detail
        assert "pg_stat_replication" in detail
        assert res.returncode == 1, res.stdout      # behind by one commit: OK
    finally:
        os.kill(pid, signal.SIGCONT)


def test_disk_thresholds(tmp_path):
    port = free_port()
    res = run_check("-D", str(tmp_path), "-d", f"host=127.0.0.1 port={port}",
                    "--warning-free", "100%")
    status, detail = items(res.stdout)["disk"]
    assert status == "WARNING" and "below the warning threshold" in detail
    res = run_check("-D", str(tmp_path), "-d", f"host=127.0.0.1 port={port}",
                    "--critical-free", "1000 TB", "--json")
    disk = next(i for i in json.loads(res.stdout)["items"] if i["name"] == "disk")
    assert disk["status"] == "CRITICAL" and disk["values"]["critical_bytes"] == 1000 << 40
    # Nothing tells the segment size here (no server, nothing received): the
    # largest a server can have is what must fit.
    assert "the next segment (its size is not known: up to 1024 MB) may not fit" \
        in disk["detail"]


def test_usage_errors_exit_1_without_traceback(tmp_path):
    for args, message in [
        ((), "the following arguments are required: -D/--directory"),
        (("-D", str(tmp_path), "--warning-free", "10XB"), 'invalid size "10XB"'),
        (("-D", str(tmp_path), "--warning-silent", "400"),
         "--warning-silent (400) must not exceed --critical-silent (300)"),
        (("-D", str(tmp_path), "-d", "host='unterminated"), "invalid connection string"),
    ]:
        res = run_check(*args)
        assert res.returncode == 1 and res.stdout == "", args
        assert message in res.stderr and "Traceback" not in res.stderr, res.stderr
        assert 'hint: Try "walfast check --help"' in res.stderr
    res = run_check("--help")
    assert res.returncode == 0 and "1  some item WARNING, or a usage error" in res.stdout


def test_importing_check_loads_no_psycopg():
    code = ("import sys, walfast.cli, walfast.monitor.check; "
            "print('psycopg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=clean_env(), check=True).stdout
    assert out.strip() == "False"


@pytest.mark.majors
def test_version_dependent_queries_run_on_this_server(pg_cluster):
    """The SQL of this server's major against the real server (the text of
    every major's is checked below; the majors run of ``make test`` runs
    this on each)."""
    version = pg_cluster.server_version_num()
    pg_cluster.execute(f"SELECT pg_create_physical_replication_slot('{SLOT}', true)")
    with pg_cluster.connect() as conn:
        row = conn.execute(C.slot_query(version), (SLOT,)).fetchone()
        idle = C.idle_timeout_query(version)
        if idle is not None:
            assert conn.execute(idle).fetchone() is not None
    slot = C._slot_row(row)
    assert slot.slot_type == "physical" and slot.active is False
    assert slot.restart_lsn is not None
    if not majors.facts(pg_cluster.major).slot_inactive_since:
        assert slot.inactive_since is None and slot.invalidation_reason is None


# --------------------------------------------------------------------------- #
# the evaluation functions
# --------------------------------------------------------------------------- #

SEG = 16 << 20
T = C.Thresholds()


@pytest.mark.parametrize("major", [majors.OLDEST_SERVER_MAJOR, *majors.TESTED_MAJORS,
                                   majors.NEWEST_TESTED_MAJOR + 1])
def test_version_gated_sql_text(major):
    """Each column and setting is asked for exactly on the majors that have
    it (walfast.majors), a major newer than the table included."""
    row = majors.facts(major)
    version = major * 10000 + 1
    query = C.slot_query(version)
    assert ("s.wal_status" in query) == ("s.safe_wal_size" in query) == row.slot_wal_status
    assert ("s.inactive_since" in query) == ("s.invalidation_reason" in query) \
        == row.slot_inactive_since
    idle = C.idle_timeout_query(version)
    assert (idle is not None) == row.idle_replication_slot_timeout
    assert idle is None or "idle_replication_slot_timeout" in idle


def _slot(**kw):
    base = dict(slot_name=SLOT, slot_type="physical", active=False, restart_lsn=0x3000000,
                wal_status="reserved")
    base.update(kw)
    return C.SlotRow(**base)


def _check_slot(row, idle_timeout=None, receiver=None, **kw):
    return C.check_slot(SLOT, C.SqlProbe(server_version=180000, slot=row,
                                         idle_timeout=idle_timeout),
                        receiver, SEG, T, **kw)


def test_slot_pg18_idle_timeout_and_invalidation():
    # Inactive past half of idle_replication_slot_timeout (1 h): WARNING.
    r = _check_slot(_slot(inactive_since="2026-01-01 00:00:00+00", inactive_seconds=2000.0),
                    idle_timeout=3600.0)
    assert r.status is C.Status.WARNING
    assert "past half of idle_replication_slot_timeout (3600 s)" in r.detail
    assert r.values["inactive_seconds"] == 2000.0
    # Not yet half, the timeout off (0), or an older server (None): OK.
    for seconds, timeout in ((1000.0, 3600.0), (99999.0, 0.0), (99999.0, None)):
        r = _check_slot(_slot(inactive_since="x", inactive_seconds=seconds),
                        idle_timeout=timeout)
        assert r.status is C.Status.OK, (seconds, timeout, r.detail)
    # Invalidated (18: idle_timeout; 17+: wal_removed...): CRITICAL.
    r = _check_slot(_slot(invalidation_reason="idle_timeout", inactive_seconds=9999.0,
                          wal_status="lost"), idle_timeout=3600.0)
    assert r.status is C.Status.CRITICAL
    assert "invalidated (idle_timeout)" in r.detail
    assert (f'drop it ("walfast receive --drop-slot -S {SLOT}"), create it again ("walfast '
            f'receive --create-slot -S {SLOT}")') in r.detail


def test_slot_wal_status_and_safe_wal_size():
    r = _check_slot(_slot(wal_status="lost"))
    assert r.status is C.Status.CRITICAL and "the archive has a gap" in r.detail
    r = _check_slot(_slot(wal_status="unreserved", safe_wal_size=-5))
    assert r.status is C.Status.WARNING and "wal_status unreserved" in r.detail
    r = _check_slot(_slot(wal_status="extended", safe_wal_size=3 * SEG))
    assert r.status is C.Status.WARNING and "safe_wal_size 48 MB is below 64 MB" in r.detail
    r = _check_slot(_slot(wal_status="extended", safe_wal_size=5 * SEG))
    assert r.status is C.Status.OK and "safe_wal_size 80 MB" in r.detail
    r = _check_slot(_slot(restart_lsn=None, wal_status=None))
    assert r.status is C.Status.WARNING and "reserves no WAL yet" in r.detail
    r = _check_slot(_slot(slot_type="logical"))
    assert r.status is C.Status.CRITICAL and "is a logical slot" in r.detail


def _snapshot(tmp_path, **kw):
    state = P.create_state(tmp_path, sync=False)
    try:
        base = P.parse_progress(state.snapshot())
    finally:
        state.close()
    now = time.time()
    fields = dict(running=True, state="streaming", pid=4242, sync=True, slot_name=SLOT,
                  segment_size=SEG, written_lsn=10 * SEG, flushed_lsn=10 * SEG,
                  last_msg_receipt_time=now - 1, start_time=now - 1000)
    fields.update(kw)
    return dataclasses.replace(base, **fields)


def test_slot_held_by_whom(tmp_path):
    ours = _snapshot(tmp_path)
    r = _check_slot(_slot(active=True, active_pid=77), receiver=ours)
    assert r.status is C.Status.OK and "our receiver" in r.detail
    # The receiver is reconnecting while the slot is still held: a half-open
    # connection, or another receiver.
    r = _check_slot(_slot(active=True, active_pid=77),
                    receiver=dataclasses.replace(ours, state="waiting"))
    assert r.status is C.Status.WARNING and "active for PID 77" in r.detail
    r = _check_slot(_slot(), receiver=dataclasses.replace(ours, slot_name="other"))
    assert r.status is C.Status.WARNING and 'streams with slot "other"' in r.detail


def test_receiver_silence_counts_only_while_the_server_has_more(tmp_path):
    now = time.time()
    quiet = _snapshot(tmp_path, last_msg_receipt_time=now - 400)
    idle = C.check_receiver(quiet, None, 10 * SEG, T, tmp_path, now=now)
    assert idle.status is C.Status.OK and "nothing to receive" in idle.detail
    crit = C.check_receiver(quiet, None, 10 * SEG + 100, T, tmp_path, now=now)
    assert crit.status is C.Status.CRITICAL and "more than 300 s" in crit.detail
    warn = C.check_receiver(dataclasses.replace(quiet, last_msg_receipt_time=now - 90), None,
                            10 * SEG + 100, T, tmp_path, now=now)
    assert warn.status is C.Status.WARNING
    stopped = C.check_receiver(dataclasses.replace(quiet, running=False), None, None, T,
                               tmp_path, now=now)
    assert stopped.status is C.Status.CRITICAL and "not running (last pid 4242" in stopped.detail
    waiting = C.check_receiver(dataclasses.replace(quiet, state="waiting"), None, None, T,
                               tmp_path, now=now)
    assert waiting.status is C.Status.WARNING and "retrying" in waiting.detail


def test_behind_thresholds_relative_to_segments(tmp_path):
    s = _snapshot(tmp_path, written_lsn=100 * SEG, flushed_lsn=99 * SEG)
    assert C.check_behind(s, 100 * SEG, SEG, T).status is C.Status.OK
    r = C.check_behind(s, 102 * SEG, SEG, T)
    assert r.status is C.Status.WARNING and "flushed 48 MB (3 segments) behind" in r.detail
    assert C.check_behind(s, 110 * SEG, SEG, T).status is C.Status.CRITICAL
    nosync = dataclasses.replace(s, sync=False, flushed_lsn=0)
    r = C.check_behind(nosync, 100 * SEG + 10, SEG, T)
    assert r.status is C.Status.OK and "--no-sync" in r.detail
    r = C.check_behind(s, 100 * SEG, SEG, C.Thresholds(warning_behind=1, critical_behind=SEG - 1))
    assert r.status is C.Status.CRITICAL


def test_wal_senders_headroom():
    def status(max_senders, in_use, connected):
        sql = C.SqlProbe(senders=C.SendersRow(max_senders, in_use))
        return C.check_wal_senders(sql, connected).status

    assert status(10, 10, False) is C.Status.CRITICAL
    assert status(10, 9, False) is C.Status.WARNING
    assert status(10, 8, False) is C.Status.OK
    assert status(10, 10, True) is C.Status.WARNING
    assert status(10, 9, True) is C.Status.OK


def test_disk_defaults():
    gb = 1 << 30
    assert C.check_disk(C.DiskUsage(100 * gb, 1000 * gb), SEG, T).status is C.Status.OK
    assert C.check_disk(C.DiskUsage(40 * gb, 1000 * gb), SEG, T).status is C.Status.WARNING
    # At least 10 segments on a small file system.
    assert C.check_disk(C.DiskUsage(9 * SEG, 2 * gb), SEG, T).status is C.Status.WARNING
    assert C.check_disk(C.DiskUsage(SEG, 2 * gb), SEG, T).status is C.Status.CRITICAL
    r = C.check_disk(C.DiskUsage(SEG, 2 * gb), SEG, T)
    assert r.detail.startswith("16 MB free of 2048 MB (1 %), below 17 MB")


def test_sizes():
    assert C.parse_size("10GB") == 10 << 30
    assert C.parse_size("512 mb") == 512 << 20
    assert C.parse_size("1024kB") == 1 << 20
    assert C.parse_size("4096") == 4096
    assert C.SizeLimit.parse("5%") == C.SizeLimit(5.0, percent=True)
    for bad in ("", "10XB", "-1GB", "1e3"):
        with pytest.raises(ValueError):
            C.parse_size(bad)
    with pytest.raises(ValueError):
        C.SizeLimit.parse("101%")
