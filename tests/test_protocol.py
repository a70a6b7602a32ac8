"""walfast.protocol against a real PostgreSQL server (plus unit tests of the
pure helpers).

Most tests share one 1 MiB-segment cluster (module scope, built from the same
harness as the ``pg_cluster`` fixture); tests that need another segment size
or change the server's timeline get their own via ``pg_cluster_factory``.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import psycopg
import psycopg.errors
import pytest

from helpers.fakewalsender import (
    Column, ResultSet, Scenario, Stream, history_result, identify_system_result,
    next_timeline_result, read_slot_result, show_result, standard_replies,
)
from helpers.walfuzz import run_cli
from walfast import majors
from walfast.cluster import Cluster, free_port
from walfast.errors import ProtocolError, ServerMismatchError, WalfastError
from walfast.lsn import history_file_name, parse_lsn
from walfast.replication.commands import (
    SlotInfo,
    SystemInfo,
    check_physical,
    check_server_version,
    create_replication_slot,
    data_directory_mode,
    drop_replication_slot,
    file_mode_for,
    identify_system,
    parse_wal_segment_size,
    quote_ident,
    read_replication_slot,
    start_replication_command,
    timeline_history,
    wal_block_size,
    wal_segment_size,
)
from walfast.replication.connection import _check_integer_datetimes, connect
from walfast.waldir.directory import write_history_file

MiB = 1 << 20


@pytest.fixture(scope="module")
def cluster(pg_bindir):
    """One started 1 MiB-segment cluster shared by this module's tests."""
    with Cluster(pg_bindir, wal_segsize_mb=1) as c:
        yield c


@pytest.fixture
def conn(cluster):
    c = connect(cluster.conninfo())
    try:
        yield c
    finally:
        c.close()


def _slots(cluster) -> list[tuple]:
    return cluster.execute(
        "SELECT slot_name, slot_type, restart_lsn::text FROM pg_replication_slots "
        "ORDER BY slot_name")


@pytest.fixture
def no_slots_left(cluster):
    """Fail a test that leaves a slot behind; drop them so others start clean."""
    yield
    left = _slots(cluster)
    for (name, *_rest) in left:
        cluster.execute("SELECT pg_drop_replication_slot(%s)", (name,))
    assert left == [], f"test left replication slots behind: {left}"


# --------------------------------------------------------------- connect --

@pytest.mark.parametrize("via", ["tcp", "unix"])
def test_connect_and_identify_system(cluster, via):
    with connect(cluster.conninfo(via=via)) as c:
        assert c.autocommit
        info = identify_system(c)
    assert isinstance(info, SystemInfo)
    assert info.systemid == cluster.system_identifier()
    assert info.timeline == 1
    assert info.dbname is None
    # xlogpos is the server's flush position: not beyond what SQL reports now.
    assert 0 < info.xlogpos <= cluster.current_wal_lsn()
    check_physical(info, None)
    check_physical(info, "some_slot")


def test_identify_system_follows_wal(conn, cluster):
    before = identify_system(conn).xlogpos
    _start, end = cluster.generate_wal(100_000)
    after = identify_system(conn).xlogpos
    assert after >= end > before


def test_connect_overrides_dbname_and_uses_fallback_application_name(cluster):
    with connect(cluster.conninfo(dbname="no_such_database")) as c:
        assert c.info.dbname == "replication"
        pid = c.info.backend_pid
        (row,) = cluster.execute(
            "SELECT application_name, backend_type FROM pg_stat_activity WHERE pid = %s",
            (pid,))
    assert row == ("walfast", "walsender")


def test_explicit_application_name_wins(cluster):
    with connect(cluster.conninfo(application_name="my_archiver")) as c:
        (row,) = cluster.execute(
            "SELECT application_name FROM pg_stat_activity WHERE pid = %s",
            (c.info.backend_pid,))
    assert row == ("my_archiver",)
    with connect(cluster.conninfo(), application_name="other") as c:
        (row,) = cluster.execute(
            "SELECT application_name FROM pg_stat_activity WHERE pid = %s",
            (c.info.backend_pid,))
    assert row == ("other",)


