"""Replication *commands* over a psycopg 3 connection (the cold control path).

The short request/response commands a WAL receiver needs before and
between streams: ``IDENTIFY_SYSTEM``, ``SHOW``, ``TIMELINE_HISTORY``,
``READ_REPLICATION_SLOT``, ``CREATE_REPLICATION_SLOT`` and
``DROP_REPLICATION_SLOT``; what they say about the server, collected once in
:class:`ServerFacts` (:func:`server_facts`); and the two ends of the COPY:
:func:`start_replication` (``START_REPLICATION`` and its answer) and
:func:`end_copy` (CopyDone and the next-timeline result).  The COPY stream
itself (reading CopyData, writing segments, status updates) belongs to the
engine (:mod:`walfast._core`); opening the connection to
:mod:`walfast.replication.connection`.

Rules that every function here follows:

* A physical walsender only speaks the **simple query protocol**, so commands
  go through ``cursor.execute(text, prepare=False)`` with no parameters; slot
  names and LSNs are validated and quoted into the text here
  (:func:`quote_ident`, :func:`walfast.lsn.format_lsn`), never bound.
* Results are read as the server sent them: every value its text (or
  NULL), never through psycopg's type loaders, and parsed here.  A value
  that cannot be what its column holds (non-integer text in an integer
  column, an LSN that is not one, a NULL where none may be, a number out of
  its range) raises :class:`~walfast.errors.ProtocolError` naming the
  command, the column and the value, never a bare ``ValueError``.  LSNs are
  plain ``int``.
* psycopg errors (``psycopg.OperationalError``, ``psycopg.errors.*``) from a
  command are not caught or rewrapped, except where pg_receivewal itself
  treats one as success (``CREATE_REPLICATION_SLOT`` with
  ``if_not_exists``).  A stream the server ends with an error raises
  :class:`~walfast.errors.ConnectionLostError` with the server's words.
  Result sets of the wrong shape raise :class:`~walfast.errors.ProtocolError`.
"""

from __future__ import annotations

import re
import select
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import pq

from walfast import majors
from walfast.errors import (
    ConnectionLostError, ProtocolError, ServerMismatchError, ServerRefusedError, WalfastError,
)
from walfast.log import get_logger
from walfast.lsn import (
    format_lsn,
    history_file_name,
    is_valid_segment_size,
    parse_lsn,
)

__all__ = [
    "ServerFacts",
    "SlotInfo",
    "SystemInfo",
    "check_physical",
    "check_server_version",
    "create_replication_slot",
    "create_replication_slot_command",
    "data_directory_mode",
    "drop_replication_slot",
    "drop_replication_slot_command",
    "end_copy",
    "file_mode_for",
    "identify_system",
    "parse_wal_segment_size",
    "quote_ident",
    "read_next_timeline",
    "read_replication_slot",
    "server_facts",
    "start_replication",
    "start_replication_command",
    "timeline_history",
    "wal_block_size",
    "wal_segment_size",
]

logger = get_logger(__name__)


