"""Tests of the throwaway-PostgreSQL clusters (walfast.cluster) themselves."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import psycopg
import pytest

from walfast.cluster import Cluster
from walfast.lsn import parse_lsn

XLOG_BLCKSZ = 8192
XLP_LONG_HEADER = 0x0002
# XLOG_PAGE_MAGIC per server major version (src/include/access/xlog_internal.h)
XLOG_PAGE_MAGIC = {12: 0xD101, 13: 0xD106, 14: 0xD10D, 15: 0xD110,
                   16: 0xD113, 17: 0xD116}


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


def test_completed_segments_have_valid_headers(pg_cluster):
    segsize = pg_cluster.wal_segment_size
    sysid = pg_cluster.system_identifier()
    major = pg_cluster.server_version_num() // 10000
    if major not in XLOG_PAGE_MAGIC:
        pytest.skip(f"XLOG_PAGE_MAGIC of PostgreSQL {major} not known here")
    magic = XLOG_PAGE_MAGIC[major]

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
        assert xlp_magic == magic, path.name
        assert xlp_info & XLP_LONG_HEADER
        assert xlp_tli == tli == 1
        assert xlp_pageaddr == segno * segsize
        assert xlp_sysid == sysid
        assert xlp_seg_size == segsize
        assert xlp_xlog_blcksz == XLOG_BLCKSZ


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