def test_keyword_arguments_override_conninfo(cluster):
    # As pg_receivewal's -p overrides the port of its -d connection string.
    wrong = cluster.conninfo(port=free_port())
    with connect(wrong, port=cluster.port) as c:
        assert identify_system(c).systemid == cluster.system_identifier()


def test_connect_accepts_uri(cluster):
    uri = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres?application_name=via_uri"
    with connect(uri) as c:
        assert c.info.dbname == "replication"
        assert identify_system(c).dbname is None


def test_replication_database_is_forced_physical(cluster, caplog):
    conninfo = cluster.conninfo() + " replication=database"
    # Sanity: without walfast this really is a logical walsender.
    with psycopg.connect(conninfo, autocommit=True) as raw:
        logical = identify_system(raw)
    assert logical.dbname == "postgres"
    with pytest.raises(WalfastError, match=r'replication connection using slot "s" is '
                                           r"unexpectedly database specific"):
        check_physical(logical, "s")
    with pytest.raises(WalfastError, match="unexpectedly database specific"):
        check_physical(logical, None)

    with caplog.at_level(logging.WARNING, logger="walfast.replication.connection"):
        with connect(conninfo) as c:
            info = identify_system(c)
    assert info.dbname is None
    check_physical(info, "s")
    assert any("replication=database" in r.getMessage() for r in caplog.records)


def test_connect_failure_propagates_operational_error():
    with pytest.raises(psycopg.OperationalError):
        connect(f"host=127.0.0.1 port={free_port()} user=postgres", connect_timeout=5)


def test_bad_conninfo_propagates():
    with pytest.raises(psycopg.ProgrammingError):
        connect("this is not a conninfo")


@pytest.mark.parametrize("value", [None, "off"])
def test_integer_datetimes_must_be_on(value):
    fake = SimpleNamespace(info=SimpleNamespace(parameter_status=lambda name: value))
    with pytest.raises(ServerMismatchError, match="integer_datetimes"):
        _check_integer_datetimes(fake)


def test_commands_do_not_get_prepared(cluster):
    # psycopg prepares a statement run prepare_threshold (5) times, which a
    # walsender rejects; our commands must keep working on any connection.
    with cluster.connect(replication=True) as c:
        for _ in range(10):
            assert identify_system(c).timeline == 1
            assert wal_segment_size(c) == MiB


def test_non_autocommit_connection_is_refused(cluster):
    with cluster.connect(replication=True, autocommit=False) as c:
        with pytest.raises(WalfastError, match="autocommit"):
            identify_system(c)


# ---------------------------------------------------------- server facts --

def test_wal_segment_size_1mb(conn):
    assert wal_segment_size(conn) == MiB


def test_wal_segment_size_16mb(shared_cluster):
    c16 = shared_cluster(wal_segsize_mb=16)
    with connect(c16.conninfo(via="unix")) as c:
        assert wal_segment_size(c) == 16 * MiB == c16.wal_segment_size


@pytest.mark.parametrize("text, size", [
    ("1MB", MiB),
    ("16MB", 16 * MiB),
    ("64MB", 64 * MiB),
    ("512MB", 512 * MiB),
    ("1GB", 1 << 30),
    ("1024kB", MiB),
    ("1048576", MiB),
    ("1048576B", MiB),
    (" 16MB ", 16 * MiB),
    ("16 MB", 16 * MiB),
])
def test_parse_wal_segment_size(text, size):
    assert parse_wal_segment_size(text) == size


@pytest.mark.parametrize("text, size", [
    ("3MB", 3 * MiB),
    ("512kB", 512 * 1024),
    ("2GB", 2 << 30),
    ("1TB", 1 << 40),
    ("0MB", 0),
    ("1000000", 1000000),
])
def test_parse_wal_segment_size_invalid_size(text, size):
    with pytest.raises(ServerMismatchError) as ei:
        parse_wal_segment_size(text)
    assert str(ei.value) == (
        f"remote server reported invalid WAL segment size ({size} bytes) "
        "(must be a power of two between 1 MB and 1 GB)")