#: PostgreSQL's memory units (guc.c ``memory_unit_conversion_table``, bytes).
_SIZE_UNITS = {"": 1, "B": 1, "kB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
# [0-9], not \d: \d also matches other scripts' digits, which int() accepts.
_SIZE_RE = re.compile(r"\s*([0-9]+)\s*(B|kB|MB|GB|TB)?\s*")
#: An octal file mode as SHOW data_directory_mode prints it (0700, 0750).
_MODE_RE = re.compile(r"\s*([0-7]{1,6})\s*")

#: TimeLineID is a uint32 and timeline 0 does not exist.
_MAX_TIMELINE = 0xFFFFFFFF
#: The system identifier is a uint64; PostgreSQL never makes 0 (it is built
#: from the time of initdb), and the engine takes 0 as "not known yet".
_MAX_SYSTEM_IDENTIFIER = (1 << 64) - 1
#: The type OID of bytea (TIMELINE_HISTORY's content before PostgreSQL 14).
_BYTEAOID = 17

#: Possible XLOG_BLCKSZ values (configure --with-wal-blocksize: 1..64 kB).
_VALID_WAL_BLOCK_SIZES = frozenset(1 << n for n in range(10, 17))

#: PG_DIR_MODE_GROUP (common/file_perm.h): owner rwx, group r-x.
_PG_DIR_MODE_GROUP = 0o750


# --------------------------------------------------------------------------- #
# result types
# --------------------------------------------------------------------------- #

@dataclass(frozen=True)
class SystemInfo:
    """The ``IDENTIFY_SYSTEM`` row.

    ``systemid`` is the cluster's system identifier (the ``xlp_sysid`` of
    every long WAL page header), ``timeline`` the server's current timeline,
    ``xlogpos`` its current WAL flush position (on a standby: the replay or
    receive position) and ``dbname`` the database of a logical walsender,
    ``None`` on a physical connection.
    """

    systemid: int
    timeline: int
    xlogpos: int
    dbname: str | None


@dataclass(frozen=True)
class SlotInfo:
    """The ``READ_REPLICATION_SLOT`` row of an existing physical slot.

    ``restart_lsn`` and ``restart_tli`` are ``None`` for a slot that has never
    reserved WAL (created without ``RESERVE_WAL`` and never used).
    """

    slot_type: str | None
    restart_lsn: int | None
    restart_tli: int | None


@dataclass(frozen=True)
class ServerFacts:
    """What the server said about itself on one connection, checked once.

    ``system_identifier``, ``timeline`` and ``xlogpos`` are the
    ``IDENTIFY_SYSTEM`` row (the server's current timeline and WAL position);
    ``segment_size`` (``SHOW wal_segment_size``, a power of two from 1 MiB
    to 1 GiB) and ``block_size`` (``SHOW wal_block_size``) are validated when
    read; ``server_version`` is libpq's number (``180001``); ``file_mode`` is
    the mode for files written from this server's WAL (0600, or 0640 when its
    data directory allows group access, :func:`file_mode_for`).
    """

    system_identifier: int
    timeline: int
    xlogpos: int
    segment_size: int
    block_size: int
    server_version: int
    file_mode: int

    @property
    def major(self) -> int:
        """The server's major version (``18`` for ``180001``)."""
        return majors.major_of(self.server_version)

    @property
    def major_facts(self) -> majors.MajorFacts:
        """What walfast knows of the server's major (:func:`walfast.majors.facts`):
        its page magic, which commands it has."""
        return majors.facts(self.major)


# --------------------------------------------------------------------------- #
# running commands
# --------------------------------------------------------------------------- #

#: One row as the server sent it: each value's text, None for NULL.
_Row = tuple[bytes | None, ...]


@dataclass(frozen=True)
class _Result:
    """A command's result set as the server sent it: raw values, the column
    names and type OIDs (all empty for a command without tuples)."""

    rows: list[_Row] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    types: list[int] = field(default_factory=list)


def _execute(conn: psycopg.Connection[Any], command: str) -> _Result:
    """Run one replication command; return its result set, raw.

    ``prepare=False`` and no parameters make psycopg use the simple query
    protocol even on a connection whose ``prepare_threshold`` would otherwise
    start preparing a command run five times.  The text is sent as UTF-8
    bytes: SQL_ASCII would refuse to encode a non-ASCII slot name, and the
    server's own error about it is the better message.

    The values are taken from the PGresult as text, not fetched through
    psycopg's loaders: a loader fails on a value its column type cannot
    hold (``int8`` text that is not a number) with an exception that names
    neither the command nor the column; the parsers here do.
    """
    if not conn.autocommit:
        raise WalfastError(
            "replication commands need a connection in autocommit mode "
            "(the walsender rejects BEGIN); use walfast.replication.connection.connect()")
    with conn.cursor() as cur:
        cur.execute(command.encode("utf-8"), prepare=False)
        res = cur.pgresult
        if res is None or cur.description is None:
            return _Result()
        nfields = res.nfields
        return _Result(
            rows=[tuple(res.get_value(r, c) for c in range(nfields))
                  for r in range(res.ntuples)],
            names=[col.name for col in cur.description],
            types=[res.ftype(c) for c in range(nfields)])


def _text(value: bytes) -> str:
    """A text value (UTF-8 or SQL_ASCII: bytes that do not decode are
    replaced)."""
    return value.decode("utf-8", "replace")


def _printable(text: str, limit: int = 80) -> str:
    """*text* fit for a one-line message: control characters escaped,
    cut after *limit* characters."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" if ord(c) < 256
                   else f"\\u{ord(c):04x}" for c in text)


def _shown(value: bytes | None) -> str:
    """A value as messages show it: in double quotes, or NULL."""
    return "NULL" if value is None else f'"{_printable(_text(value))}"'


def _invalid(command: str, column: str, value: bytes | None, expected: str) -> ProtocolError:
    return ProtocolError(
        f'could not parse the result of {command}: column "{column}" is {_shown(value)}, '
        f"expected {expected}")


def _uint(command: str, column: str, value: bytes | None, lo: int, hi: int) -> int:
    """An integer column's value, decimal digits only (what PostgreSQL
    prints: no sign, no blanks, no other script's digits), from *lo* to
    *hi*."""
    if value is not None and value.isdigit():       # bytes.isdigit(): ASCII only
        number = int(value)
        if lo <= number <= hi:
            return number
    raise _invalid(command, column, value, f"an integer from {lo} to {hi}")


def _lsn(command: str, column: str, value: bytes | None) -> int:
    if value is not None:
        try:
            return parse_lsn(value.decode("ascii"))
        except ValueError:      # UnicodeDecodeError too
            pass
    raise _invalid(command, column, value, "an LSN such as 0/3000000")


def _check_shape(
    res: _Result, what: str, nrows: int, nfields: int, *, or_more: bool = False,
) -> None:
    nfields_got = len(res.names)
    if len(res.rows) == nrows and (nfields_got >= nfields if or_more
                                   else nfields_got == nfields):
        return
    more = " or more" if or_more else ""
    raise ProtocolError(
        f"{what}: got {len(res.rows)} rows and {nfields_got} fields, "
        f"expected {nrows} rows and {nfields}{more} fields")


def _show(conn: psycopg.Connection[Any], name: str, expected: str) -> str:
    """``SHOW name``'s value (not NULL: *expected* words what it should be)."""
    res = _execute(conn, f"SHOW {name}")
    _check_shape(res, f"could not fetch {name}", 1, 1, or_more=True)
    value = res.rows[0][0]
    if value is None:
        raise _invalid(f"SHOW {name}", name, None, expected)
    return _text(value)


# --------------------------------------------------------------------------- #
# server facts
# --------------------------------------------------------------------------- #

def identify_system(conn: psycopg.Connection[Any]) -> SystemInfo:
    """Run ``IDENTIFY_SYSTEM``.

    Raises :class:`~walfast.errors.ProtocolError` when the row is not
    1 row × ≥ 4 fields, or a field is not what it must be: ``systemid`` an
    integer from 1 to 2^64 - 1, ``timeline`` one from 1 to 2^32 - 1,
    ``xlogpos`` an LSN (``dbname`` may be anything, or NULL).
    """
    res = _execute(conn, "IDENTIFY_SYSTEM")
    _check_shape(res, "could not identify system", 1, 4, or_more=True)
    systemid, timeline, xlogpos, dbname = res.rows[0][:4]
    command = "IDENTIFY_SYSTEM"
    return SystemInfo(
        systemid=_uint(command, "systemid", systemid, 1, _MAX_SYSTEM_IDENTIFIER),
        timeline=_uint(command, "timeline", timeline, 1, _MAX_TIMELINE),
        xlogpos=_lsn(command, "xlogpos", xlogpos),
        dbname=None if dbname is None else _text(dbname),
    )


def check_physical(info: SystemInfo, slot: str | None) -> None:
    """Refuse a connection that turned out to be a logical walsender.

    pg_receivewal's check after its first ``IDENTIFY_SYSTEM``: ``dbname`` must
    be NULL on a physical replication connection.  (pg_receivewal prints
    ``"(null)"`` for the slot when it has none; walfast drops that clause.)
    """
    if info.dbname is None:
        return
    if slot is not None:
        msg = f'replication connection using slot "{slot}" is unexpectedly database specific'
    else:
        msg = "replication connection is unexpectedly database specific"
    raise ServerMismatchError(
        f'{msg} (connected to database "{info.dbname}"; walfast needs a '
        "physical replication connection, replication=true)")


def _server_major(conn: psycopg.Connection[Any]) -> majors.MajorFacts:
    return majors.facts(majors.major_of(conn.info.server_version))


def check_server_version(conn: psycopg.Connection[Any]) -> None:
    """Require a server of :data:`walfast.majors.OLDEST_SERVER_MAJOR` or later.

    walfast needs ``SHOW wal_segment_size`` on the replication connection,
    which PostgreSQL 10 added.  Unlike pg_receivewal, which also refuses
    servers of a newer major version than its own, walfast sets **no upper
    bound**: the physical replication protocol and WAL file naming have been
    stable since 9.3, and page-level checks take their parameters from the
    server (a major newer than :data:`walfast.majors.TABLE`: the page magic
    is learned from the first page).
    """
    if majors.major_of(conn.info.server_version) >= majors.OLDEST_SERVER_MAJOR:
        return
    shown = conn.info.parameter_status("server_version") or "'unknown'"
    raise ServerMismatchError(
        f"incompatible server version {shown}; client does not support "
        f"streaming from server versions older than {majors.OLDEST_SERVER_MAJOR}")


def parse_wal_segment_size(text: str) -> int:
    """Bytes of a ``SHOW wal_segment_size`` value such as ``16MB`` or ``1GB``.

    Accepts PostgreSQL's memory units (``B``, ``kB``, ``MB``, ``GB``, ``TB``,
    case-sensitive as in PostgreSQL) or a bare byte count.  pg_receivewal only
    understands ``MB`` and ``GB``; the server never prints anything else for
    a valid size, so the difference is invisible in practice.

    Raises :class:`~walfast.errors.ProtocolError` if the text is not a size,
    :class:`~walfast.errors.ServerMismatchError` if the size is not a power of
    two between 1 MiB and 1 GiB.
    """
    m = _SIZE_RE.fullmatch(text)
    if m is None:
        raise ProtocolError(f'WAL segment size could not be parsed: "{_printable(text)}"')
    size = int(m.group(1)) * _SIZE_UNITS[m.group(2) or ""]
    if not is_valid_segment_size(size):
        unit = "byte" if size == 1 else "bytes"
        raise ServerMismatchError(
            f"remote server reported invalid WAL segment size ({size} {unit}) "
            "(must be a power of two between 1 MB and 1 GB)")
    return size


def wal_segment_size(conn: psycopg.Connection[Any]) -> int:
    """The server's WAL segment size in bytes (``SHOW wal_segment_size``).

    Errors as :func:`parse_wal_segment_size`.
    """
    return parse_wal_segment_size(_show(conn, "wal_segment_size", "a size such as 16MB"))


def wal_block_size(conn: psycopg.Connection[Any]) -> int:
    """The server's WAL page size in bytes (``SHOW wal_block_size``, 8192
    unless PostgreSQL was built ``--with-wal-blocksize``).

    Raises :class:`~walfast.errors.ServerMismatchError` for a value that is
    not a power of two from 1 kB to 64 kB.
    """
    text = _show(conn, "wal_block_size", "a size such as 8192")
    m = _SIZE_RE.fullmatch(text)
    if m is None:
        raise ProtocolError(f'WAL block size could not be parsed: "{_printable(text)}"')
    size = int(m.group(1)) * _SIZE_UNITS[m.group(2) or ""]
    if size not in _VALID_WAL_BLOCK_SIZES:
        raise ServerMismatchError(
            f"remote server reported invalid WAL block size ({size} bytes)")
    return size


def data_directory_mode(conn: psycopg.Connection[Any]) -> int | None:
    """The server's data directory permissions (``SHOW data_directory_mode``).

    ``None`` for a server without that setting (before 11: its data
    directory is always owner-only).  The value is octal text (``0700`` or
    ``0750``); anything else (a sign, a ``0o`` prefix, more than a mode's
    bits) raises :class:`~walfast.errors.ProtocolError`.
    """
    if not _server_major(conn).data_directory_mode:
        return None
    text = _show(conn, "data_directory_mode", "an octal file mode such as 0700")
    m = _MODE_RE.fullmatch(text)
    if m is None or int(m.group(1), 8) > 0o7777:
        raise ProtocolError(f'group access flag could not be parsed: "{_printable(text)}"')
    return int(m.group(1), 8)


def file_mode_for(dir_mode: int | None) -> int:
    """Mode for files walfast creates, derived from the server's data directory.

    pg_receivewal (``SetDataDirectoryCreatePerm``) creates group-readable files
    (``0640``) when the cluster's data directory allows group access
    (``0750``), owner-only files (``0600``) otherwise and for ``None``.
    """
    if dir_mode is not None and dir_mode & _PG_DIR_MODE_GROUP == _PG_DIR_MODE_GROUP:
        return 0o640
    return 0o600


def server_facts(conn: psycopg.Connection[Any], slot: str | None = None) -> ServerFacts:
    """Ask the server what a receiver needs to know, in pg_receivewal's order
    (version, ``IDENTIFY_SYSTEM`` and the physical-connection check, then the
    sizes and the file mode), and validate each answer once.

    *slot* only words the error for a connection that turned out to be a
    logical walsender (:func:`check_physical`).  Errors as the functions
    called.
    """
    check_server_version(conn)
    info = identify_system(conn)
    check_physical(info, slot)
    return ServerFacts(
        system_identifier=info.systemid, timeline=info.timeline, xlogpos=info.xlogpos,
        segment_size=wal_segment_size(conn), block_size=wal_block_size(conn),
        server_version=conn.info.server_version,
        file_mode=file_mode_for(data_directory_mode(conn)))


# --------------------------------------------------------------------------- #
# timelines
# --------------------------------------------------------------------------- #

def timeline_history(conn: psycopg.Connection[Any], timeline: int) -> tuple[str, bytes]:
    """Fetch the history file of ``timeline``: ``(file name, content)``.

    The content column is ``text`` (checked on PostgreSQL 15; reportedly
    ``bytea`` on older servers); either way the file's bytes are returned.

    Raises:

    * ``ValueError`` for timeline 1 without asking the server: the first
      timeline of every cluster has no history file.
    * :class:`~walfast.errors.ProtocolError` if the server names another file
      than ``history_file_name(timeline)`` or sends another shape.
    * ``psycopg.errors.UndefinedFile`` (from the server) for a timeline the
      server has no history file for.
    """
    expected = history_file_name(timeline)  # validates 1..0xFFFFFFFF
    if timeline == 1:
        raise ValueError(
            "timeline 1 has no history file: TIMELINE_HISTORY is only "
            "meaningful for timelines 2 and later")
    res = _execute(conn, f"TIMELINE_HISTORY {timeline:d}")
    _check_shape(res, "unexpected response to TIMELINE_HISTORY command", 1, 2)
    filename_raw, content_raw = res.rows[0]
    filename = None if filename_raw is None else _text(filename_raw)
    if filename != expected:
        raise ProtocolError(
            f"server reported unexpected history file name for timeline {timeline}: "
            f"{'NULL' if filename is None else _printable(filename)}")
    if content_raw is None:
        raise ProtocolError(f"server sent no content for history file {filename}")
    if res.types[1] == _BYTEAOID:
        # bytea's text form (\x...), as servers before 14 send it.
        content = pq.Escaping(conn.pgconn).unescape_bytea(content_raw)
    else:
        content = content_raw
    return filename, content


# --------------------------------------------------------------------------- #
# slots
# --------------------------------------------------------------------------- #

def quote_ident(name: str) -> str:
    """Quote ``name`` as an SQL identifier: ``"name"``, embedded ``"`` doubled.

    Raises ``ValueError`` for an empty name or one containing NUL (neither can
    be sent).  Quoting preserves case (``"Slot"`` is not ``slot``) and keeps
    the name one token whatever it contains.  Physical slot names may only
    hold ``[a-z0-9_]`` anyway; PostgreSQL 15's replication-command scanner
    does not understand a doubled quote inside an identifier, so a name with
    ``"`` is refused by the server with a syntax error rather than misread.
    """
    if not isinstance(name, str):
        raise TypeError(f"identifier must be str, not {type(name).__name__}")
    if not name:
        raise ValueError("identifier must not be empty")
    if "\0" in name:
        raise ValueError(f"identifier must not contain NUL: {name!r}")
    return '"' + name.replace('"', '""') + '"'


def read_replication_slot(conn: psycopg.Connection[Any], slot: str) -> SlotInfo:
    """``READ_REPLICATION_SLOT`` (PostgreSQL 15+): a physical slot's restart point.

    Errors (:class:`~walfast.errors.ServerRefusedError`), worded as pg_receivewal's:
    ``replication slot "%s" does not exist``, ``expected a physical
    replication slot, got type "%s" instead``; a server without the command
    (:attr:`walfast.majors.MajorFacts.read_replication_slot`) is refused
    before anything is sent.
    """
    if not _server_major(conn).read_replication_slot:
        raise ServerMismatchError(
            f"READ_REPLICATION_SLOT needs PostgreSQL "
            f"{majors.first_major_with('read_replication_slot')} or later; server version "
            f"is {conn.info.parameter_status('server_version') or 'unknown'}")
    res = _execute(conn, f"READ_REPLICATION_SLOT {quote_ident(slot)}")
    _check_shape(res, f'could not read replication slot "{slot}"', 1, 3)
    slot_type_raw, restart_lsn_raw, restart_tli_raw = res.rows[0]
    if slot_type_raw is None:
        raise ServerRefusedError(f'replication slot "{slot}" does not exist')
    slot_type = _text(slot_type_raw)
    if slot_type != "physical":
        raise ServerRefusedError(
            f'expected a physical replication slot, got type "{_printable(slot_type)}" instead')
    restart_lsn = None
    if restart_lsn_raw is not None:
        try:
            restart_lsn = parse_lsn(restart_lsn_raw.decode("ascii"))
        except ValueError:
            # pg_receivewal's words.
            raise ProtocolError(
                f"could not parse restart_lsn {_shown(restart_lsn_raw)} for "
                f'replication slot "{slot}"') from None
    restart_tli = None if restart_tli_raw is None else _uint(
        f'READ_REPLICATION_SLOT "{slot}"', "restart_tli", restart_tli_raw, 1, _MAX_TIMELINE)
    return SlotInfo(slot_type=slot_type, restart_lsn=restart_lsn, restart_tli=restart_tli)


def create_replication_slot_command(
    slot: str, *, reserve_wal: bool, server_version: int,
) -> str:
    """The text of ``CREATE_REPLICATION_SLOT`` for a physical slot, as
    pg_receivewal's ``CreateReplicationSlot`` builds it.

    ``CREATE_REPLICATION_SLOT "slot" PHYSICAL``, plus ``(RESERVE_WAL)`` for a
    server that takes the parenthesised option list (15+,
    :attr:`walfast.majors.MajorFacts.parenthesised_slot_options`) or
    `` RESERVE_WAL`` (the older keyword syntax) for older ones when
    *reserve_wal*; an empty option list is left out, as pg_receivewal leaves
    it out.
    """
    command = f"CREATE_REPLICATION_SLOT {quote_ident(slot)} PHYSICAL"
    if reserve_wal:
        if majors.facts(majors.major_of(server_version)).parenthesised_slot_options:
            command += " (RESERVE_WAL)"
        else:
            command += " RESERVE_WAL"
    return command


def drop_replication_slot_command(slot: str) -> str:
    """The text of ``DROP_REPLICATION_SLOT "slot"`` (without ``WAIT``, as
    pg_receivewal sends it: a slot in use is an error, not a wait)."""
    return f"DROP_REPLICATION_SLOT {quote_ident(slot)}"


def create_replication_slot(
    conn: psycopg.Connection[Any], slot: str, *,
    if_not_exists: bool = False, reserve_wal: bool = True,
) -> bool:
    """Create the physical slot ``slot``; return False if it already existed.

    Sends :func:`create_replication_slot_command`.  With ``reserve_wal`` the
    slot holds WAL from the moment it is created (its ``restart_lsn`` is set
    at once).  pg_receivewal's ``--create-slot`` does *not* reserve WAL (it
    passes ``reserve_wal=false``, checked against PostgreSQL 15: the slot's
    ``restart_lsn`` stays NULL until a receiver first streams from it), so
    ``walfast-receivewal --create-slot`` passes ``reserve_wal=False`` too.

    With ``if_not_exists`` a duplicate (SQLSTATE 42710) is success and False
    is returned; any other server error propagates as a psycopg error
    (``psycopg.errors.InvalidName`` for a name outside ``[a-z0-9_]``...).
    """
    command = create_replication_slot_command(
        slot, reserve_wal=reserve_wal, server_version=conn.info.server_version)
    try:
        res = _execute(conn, command)
    except psycopg.errors.DuplicateObject:
        if if_not_exists:
            logger.debug('replication slot "%s" already exists', slot)
            return False
        raise
    _check_shape(res, f'could not create replication slot "{slot}"', 1, 4)
    return True


def drop_replication_slot(conn: psycopg.Connection[Any], slot: str) -> None:
    """Send :func:`drop_replication_slot_command`.

    A missing slot raises ``psycopg.errors.UndefinedObject``; a slot in use by
    another connection raises ``psycopg.errors.ObjectInUse``.
    """
    res = _execute(conn, drop_replication_slot_command(slot))
    _check_shape(res, f'could not drop replication slot "{slot}"', 0, 0)


# --------------------------------------------------------------------------- #
# START_REPLICATION
# --------------------------------------------------------------------------- #

def start_replication_command(*, slot: str | None, start_lsn: int, timeline: int) -> bytes:
    """The ``START_REPLICATION`` command text, ready for ``send_query``.

    ``START_REPLICATION [SLOT "slot" ]PHYSICAL X/X TIMELINE n``: the timeline
    is always sent, as pg_receivewal does, so the server refuses a timeline
    it does not have instead of silently streaming its current one.
    """
    if not 1 <= timeline <= 0xFFFFFFFF:
        raise ValueError(f"invalid timeline {timeline}")
    slot_clause = "" if slot is None else f"SLOT {quote_ident(slot)} "
    text = f"START_REPLICATION {slot_clause}PHYSICAL {format_lsn(start_lsn)} TIMELINE {timeline:d}"
    return text.encode("utf-8")


def start_replication(
    conn: psycopg.Connection[Any], *, slot: str | None, start_lsn: int, timeline: int,
) -> tuple[int, int] | None:
    """Send ``START_REPLICATION`` and read its answer.

    Returns None once the server answered with a COPY (CopyBothResponse):
    the stream is on, and its bytes are the engine's.  Returns ``(next
    timeline, its start LSN)`` when the start is exactly the end of an old
    timeline: the walsender then answers with the next timeline's row and no
    COPY (pg_receivewal gives up there; a receiver follows it as after an
    ended COPY).

    A refusal (no such WAL, slot in use, timeline not in the server's
    history, ...) raises :class:`~walfast.errors.ServerRefusedError` with the
    server's words, as pg_receivewal prints them.
    """
    pgconn = conn.pgconn
    pgconn.send_query(start_replication_command(slot=slot, start_lsn=start_lsn,
                                                timeline=timeline))
    res = pgconn.get_result()
    status = pq.ExecStatus(res.status) if res is not None else None
    if status == pq.ExecStatus.COPY_BOTH:
        return None
    if status == pq.ExecStatus.TUPLES_OK and res is not None:
        return read_next_timeline(pgconn, res)
    msg = res.error_message.decode(errors="replace").strip() if res is not None else ""
    if not msg:
        msg = pgconn.error_message.decode(errors="replace").strip()
    raise ServerRefusedError(f'could not send replication command "START_REPLICATION": {msg}')


def end_copy(pgconn: pq.abc.PGconn, *, server_ended: bool = False,
             timeout: float | None = None) -> tuple[int, int] | None:
    """Finish the COPY after the server or we ended it.

    *server_ended*: libpq's PQgetCopyData returned -1.  Then, as
    receivelog.c's HandleEndOfCopyStream, our CopyDone is sent only if the
    server sent its CopyDone (a COPY_IN result: end of timeline); a server
    shutting down sends CommandComplete without CopyDone, and libpq has no
    COPY left to end.

    *timeout*: wait at most that many seconds for the server's side of the
    ending (for a stop: a silent server may never answer); past it, give up
    and return None (the caller closes the connection).  None waits as long
    as it takes.

    Returns ``(next_timeline, switch_lsn)`` when the server ended the
    timeline, None when it ended the stream (shutdown) or we stopped.
    """
    next_tli: tuple[int, int] | None = None
    deadline = None if timeout is None else time.monotonic() + timeout
    if deadline is not None:
        pgconn.nonblocking = 1      # a full send buffer must not block the stop either
    if not server_ended:
        pgconn.put_copy_end()
        pgconn.flush()
    while True:
        if not _wait_for_result(pgconn, deadline):
            return None
        res = pgconn.get_result()
        if res is None:
            return next_tli
        status = pq.ExecStatus(res.status)
        if status == pq.ExecStatus.COPY_IN:
            # The server sent CopyDone: answer with ours.
            pgconn.put_copy_end()
            pgconn.flush()
        elif status == pq.ExecStatus.COPY_OUT or status == pq.ExecStatus.COPY_BOTH:
            # We sent CopyDone first: drain what the server still sends.
            while True:
                n, _ = pgconn.get_copy_data(1)
                if n < 0:
                    break
                if n == 0 and not _wait_readable(pgconn, deadline):
                    return None
        elif status == pq.ExecStatus.TUPLES_OK:
            next_tli = _parse_next_timeline(res)
        elif status == pq.ExecStatus.COMMAND_OK and next_tli is None:
            # The stream is over and no next timeline follows.  A walsender
            # that is shutting down exits right after this CommandComplete,
            # without ReadyForQuery: waiting for more would only turn into
            # "server closed the connection unexpectedly".
            return None
        elif status == pq.ExecStatus.FATAL_ERROR:
            # The server ended the stream with an error (e.g. the walsender
            # was terminated): a lost connection, retried like one.
            msg = res.error_message.decode(errors="replace").strip()
            raise ConnectionLostError(f"unexpected termination of replication stream: {msg}")


def _wait_readable(pgconn: pq.abc.PGconn, deadline: float | None) -> bool:
    """Wait until the socket has bytes (then read them into libpq); False
    once *deadline* (time.monotonic) passed.  No deadline: wait forever."""
    left = None if deadline is None else deadline - time.monotonic()
    if left is not None and left <= 0:
        return False
    readable, _, _ = select.select([pgconn.socket], [], [], left)
    if readable:
        pgconn.consume_input()
    return True


def _wait_for_result(pgconn: pq.abc.PGconn, deadline: float | None) -> bool:
    """Wait until get_result() would not block; False once *deadline* passed."""
    if deadline is None:
        return True                 # get_result() itself waits
    while pgconn.is_busy():
        if not _wait_readable(pgconn, deadline):
            return False
    return True


def _parse_next_timeline(res: pq.abc.PGresult) -> tuple[int, int]:
    """The end-of-timeline row: ``(next timeline, its start LSN)``
    (receivelog.c's ReadEndOfStreamingResult).  ``next_tli`` must be an
    integer from 1 to 2^32 - 1 and ``next_tli_startpos`` an LSN, else
    :class:`~walfast.errors.ProtocolError` (whether the switch makes sense is
    the caller's to check)."""
    if res.ntuples != 1 or res.nfields < 2:
        raise ProtocolError(
            f"unexpected result set after end-of-timeline: got {res.ntuples} rows and "
            f"{res.nfields} fields, expected 1 rows and 2 fields")
    tli_raw, pos_raw = res.get_value(0, 0), res.get_value(0, 1)
    tli = _uint("the end-of-timeline result", "next_tli", tli_raw, 1, _MAX_TIMELINE)
    try:
        if pos_raw is not None:
            return tli, parse_lsn(pos_raw.decode("ascii"))
    except ValueError:
        pass
    # pg_receivewal's words.
    raise ProtocolError(f"could not parse next timeline's starting point {_shown(pos_raw)}")


def read_next_timeline(pgconn: pq.abc.PGconn, res: pq.abc.PGresult) -> tuple[int, int]:
    """``START_REPLICATION`` was answered with the end-of-timeline row
    instead of a COPY: the start position is exactly where the requested
    (historic) timeline ends.  Parse the row, read the CommandComplete that
    follows; return ``(next timeline, its start LSN)``."""
    next_tli = _parse_next_timeline(res)
    while True:
        r = pgconn.get_result()
        if r is None:
            return next_tli
        status = pq.ExecStatus(r.status)
        if status == pq.ExecStatus.FATAL_ERROR:
            msg = r.error_message.decode(errors="replace").strip()
            raise ConnectionLostError(f"unexpected termination of replication stream: {msg}")
        if status != pq.ExecStatus.COMMAND_OK:
            raise ProtocolError(
                f"unexpected result after the end-of-timeline result set: {status.name}")