@pytest.mark.parametrize("text", ["", "MB", "16XB", "16mb", "-16MB", "1.5MB", "16MB16", "0x10MB"])
def test_parse_wal_segment_size_unparseable(text):
    with pytest.raises(ProtocolError, match="could not be parsed"):
        parse_wal_segment_size(text)


def test_wal_block_size(conn):
    assert wal_block_size(conn) == 8192


def test_data_directory_mode(conn, cluster):
    mode = data_directory_mode(conn)
    assert mode == cluster.datadir.stat().st_mode & 0o777 == 0o700
    assert file_mode_for(mode) == 0o600


@pytest.mark.parametrize("mode, expected", [
    (None, 0o600), (0o700, 0o600), (0o750, 0o640), (0o770, 0o640),
    (0o740, 0o600), (0o710, 0o600),
])
def test_file_mode_for(mode, expected):
    assert file_mode_for(mode) == expected


def test_check_server_version(conn):
    check_server_version(conn)  # the server of this run: fine

    old = SimpleNamespace(info=SimpleNamespace(
        server_version=90624, parameter_status=lambda name: "9.6.24"))
    with pytest.raises(WalfastError) as ei:
        check_server_version(old)
    assert str(ei.value) == (
        "incompatible server version 9.6.24; client does not support streaming "
        "from server versions older than 10")
    # No upper bound: a future major version is accepted.
    new = SimpleNamespace(info=SimpleNamespace(
        server_version=990000, parameter_status=lambda name: "99.0"))
    check_server_version(new)


# -------------------------------------------------------------- timelines --

def test_timeline_history_of_timeline_1_is_a_clear_error(conn):
    with pytest.raises(ValueError, match="timeline 1 has no history file"):
        timeline_history(conn, 1)
    # The connection is still usable: nothing was sent.
    assert identify_system(conn).timeline == 1


def test_timeline_history_of_missing_timeline(conn):
    with pytest.raises(psycopg.errors.UndefinedFile, match="00000005.history"):
        timeline_history(conn, 5)
    assert identify_system(conn).timeline == 1  # still usable


@pytest.mark.parametrize("tli", [0, -1, 1 << 32])
def test_timeline_history_invalid_timeline(conn, tli):
    with pytest.raises(ValueError):
        timeline_history(conn, tli)


def test_timeline_history_after_promotion(pg_cluster_factory, tmp_path):
    """Make timeline 2 for real (restart as a standby, promote) and compare
    TIMELINE_HISTORY with the file the server wrote into pg_wal."""
    pg_cluster = pg_cluster_factory(wal_segsize_mb=1)   # a fresh one: it changes timeline
    pg_cluster.generate_wal(10_000)
    pg_cluster.stop()
    (pg_cluster.datadir / "standby.signal").write_bytes(b"")
    pg_cluster.start()
    assert pg_cluster.execute("SELECT pg_is_in_recovery()") == [(True,)]
    assert pg_cluster.execute("SELECT pg_promote(true, 60)") == [(True,)]

    with connect(pg_cluster.conninfo()) as c:
        info = identify_system(c)
        assert info.timeline == 2
        name, content = timeline_history(c, 2)
    assert name == history_file_name(2) == "00000002.history"
    assert isinstance(content, bytes)
    assert content == (pg_cluster.pg_wal / name).read_bytes()
    parent, switchpoint, _reason = content.decode().rstrip("\n").split("\t")
    assert parent == "1"
    assert 0 < parse_lsn(switchpoint) <= info.xlogpos
    # And on to disk, as the stream loop does with it.
    written = write_history_file(tmp_path, 2, content)
    assert written.read_bytes() == (pg_cluster.pg_wal / name).read_bytes()


# ------------------------------------------------------------------ slots --

def test_quote_ident():
    assert quote_ident("walfast") == '"walfast"'
    assert quote_ident('a"b') == '"a""b"'
    assert quote_ident('"') == '""""'
    with pytest.raises(ValueError):
        quote_ident("")
    with pytest.raises(ValueError):
        quote_ident("a\0b")
    with pytest.raises(TypeError):
        quote_ident(b"abc")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def read_slot_works(cluster) -> bool:
    """The server has READ_REPLICATION_SLOT (walfast.majors, 15+)."""
    return majors.facts(cluster.major).read_replication_slot


def _slot_info(conn, cluster, name: str, read_slot_works: bool) -> SlotInfo:
    """READ_REPLICATION_SLOT's answer where the server has the command;
    before 15 the same from pg_replication_slots (which has no timeline)."""
    if read_slot_works:
        return read_replication_slot(conn, name)
    rows = [row for row in _slots(cluster) if row[0] == name]
    if not rows:
        raise WalfastError(f'replication slot "{name}" does not exist')
    (_, slot_type, restart_lsn), = rows
    return SlotInfo(slot_type=slot_type, restart_tli=None,
                    restart_lsn=None if restart_lsn is None else parse_lsn(restart_lsn))


@pytest.mark.majors
def test_read_missing_slot(conn, read_slot_works, no_slots_left):
    with pytest.raises(WalfastError) as ei:
        read_replication_slot(conn, "no_such_slot")
    if read_slot_works:
        assert str(ei.value) == 'replication slot "no_such_slot" does not exist'
    else:
        # Refused before anything is sent: the connection is still usable.
        assert isinstance(ei.value, ServerMismatchError)
        first = majors.first_major_with("read_replication_slot")
        assert str(ei.value).startswith(f"READ_REPLICATION_SLOT needs PostgreSQL {first} or "
                                        "later; server version is ")
        assert identify_system(conn).timeline == 1


@pytest.mark.majors
def test_slot_lifecycle(conn, cluster, read_slot_works, no_slots_left):
    """Created with the option syntax of the server's major (RESERVE_WAL in
    parentheses from 15, a keyword before)."""
    assert create_replication_slot(conn, "walfast_test") is True
    try:
        info = _slot_info(conn, cluster, "walfast_test", read_slot_works)
        assert isinstance(info, SlotInfo)
        assert info.slot_type == "physical"
        # RESERVE_WAL: the restart point is set at creation.
        assert info.restart_lsn is not None
        assert info.restart_tli == (1 if read_slot_works else None)
        ((name, slot_type, restart_lsn),) = _slots(cluster)
        assert (name, slot_type) == ("walfast_test", "physical")
        assert parse_lsn(restart_lsn) == info.restart_lsn
        assert info.restart_lsn <= cluster.current_wal_lsn()

        # Duplicate: an error unless if_not_exists, then success (twice).
        with pytest.raises(psycopg.errors.DuplicateObject):
            create_replication_slot(conn, "walfast_test")
        assert create_replication_slot(conn, "walfast_test", if_not_exists=True) is False
        assert create_replication_slot(conn, "walfast_test", if_not_exists=True) is False
        assert [s[0] for s in _slots(cluster)] == ["walfast_test"]
    finally:
        drop_replication_slot(conn, "walfast_test")
    assert _slots(cluster) == []
    with pytest.raises(WalfastError, match="does not exist"):
        _slot_info(conn, cluster, "walfast_test", read_slot_works)
    with pytest.raises(psycopg.errors.UndefinedObject):
        drop_replication_slot(conn, "walfast_test")


def test_create_slot_if_not_exists_on_new_slot(conn, no_slots_left):
    assert create_replication_slot(conn, "walfast_ine", if_not_exists=True) is True
    assert create_replication_slot(conn, "walfast_ine", if_not_exists=True) is False
    drop_replication_slot(conn, "walfast_ine")


@pytest.mark.majors
def test_create_slot_without_reserve_wal(conn, cluster, read_slot_works, no_slots_left):
    # What pg_receivewal --create-slot makes: no restart point yet.
    create_replication_slot(conn, "walfast_lazy", reserve_wal=False)
    try:
        info = _slot_info(conn, cluster, "walfast_lazy", read_slot_works)
        assert info == SlotInfo(slot_type="physical", restart_lsn=None, restart_tli=None)
    finally:
        drop_replication_slot(conn, "walfast_lazy")


@pytest.mark.majors
@pytest.mark.parametrize("name", ["physical", "slot", "timeline", "reserve_wal"])
def test_keyword_named_slot(conn, cluster, read_slot_works, name, no_slots_left):
    create_replication_slot(conn, name)
    try:
        assert _slot_info(conn, cluster, name, read_slot_works).restart_lsn is not None
        assert [s[0] for s in _slots(cluster)] == [name]
    finally:
        drop_replication_slot(conn, name)


def test_quoting_preserves_case(conn, cluster, no_slots_left):
    # Unquoted, the server would fold "Upper" to "upper" and create that
    # slot; quoted it sees the real name, which slot names cannot hold.
    with pytest.raises(psycopg.errors.InvalidName, match='"Upper"'):
        create_replication_slot(conn, "Upper")
    assert _slots(cluster) == []


@pytest.mark.parametrize("name", ['a"b', 'x" PHYSICAL (RESERVE_WAL); DROP_REPLICATION_SLOT "y'])
def test_quote_in_slot_name_cannot_inject(conn, cluster, name, no_slots_left):
    # PostgreSQL 15's replication scanner has no doubled-quote escape in
    # identifiers, so the server refuses the name; it never creates a slot
    # named by a fragment of it.
    with pytest.raises(psycopg.Error):
        create_replication_slot(conn, name)
    assert _slots(cluster) == []
    assert identify_system(conn).timeline == 1  # connection still usable


# ------------------------------------------------------ START_REPLICATION --

def test_start_replication_command_bytes():
    assert start_replication_command(slot=None, start_lsn=0x3000000, timeline=1) == \
        b"START_REPLICATION PHYSICAL 0/3000000 TIMELINE 1"
    assert start_replication_command(slot="archiver", start_lsn=0x16B374D848, timeline=2) == \
        b'START_REPLICATION SLOT "archiver" PHYSICAL 16/B374D848 TIMELINE 2'
    assert start_replication_command(slot='a"b', start_lsn=0, timeline=0xFFFFFFFF) == \
        b'START_REPLICATION SLOT "a""b" PHYSICAL 0/0 TIMELINE 4294967295'


@pytest.mark.parametrize("kw", [
    dict(slot=None, start_lsn=0, timeline=0),
    dict(slot=None, start_lsn=0, timeline=1 << 32),
    dict(slot=None, start_lsn=-1, timeline=1),
    dict(slot=None, start_lsn=1 << 64, timeline=1),
    dict(slot="", start_lsn=0, timeline=1),
])
def test_start_replication_command_invalid(kw):
    with pytest.raises(ValueError):
        start_replication_command(**kw)


@pytest.mark.parametrize("use_slot", [False, True])
def test_start_replication_command_is_accepted(conn, cluster, use_slot, no_slots_left):
    """The server answers our START_REPLICATION text with CopyBothResponse."""
    slot = "walfast_stream" if use_slot else None
    if slot:
        create_replication_slot(conn, slot)
    info = identify_system(conn)
    seg = wal_segment_size(conn)
    cmd = start_replication_command(
        slot=slot, start_lsn=info.xlogpos - info.xlogpos % seg, timeline=info.timeline)
    stream = connect(cluster.conninfo())
    try:
        stream.pgconn.send_query(cmd)
        result = stream.pgconn.get_result()
        assert psycopg.pq.ExecStatus(result.status) == psycopg.pq.ExecStatus.COPY_BOTH
    finally:
        # Close directly: "with" would try to COMMIT in the middle of COPY.
        stream.close()
    if slot:
        # The walsender may still be exiting; wait until the slot is free.
        cluster.execute(
            "DO $$ BEGIN FOR i IN 1..100 LOOP "
            "EXIT WHEN NOT (SELECT active FROM pg_replication_slots WHERE slot_name = "
            "'walfast_stream'); PERFORM pg_sleep(0.1); END LOOP; END $$")
        drop_replication_slot(conn, slot)


# ----------------------------------------------- malformed command results --
# A fake walsender (tests/helpers/fakewalsender.py) answers each command with
# what no server sends.  Every case must raise ProtocolError naming the
# command, the column and the value: never a ValueError from int(), an
# OverflowError later on, or a Python repr (b'...', <memory at 0x...>) in
# the message.

def _fake_conn(server, name: str, replies: dict):
    """A replication connection to *server*, whose healthy replies are
    replaced by *replies* (keys as fakewalsender.command_key makes them)."""
    base = standard_replies(system_identifier=7312345678901234567, timeline=1,
                            xlogpos=0x3000000, slot=(0x3000000, 1))
    base.update(replies)
    server.add(name, Scenario(name=name, replies=base))
    return connect(server.conninfo(name))


def _assert_clear(exc: BaseException | str, *words: str) -> None:
    msg = str(exc)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    for bad in ("invalid literal", "b'", 'b"', " at 0x", "Traceback"):
        assert bad not in msg, msg


@pytest.mark.parametrize("row, column, shown", [
    (("abc", "1", "0/3000000"), "systemid", '"abc"'),
    ((None, "1", "0/3000000"), "systemid", "NULL"),
    (("-1", "1", "0/3000000"), "systemid", '"-1"'),
    (("0", "1", "0/3000000"), "systemid", '"0"'),
    (("18446744073709551616", "1", "0/3000000"), "systemid", '"18446744073709551616"'),
    ((" 42", "1", "0/3000000"), "systemid", '" 42"'),
    (("42", "abc", "0/3000000"), "timeline", '"abc"'),
    (("42", "1.5", "0/3000000"), "timeline", '"1.5"'),
    (("42", "", "0/3000000"), "timeline", '""'),
    (("42", None, "0/3000000"), "timeline", "NULL"),
    (("42", "0", "0/3000000"), "timeline", '"0"'),
    (("42", "+1", "0/3000000"), "timeline", '"+1"'),
    (("42", "4294967296", "0/3000000"), "timeline", '"4294967296"'),
    (("42", "\u0661", "0/3000000"), "timeline", '"\u0661"'),
    (("42", "1", "G/0"), "xlogpos", '"G/0"'),
    (("42", "1", None), "xlogpos", "NULL"),
    (("42", "1", "0/3000000\0"), "xlogpos", '"0/3000000\\x00"'),
])
def test_identify_system_malformed_values(fake_walsender, row, column, shown):
    conn = _fake_conn(fake_walsender, "ident", {"IDENTIFY_SYSTEM": identify_system_result(*row)})
    try:
        with pytest.raises(ProtocolError) as info:
            identify_system(conn)
    finally:
        conn.close()
    _assert_clear(info.value, "IDENTIFY_SYSTEM", f'"{column}"', shown)


@pytest.mark.parametrize("rs", [
    ResultSet([Column("systemid")], [("42",)]),
    ResultSet(["systemid", "timeline", "xlogpos", "dbname"], []),
])
def test_identify_system_wrong_shape(fake_walsender, rs):
    conn = _fake_conn(fake_walsender, "shape", {"IDENTIFY_SYSTEM": rs})
    try:
        with pytest.raises(ProtocolError, match="could not identify system: got"):
            identify_system(conn)
    finally:
        conn.close()


@pytest.mark.parametrize("row, words", [
    (("physical", "0/3000000", "abc"), ["READ_REPLICATION_SLOT", '"restart_tli"', '"abc"']),
    (("physical", "0/3000000", "0"), ["READ_REPLICATION_SLOT", '"restart_tli"', '"0"']),
    (("physical", "0/3000000", "NaN"), ["READ_REPLICATION_SLOT", '"restart_tli"', '"NaN"']),
    (("physical", "garbage", "1"), ["restart_lsn", '"garbage"', '"s"']),
    ((b"physical", b"\xff/0", b"1"), ["restart_lsn", '"\ufffd/0"']),
])
def test_read_replication_slot_malformed_values(fake_walsender, row, words):
    conn = _fake_conn(fake_walsender, "slot", {"READ_REPLICATION_SLOT": read_slot_result(*row)})
    try:
        with pytest.raises(ProtocolError) as info:
            read_replication_slot(conn, "s")
    finally:
        conn.close()
    _assert_clear(info.value, *words)


@pytest.mark.parametrize("name, value, call, words", [
    ("wal_segment_size", None, wal_segment_size, ["SHOW wal_segment_size", "NULL"]),
    ("wal_segment_size", "\u0661MB", wal_segment_size, ["WAL segment size could not be parsed"]),
    ("wal_segment_size", "1MB\0", wal_segment_size, ['"1MB\\x00"']),
    ("wal_block_size", None, wal_block_size, ["SHOW wal_block_size", "NULL"]),
    ("data_directory_mode", "0o700", data_directory_mode, ['"0o700"']),
    ("data_directory_mode", "-1", data_directory_mode, ['"-1"']),
    ("data_directory_mode", "77777777", data_directory_mode, ['"77777777"']),
    ("data_directory_mode", None, data_directory_mode, ["SHOW data_directory_mode", "NULL"]),
])
def test_show_malformed_values(fake_walsender, name, value, call, words):
    conn = _fake_conn(fake_walsender, "show", {f"SHOW {name}": show_result(name, value)})
    try:
        with pytest.raises(ProtocolError) as info:
            call(conn)
    finally:
        conn.close()
    _assert_clear(info.value, *words)


def test_timeline_history_null_file_name(fake_walsender):
    rs = history_result(2, "1\t0/3000000\tx\n")
    rs.rows = [(None, "1\t0/3000000\tx\n")]
    conn = _fake_conn(fake_walsender, "hist", {"TIMELINE_HISTORY 2": rs})
    try:
        with pytest.raises(ProtocolError) as info:
            timeline_history(conn, 2)
    finally:
        conn.close()
    _assert_clear(info.value, "unexpected history file name for timeline 2: NULL")


def test_timeline_history_content_is_the_bytes_sent(fake_walsender):
    content = b"1\t0/3000000\tno recovery target specified\n\xff"
    conn = _fake_conn(fake_walsender, "hist", {"TIMELINE_HISTORY 2": history_result(2, content)})
    try:
        assert timeline_history(conn, 2) == ("00000002.history", content)
    finally:
        conn.close()


@pytest.mark.parametrize("next_tli, startpos, words", [
    ("abc", "0/3000000", ["end-of-timeline", '"next_tli"', '"abc"']),
    ("0", "0/3000000", ["end-of-timeline", '"next_tli"', '"0"']),
    (None, "0/3000000", ["end-of-timeline", '"next_tli"', "NULL"]),
    ("4294967296", "0/3000000", ['"next_tli"', '"4294967296"']),
    ("2", "G/0", ["could not parse next timeline's starting point", '"G/0"']),
    ("2", None, ["could not parse next timeline's starting point", "NULL"]),
])
def test_end_of_timeline_row_malformed(fake_walsender, tmp_path, next_tli, startpos, words):
    """START_REPLICATION answered with the next-timeline row (no COPY), as
    at the very end of a historic timeline, with values no server sends.

    Through ``walfast receive`` in a subprocess: start_replication() waits
    in libpq's PQgetResult, which psycopg calls without releasing the GIL,
    so the fake walsender's thread could not answer it in this process."""
    stream = Stream(reply=next_timeline_result(next_tli, startpos, tag="START_STREAMING"))
    fake_walsender.add("eot", Scenario(replies=standard_replies(
        system_identifier=7312345678901234567, timeline=1, xlogpos=0x3000000,
        segment_size="1MB"), streams=[stream]))
    run = run_cli(["-D", str(tmp_path), "-d", fake_walsender.conninfo("eot"), "-n"], timeout=60)
    assert run.rc == 1, run.stderr
    errors = [ln for ln in run.stderr.splitlines() if ": error: " in ln]
    assert errors, run.stderr
    _assert_clear(errors[0], *words)
    assert "Traceback" not in run.stderr
