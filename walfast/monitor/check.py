"""``walfast check``: a pre-flight and monitoring check, in the style of ``barman check``.

One line per item, ``NAME: OK|WARNING|CRITICAL (detail)``, then the
overall status; the exit status is the Nagios plugin convention (0 OK,
1 WARNING, 2 CRITICAL).  Usage errors exit 1, as for every walfast command
(:mod:`walfast.cli.usage`): a monitoring system sees a WARNING, and the
message on stderr says what is wrong with the command line.

Each item says what is wrong and what to do, in one line.  The work is
split in two so that the evaluation can be tested without a server:

* *probes* connect and collect raw values: :func:`probe_replication`
  (a physical replication connection: ``IDENTIFY_SYSTEM`` and the sizes,
  :func:`walfast.replication.commands.server_facts`), :func:`probe_sql` (a
  normal connection: the role, walsenders in use, the slot's row; every
  version-dependent query is built in :func:`slot_query` and
  :func:`idle_timeout_query`), :func:`disk_usage` and the receiver's
  progress state (:func:`walfast.monitor.progress.read_progress`);
* one ``check_*`` function per item turns those values into a
  :class:`CheckResult` (a frozen record: name, status, detail, the measured
  values), without any I/O except :func:`check_directory`, which looks at
  the directory itself.

Items that need the server are reported ``WARNING (not checked: ...)``
when it cannot be reached; the ``connection`` item is then CRITICAL, so the
overall status is too.  A normal SQL connection is tried even when the
replication connection was refused by the server (pg_hba, role,
max_wal_senders), because the SQL items then tell why.

psycopg is imported only when a connection is made.
"""

from __future__ import annotations

import argparse
import datetime
import enum
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from walfast.cli.usage import ArgumentParser, UsageError, print_usage_error
from walfast.errors import WalfastError
from walfast.lsn import format_lsn, parse_lsn
from walfast.monitor.progress import ProgressSnapshot, ProgressStateError, read_progress
from walfast.monitor.status import format_size
from walfast.waldir import layout
from walfast.waldir.identity import DirectoryIdentity, find_identity, read_identity

if TYPE_CHECKING:
    import psycopg

    from walfast.replication.commands import ServerFacts

__all__ = [
    "CheckOptions", "CheckResult", "DiskUsage", "ReplicationProbe", "RoleRow", "SendersRow",
    "SizeLimit", "SlotRow", "SqlProbe", "Status", "Thresholds", "check_behind",
    "check_connection", "check_directory", "check_disk", "check_receiver", "check_role",
    "check_slot", "check_wal_senders", "disk_usage", "format_report", "idle_timeout_query",
    "main", "overall", "parse_size", "probe_replication", "probe_sql", "run_checks",
    "slot_query",
]

PROG = "walfast check"

#: libpq's connect_timeout when neither the conninfo nor PGCONNECT_TIMEOUT
#: sets one (libpq's own default is to wait forever).
DEFAULT_CONNECT_TIMEOUT = 10
#: A check's SQL statements give up after this long (a hung server).
STATEMENT_TIMEOUT_MS = 10_000
#: The segment size assumed when neither the server, the directory's
#: identity nor the progress state tells it.
DEFAULT_SEGMENT_SIZE = 16 << 20
#: How long the receiver item waits for a message when the receiver looks
#: silent while the server has WAL it has not got: a commit made just
#: before the check reaches the receiver in milliseconds.
SETTLE_SECONDS = 1.0


class Status(enum.IntEnum):
    """An item's status; its value is the Nagios exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class CheckResult:
    """One item: its status, one line saying what is wrong and what to do,
    and the values measured (JSON-ready).  *checked* is False for an item
    that could not be evaluated (its status is then WARNING: "not checked"
    is never OK)."""

    name: str
    status: Status
    detail: str
    values: dict[str, Any] = field(default_factory=dict)
    checked: bool = True

    def line(self) -> str:
        """The human form, as ``barman check`` prints an item."""
        return f"\t{self.name}: {self.status.name} ({self.detail})"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.name, "checked": self.checked,
                "detail": self.detail, "values": self.values}


def overall(results: Sequence[CheckResult]) -> Status:
    """The worst status of *results* (OK for none)."""
    return max((r.status for r in results), default=Status.OK)


def _not_checked(name: str, why: str) -> CheckResult:
    return CheckResult(name, Status.WARNING, f"not checked: {why}", checked=False)


# --------------------------------------------------------------------------- #
# thresholds
# --------------------------------------------------------------------------- #

_SIZE_UNITS = {"": 1, "b": 1, "bytes": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30,
               "tb": 1 << 40}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")
_PERCENT_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*%\s*")


def parse_size(text: str) -> int:
    """Bytes of ``"10GB"``, ``"512 MB"``, ``"1024kB"`` or a bare byte count
    (PostgreSQL's units, case-insensitive).  Raises ValueError."""
    m = _SIZE_RE.fullmatch(text)
    if m is None or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f'invalid size "{text}": expected a number with an optional unit '
                         f"(bytes, kB, MB, GB, TB)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])


@dataclass(frozen=True)
class SizeLimit:
    """A free-space threshold: bytes, or a percentage of the file system."""

    amount: float
    percent: bool = False

    @classmethod
    def parse(cls, text: str) -> SizeLimit:
        m = _PERCENT_RE.fullmatch(text)
        if m is not None:
            pct = float(m.group(1))
            if pct > 100:
                raise ValueError(f'invalid percentage "{text}": at most 100 %')
            return cls(pct, percent=True)
        return cls(parse_size(text))

    def bytes_of(self, total: int) -> int:
        """The limit in bytes on a file system of *total* bytes."""
        return int(total * self.amount / 100) if self.percent else int(self.amount)


@dataclass(frozen=True)
class Thresholds:
    """The limits the items are judged by.  Sizes left None default to
    multiples of the WAL segment size, known only once the server (or the
    directory) has told it: see the three methods."""

    warning_free: SizeLimit | None = None
    critical_free: SizeLimit | None = None
    warning_silent: float = 60.0
    critical_silent: float = 300.0
    warning_behind: int | None = None
    critical_behind: int | None = None
    warning_safe_wal: int | None = None

    def free_limits(self, segment_size: int, total: int) -> tuple[int, int]:
        """(warning, critical) free bytes on a file system of *total* bytes.

        Defaults: CRITICAL below one segment plus 1 MB (the receiver
        preallocates each new segment file whole, and writes small state
        and history files besides), WARNING below 5 % of the file system
        but at least 10 segments."""
        critical = (self.critical_free.bytes_of(total) if self.critical_free is not None
                    else segment_size + (1 << 20))
        warning = (self.warning_free.bytes_of(total) if self.warning_free is not None
                   else max(10 * segment_size, total * 5 // 100))
        return warning, critical

    def behind_limits(self, segment_size: int) -> tuple[int, int]:
        """(warning, critical) bytes behind.  Defaults 2 and 8 segments: a
        receiver without --synchronous flushes at segment ends, so up to one
        segment behind is normal."""
        return (self.warning_behind if self.warning_behind is not None else 2 * segment_size,
                self.critical_behind if self.critical_behind is not None
                else 8 * segment_size)

    def safe_wal_limit(self, segment_size: int) -> int:
        """WARNING when a slot's safe_wal_size is below this (default 4 segments)."""
        return self.warning_safe_wal if self.warning_safe_wal is not None else 4 * segment_size


# --------------------------------------------------------------------------- #
# formatting helpers
# --------------------------------------------------------------------------- #

def _one_line(text: str) -> str:
    """A (libpq) message on one line: its lines joined with "; ", runs of
    blanks (``FATAL:  msg``) made one."""
    lines = [" ".join(line.split()) for line in str(text).splitlines()]
    return "; ".join(line for line in lines if line)


def _libpq_message(exc: BaseException) -> str:
    """libpq's words for a failed connection, without psycopg's prefix."""
    text = str(exc).strip()
    for prefix in ("connection failed: ", "connection is bad: "):
        if text.startswith(prefix):
            text = text[len(prefix):]
    return _one_line(text) or type(exc).__name__


def _seconds(s: float) -> str:
    if s < 100:
        return f"{s:.1f} s"
    if s < 2 * 3600:
        return f"{s:.0f} s"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def _segments(n: int, segment_size: int) -> str:
    k = n / segment_size
    return "1 segment" if k == 1 else f"{k:.0f} segments" if k == int(k) else f"{k:.1f} segments"


def _utc(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


# --------------------------------------------------------------------------- #
# probes: the server
# --------------------------------------------------------------------------- #

#: Fragments of libpq's messages for a server that could not be reached at
#: all.  Only an optimisation: after such a failure the SQL connection is not
#: tried (it would fail the same way, and wait out connect_timeout again).
_UNREACHABLE = ("Connection refused", "timeout expired", "could not translate host name",
                "No such file or directory", "Network is unreachable", "No route to host")


@dataclass(frozen=True)
class ReplicationProbe:
    """What the physical replication connection found: the server's facts,
    or libpq's message (*error*) and whether the server answered at all."""

    facts: ServerFacts | None = None
    error: str | None = None
    reachable: bool = True
    #: The walsender serving this check (left out of the walsenders in use).
    backend_pid: int | None = None
    #: The user libpq connected as.
    user: str | None = None


@dataclass(frozen=True)
class RoleRow:
    """``pg_roles`` of the session user."""

    user: str
    superuser: bool
    replication: bool


@dataclass(frozen=True)
class SendersRow:
    """``max_wal_senders`` and the walsenders in ``pg_stat_replication``
    (this check's own left out)."""

    max_wal_senders: int
    in_use: int


@dataclass(frozen=True)
class SlotRow:
    """A ``pg_replication_slots`` row (:func:`slot_query`); columns the
    server does not have are None.  ``inactive_seconds`` is the server's
    ``now() - inactive_since``; ``holder`` describes the ``pg_stat_replication``
    row of ``active_pid``."""

    slot_name: str
    slot_type: str
    active: bool
    active_pid: int | None = None
    restart_lsn: int | None = None
    wal_status: str | None = None
    safe_wal_size: int | None = None
    inactive_since: str | None = None
    inactive_seconds: float | None = None
    invalidation_reason: str | None = None
    holder: str | None = None


@dataclass(frozen=True)
class SqlProbe:
    """What the normal SQL connection found (*error*: why there is none)."""

    error: str | None = None
    server_version: int = 0
    role: RoleRow | None = None
    senders: SendersRow | None = None
    #: The slot asked about: its row, or None when it does not exist.
    slot: SlotRow | None = None
    #: ``idle_replication_slot_timeout`` in seconds (PostgreSQL 18+; 0 is
    #: off), None on older servers.
    idle_timeout: float | None = None


# Version-dependent SQL: every column that not every supported server has,
# in one place.  PostgreSQL 13 added wal_status and safe_wal_size; 17
# inactive_since and invalidation_reason; 18 idle_replication_slot_timeout.
WAL_STATUS_VERSION = 130000
INACTIVE_SINCE_VERSION = 170000
IDLE_TIMEOUT_VERSION = 180000


def slot_query(server_version: int) -> str:
    """The ``pg_replication_slots`` query for a server of *server_version*
    (``server_version_num``): :class:`SlotRow`'s columns, NULL where the
    server has none, joined with ``pg_stat_replication`` for the holder.
    One parameter: the slot name."""
    cols = ["s.slot_name", "s.slot_type", "s.active", "s.active_pid", "s.restart_lsn::text"]
    if server_version >= WAL_STATUS_VERSION:
        cols += ["s.wal_status", "s.safe_wal_size"]
    else:
        cols += ["NULL::text", "NULL::bigint"]
    if server_version >= INACTIVE_SINCE_VERSION:
        cols += ["s.inactive_since::text",
                 "extract(epoch FROM now() - s.inactive_since)::float8",
                 "s.invalidation_reason"]
    else:
        cols += ["NULL::text", "NULL::float8", "NULL::text"]
    cols += ["r.application_name", "host(r.client_addr)", "r.client_port",
             "r.backend_start::text"]
    return (f"SELECT {', '.join(cols)} FROM pg_replication_slots s "
            "LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid "
            "WHERE s.slot_name = %s")


def idle_timeout_query(server_version: int) -> str | None:
    """``idle_replication_slot_timeout`` in seconds, whatever its unit
    (PostgreSQL 18+); None for an older server."""
    if server_version < IDLE_TIMEOUT_VERSION:
        return None
    return ("SELECT setting::float8 * CASE unit WHEN 'ms' THEN 0.001 WHEN 's' THEN 1 "
            "WHEN 'min' THEN 60 WHEN 'h' THEN 3600 WHEN 'd' THEN 86400 ELSE 1 END "
            "FROM pg_settings WHERE name = 'idle_replication_slot_timeout'")


def _slot_row(row: tuple[Any, ...]) -> SlotRow:
    (name, slot_type, active, active_pid, restart_lsn, wal_status, safe_wal_size,
     inactive_since, inactive_seconds, invalidation_reason, app, addr, port, since) = row
    holder = None
    if active_pid is not None:
        parts = []
        if app:
            parts.append(f'application_name "{app}"')
        if addr:
            parts.append(f"client {addr}" + (f":{port}" if port else ""))
        if since:
            parts.append(f"connected since {since[:19]}")
        holder = ", ".join(parts) or None
    return SlotRow(
        slot_name=name, slot_type=slot_type, active=bool(active), active_pid=active_pid,
        restart_lsn=None if restart_lsn is None else parse_lsn(restart_lsn),
        wal_status=wal_status,
        safe_wal_size=None if safe_wal_size is None else int(safe_wal_size),
        inactive_since=inactive_since,
        inactive_seconds=None if inactive_seconds is None else float(inactive_seconds),
        invalidation_reason=invalidation_reason, holder=holder)


def _connect_timeout(params: dict[str, Any]) -> str | None:
    """:data:`DEFAULT_CONNECT_TIMEOUT` unless the conninfo or the
    environment sets one (None: leave it to libpq)."""
    if params.get("connect_timeout") or os.environ.get("PGCONNECT_TIMEOUT"):
        return None
    return str(DEFAULT_CONNECT_TIMEOUT)


def probe_replication(conninfo: str) -> tuple[ReplicationProbe, psycopg.Connection[Any] | None]:
    """Open a physical replication connection as ``walfast receive`` does
    and ask :func:`~walfast.replication.commands.server_facts`.  Returns the
    probe and the open connection (None after a failure); the caller closes
    it once the SQL probe is done, so that this check's walsender can be
    told apart from the others."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    from walfast.replication.commands import server_facts
    from walfast.replication.connection import connect

    try:
        params = conninfo_to_dict(conninfo)
        conn = connect(conninfo, application_name="walfast check",
                       connect_timeout=_connect_timeout(params))
    except psycopg.Error as e:
        msg = _libpq_message(e)
        return ReplicationProbe(error=msg, reachable=not any(s in msg for s in _UNREACHABLE)), None
    except WalfastError as e:
        return ReplicationProbe(error=_one_line(str(e))), None
    try:
        facts = server_facts(conn)
    except (psycopg.Error, WalfastError) as e:
        conn.close()
        return ReplicationProbe(error=_libpq_message(e)), None
    return ReplicationProbe(facts=facts, backend_pid=conn.info.backend_pid,
                            user=conn.info.user), conn


def _sql_attempts(conninfo: str) -> list[dict[str, Any]]:
    """Connection parameters for the normal SQL connection: the conninfo
    without ``replication``; its dbname if it names one other than
    ``replication`` (which means nothing to a physical walsender), else
    libpq's default (PGDATABASE, else the user name), then ``postgres``
    as PostgreSQL's own tools fall back to a maintenance database."""
    from psycopg.conninfo import conninfo_to_dict

    params: dict[str, Any] = conninfo_to_dict(conninfo)
    params.pop("replication", None)
    if params.get("dbname") == "replication":
        del params["dbname"]
    params.setdefault("fallback_application_name", "walfast check")
    timeout = _connect_timeout(params)
    if timeout is not None:
        params["connect_timeout"] = timeout
    if "dbname" in params:
        return [params]
    return [params, dict(params, dbname="postgres")]


def probe_sql(conninfo: str, slot: str | None, *, exclude_pid: int | None = None) -> SqlProbe:
    """Connect for SQL (:func:`_sql_attempts`) and read the role, the
    walsenders in use (but *exclude_pid*, this check's own walsender) and
    the row of *slot*."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    first_error = None
    conn = None
    for params in _sql_attempts(conninfo):
        try:
            conn = psycopg.connect(make_conninfo("", **params), autocommit=True)
            break
        except psycopg.Error as e:
            first_error = first_error or _libpq_message(e)
    if conn is None:
        return SqlProbe(error=f"could not connect for SQL ({first_error})")
    try:
        with conn:
            version = conn.info.server_version
            conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
            row = conn.execute("SELECT rolname, rolsuper, rolreplication FROM pg_roles "
                               "WHERE rolname = session_user").fetchone()
            role = None if row is None else RoleRow(row[0], bool(row[1]), bool(row[2]))
            row = conn.execute(
                "SELECT current_setting('max_wal_senders')::int, "
                "(SELECT count(*) FROM pg_stat_replication WHERE pid IS DISTINCT FROM %s)",
                (exclude_pid,)).fetchone()
            senders = None if row is None else SendersRow(int(row[0]), int(row[1]))
            slot_row = None
            if slot is not None:
                found = conn.execute(slot_query(version), (slot,)).fetchone()
                slot_row = None if found is None else _slot_row(found)
            idle_timeout = None
            query = idle_timeout_query(version)
            if query is not None:
                found = conn.execute(query).fetchone()
                idle_timeout = None if found is None else float(found[0])
    except psycopg.Error as e:
        return SqlProbe(error=f"SQL failed ({_libpq_message(e)})")
    return SqlProbe(server_version=version, role=role, senders=senders, slot=slot_row,
                    idle_timeout=idle_timeout)


# --------------------------------------------------------------------------- #
# the items
# --------------------------------------------------------------------------- #

def _connection_hint(error: str) -> str:
    if "pg_hba.conf" in error:
        return ('allow it with a "host replication USER ADDRESS METHOD" line in the '
                "server's pg_hba.conf, then reload the server")
    if "replication role" in error or "REPLICATION attribute" in error \
            or "start WAL sender" in error:
        return "give the role REPLICATION: ALTER ROLE name REPLICATION (as a superuser)"
    if "max_wal_senders" in error:
        return "raise max_wal_senders (needs a restart) or stop another replication client"
    if "password" in error:
        return "check the password (~/.pgpass, PGPASSWORD or the conninfo)"
    return "check -d/-h/-p/-U and that the server is up and accepts replication connections"


def check_connection(probe: ReplicationProbe) -> CheckResult:
    """Item **connection**: a physical replication connection works."""
    name = "connection"
    if probe.facts is None:
        error = probe.error or "unknown error"
        return CheckResult(name, Status.CRITICAL, f"{error}; {_connection_hint(error)}",
                           {"error": error})
    f = probe.facts
    version = f"{f.server_version // 10000}.{f.server_version % 10000}"
    values = {"server_version_num": f.server_version,
              "system_identifier": str(f.system_identifier), "timeline": f.timeline,
              "xlogpos": f.xlogpos, "xlogpos_text": format_lsn(f.xlogpos),
              "segment_size": f.segment_size, "block_size": f.block_size}
    return CheckResult(name, Status.OK,
                       f"PostgreSQL {version}, system identifier {f.system_identifier}, "
                       f"timeline {f.timeline}, WAL at {format_lsn(f.xlogpos)}", values)


def _sql_not_checked(name: str, sql: SqlProbe) -> CheckResult:
    return _not_checked(name, sql.error or "no SQL connection")


def check_role(repl: ReplicationProbe, sql: SqlProbe) -> CheckResult:
    """Item **replication role**: the role has REPLICATION or is a superuser."""
    name = "replication role"
    if sql.error is not None or sql.role is None:
        if repl.facts is not None:
            # The walsender refuses a role without REPLICATION at connection
            # time (InitPostgres), so the accepted connection proves it.
            return CheckResult(name, Status.OK,
                               f"{repl.user or 'the role'} may replicate: the replication "
                               f"connection was accepted ({sql.error or 'no role row'})",
                               {"user": repl.user, "replication": True})
        return _sql_not_checked(name, sql)
    r = sql.role
    values = {"user": r.user, "superuser": r.superuser, "replication": r.replication}
    if r.superuser:
        return CheckResult(name, Status.OK, f"{r.user} is a superuser", values)
    if r.replication:
        return CheckResult(name, Status.OK, f"{r.user} has REPLICATION", values)
    return CheckResult(name, Status.CRITICAL,
                       f"role {r.user} has neither REPLICATION nor SUPERUSER: run "
                       f'ALTER ROLE "{r.user}" REPLICATION as a superuser', values)


def check_wal_senders(sql: SqlProbe, receiver_connected: bool) -> CheckResult:
    """Item **max_wal_senders**: walsenders left for the receiver.

    A receiver that is not connected needs one: none free is CRITICAL,
    only that one WARNING.  A connected receiver holds its own already:
    none free beyond it is WARNING (a reconnect races every other client).
    """
    name = "max_wal_senders"
    if sql.error is not None or sql.senders is None:
        return _sql_not_checked(name, sql)
    s = sql.senders
    free = max(0, s.max_wal_senders - s.in_use)
    spare = free - (0 if receiver_connected else 1)
    values = {"max_wal_senders": s.max_wal_senders, "in_use": s.in_use, "free": free,
              "receiver_connected": receiver_connected}
    used = f"{s.in_use} of {s.max_wal_senders} in use"
    todo = "raise max_wal_senders (needs a restart) or stop a replication client"
    if spare < 0:
        return CheckResult(name, Status.CRITICAL,
                           f"{used}, none free: the receiver cannot connect; {todo}", values)
    if spare == 0:
        why = ("none free besides the receiver's own: a reconnect may lose its place"
               if receiver_connected else "only one free, for the receiver")
        return CheckResult(name, Status.WARNING, f"{used}, {why}; {todo}", values)
    return CheckResult(name, Status.OK, f"{used}, {free} free", values)


def _create_slot_command(slot: str, conn_args: Sequence[str]) -> str:
    return " ".join(["walfast receive --create-slot -S", slot, *conn_args])


def check_slot(slot: str | None, sql: SqlProbe, receiver: ProgressSnapshot | None,
               segment_size: int, thresholds: Thresholds, *,
               conn_args: Sequence[str] = (), from_receiver: bool = False) -> CheckResult:
    """Item **slot**: the slot exists, is physical, is not held by another
    connection, still has its WAL (``wal_status``, ``safe_wal_size``) and,
    on PostgreSQL 18+, is not about to be invalidated for being idle.

    *receiver* (the progress state) tells whether an active slot is held by
    our receiver: a receiver that is streaming with this slot holds it.
    *from_receiver*: the slot name came from the progress state, not -S.
    """
    name = "slot"
    if slot is None:
        return CheckResult(name, Status.OK, "none: -S not given and the receiver uses no slot",
                           {"slot_name": None})
    if sql.error is not None:
        return _sql_not_checked(name, sql)
    quoted = f'"{slot}"' + (" (the receiver's)" if from_receiver else "")
    row = sql.slot
    if row is None:
        return CheckResult(name, Status.CRITICAL,
                           f"{quoted} does not exist: create it with "
                           f'"{_create_slot_command(slot, conn_args)}"',
                           {"slot_name": slot, "exists": False})
    values: dict[str, Any] = {
        "slot_name": slot, "exists": True, "slot_type": row.slot_type, "active": row.active,
        "active_pid": row.active_pid,
        "restart_lsn": None if row.restart_lsn is None else format_lsn(row.restart_lsn),
        "wal_status": row.wal_status, "safe_wal_size": row.safe_wal_size,
        "inactive_since": row.inactive_since, "inactive_seconds": row.inactive_seconds,
        "invalidation_reason": row.invalidation_reason,
        "idle_replication_slot_timeout": sql.idle_timeout}
    if row.slot_type != "physical":
        return CheckResult(name, Status.CRITICAL,
                           f"{quoted} is a {row.slot_type} slot, walfast needs a physical "
                           f"one: use another name and create it with "
                           f'"{_create_slot_command("NAME", conn_args)}"', values)
    if row.invalidation_reason is not None:
        return CheckResult(name, Status.CRITICAL,
                           f"{quoted} was invalidated ({row.invalidation_reason}) and can no "
                           f'longer be streamed from: drop it ("walfast receive --drop-slot '
                           f'-S {slot}"), create it again ("{_create_slot_command(slot, conn_args)}'
                           f'") and look for a gap in the archive', values)
    if row.wal_status == "lost":
        return CheckResult(name, Status.CRITICAL,
                           f"{quoted} has wal_status lost: WAL it needed was removed, the "
                           f"archive has a gap; drop and recreate the slot and take a new "
                           f"base backup", values)
    problems: list[str] = []
    ours = (receiver is not None and receiver.running and receiver.state == "streaming"
            and receiver.slot_name == slot)
    if receiver is not None and receiver.running and not from_receiver \
            and receiver.slot_name != slot:
        used = f'slot "{receiver.slot_name}"' if receiver.slot_name else "no slot"
        problems.append(f"the receiver in the directory streams with {used}, not this one")
    if row.active and not ours:
        who = f" ({row.holder})" if row.holder else ""
        problems.append(
            f"active for PID {row.active_pid}{who}, not our receiver: another receiver holds "
            f"it, or a half-open connection the server has not noticed yet (it ends after "
            f"wal_sender_timeout; pg_terminate_backend({row.active_pid}) ends it now)")
    if row.restart_lsn is None:
        problems.append("reserves no WAL yet (restart_lsn is NULL until a receiver first "
                        "streams from it): start the receiver")
    if row.wal_status == "unreserved":
        problems.append("wal_status unreserved: WAL it needs will be removed at the next "
                        "checkpoint unless the receiver catches up; raise "
                        "max_slot_wal_keep_size or let it catch up")
    limit = thresholds.safe_wal_limit(segment_size)
    values["safe_wal_warning"] = limit
    if row.safe_wal_size is not None and row.safe_wal_size < limit \
            and row.wal_status != "unreserved":
        problems.append(f"safe_wal_size {format_size(row.safe_wal_size)} is below "
                        f"{format_size(limit)}: the slot loses its WAL soon; let the receiver "
                        f"catch up or raise max_slot_wal_keep_size")
    timeout = sql.idle_timeout
    if timeout and not row.active and row.inactive_seconds is not None \
            and row.inactive_seconds > timeout / 2:
        problems.append(
            f"inactive for {_seconds(row.inactive_seconds)} (since {row.inactive_since}), "
            f"past half of idle_replication_slot_timeout ({_seconds(timeout)}): the first "
            f"checkpoint after that invalidates it; start the receiver")
    if problems:
        return CheckResult(name, Status.WARNING, f"{quoted}: " + "; ".join(problems), values)
    state = f"active (pid {row.active_pid}, our receiver)" if row.active else "inactive"
    wal = f", wal_status {row.wal_status}" if row.wal_status else ""
    safe = ("" if row.wal_status is None else
            ", safe_wal_size unlimited" if row.safe_wal_size is None
            else f", safe_wal_size {format_size(row.safe_wal_size)}")
    return CheckResult(name, Status.OK, f"{quoted} physical, {state}{wal}{safe}", values)


@dataclass(frozen=True)
class DiskUsage:
    """A file system's size and the space available to unprivileged users."""

    free: int
    total: int


def disk_usage(directory: str | os.PathLike[str]) -> DiskUsage:
    """``statvfs`` of *directory* (``f_bavail``: what a non-root receiver
    may use)."""
    st = os.statvfs(directory)
    return DiskUsage(free=st.f_bavail * st.f_frsize, total=st.f_blocks * st.f_frsize)


def check_disk(usage: DiskUsage | None, segment_size: int, thresholds: Thresholds,
               error: str | None = None) -> CheckResult:
    """Item **disk**: free space of the directory's file system."""
    name = "disk"
    if usage is None:
        return _not_checked(name, error or "no file system")
    warning, critical = thresholds.free_limits(segment_size, usage.total)
    pct = 100.0 * usage.free / usage.total if usage.total else 0.0
    values = {"free_bytes": usage.free, "total_bytes": usage.total,
              "free_percent": round(pct, 2), "warning_bytes": warning,
              "critical_bytes": critical, "segment_size": segment_size}
    have = f"{format_size(usage.free)} free of {format_size(usage.total)} ({pct:.0f} %)"
    todo = "free some space or move the directory to a larger file system"
    if usage.free < critical:
        return CheckResult(name, Status.CRITICAL,
                           f"{have}, below {format_size(critical)}: the next "
                           f"{format_size(segment_size)} segment may not fit; {todo}", values)
    if usage.free < warning:
        return CheckResult(name, Status.WARNING,
                           f"{have}, below the warning threshold {format_size(warning)}; "
                           f"{todo}", values)
    return CheckResult(name, Status.OK, have, values)


def check_directory(directory: Path, facts: ServerFacts | None) -> CheckResult:
    """Item **directory**: it exists and is writable, and the WAL in it is
    the server's: its recorded identity (``.walfast/identity``), else the
    newest segment's page header (a directory pg_receivewal wrote), as
    ``walfast receive`` checks before it writes anything
    (:func:`walfast.waldir.identity.find_identity`)."""
    name = "directory"
    values: dict[str, Any] = {"path": str(directory)}
    if not directory.exists():
        return CheckResult(name, Status.CRITICAL,
                           f'"{directory}" does not exist: create it, owned by the user the '
                           f"receiver runs as", dict(values, exists=False))
    if not directory.is_dir():
        return CheckResult(name, Status.CRITICAL,
                           f'"{directory}" is not a directory: give -D a directory',
                           dict(values, exists=True))
    values["exists"] = True
    writable = os.access(directory, os.W_OK | os.X_OK)
    values["writable"] = writable
    if not writable:
        import getpass

        return CheckResult(name, Status.CRITICAL,
                           f'"{directory}" is not writable by {getpass.getuser()}: fix its '
                           f"owner or mode (run the check as the receiver's user)", values)
    try:
        found = find_identity(directory)
    except (WalfastError, OSError) as e:
        return CheckResult(name, Status.CRITICAL, _one_line(str(e)), values)
    if found is not None:
        values["identity"] = {"source": found[0],
                              "system_identifier": str(found[1].system_identifier),
                              "wal_segment_size": found[1].wal_segment_size,
                              "wal_block_size": found[1].wal_block_size}
    if facts is None:
        return CheckResult(name, Status.WARNING, "writable; not checked whether it holds this "
                           "server's WAL: no connection", values, checked=False)
    if found is None:
        return CheckResult(name, Status.OK, "writable, no WAL received yet", values)
    source, ident = found
    server = DirectoryIdentity(facts.system_identifier, facts.segment_size, facts.block_size)
    diff = ident.differences(server)
    if diff:
        ours = ", ".join(f"{what} {mine}" for what, mine, _ in diff)
        theirs = ", ".join(f"{what} {other}" for what, _, other in diff)
        return CheckResult(name, Status.CRITICAL,
                           f"holds WAL of another cluster or segment size: {source} {ours}, "
                           f"the server has {theirs}; point -D at this server's directory or "
                           f"-d at this directory's server", values)
    return CheckResult(name, Status.OK,
                       f"writable, its WAL is the server's (system identifier "
                       f"{ident.system_identifier}, {format_size(ident.wal_segment_size)} "
                       f"segments)", values)


def check_receiver(snapshot: ProgressSnapshot | None, error: str | None,
                   server_lsn: int | None, thresholds: Thresholds, directory: Path,
                   now: float | None = None) -> CheckResult:
    """Item **receiver**: a receiver runs in the directory and hears from
    the server.

    Silence (time since the last message) only counts while the server has
    WAL the receiver has not written: an idle primary sends nothing to a
    receiver that keeps sending status updates (its walsender pings only
    after wal_sender_timeout/2 without a reply).  Without a server position
    it counts regardless.
    """
    name = "receiver"
    if snapshot is None:
        return CheckResult(name, Status.CRITICAL,
                           f"none has run in this directory ({error}): start walfast receive "
                           f'-D "{directory}"', {"running": False})
    s = snapshot
    now = time.time() if now is None else now
    last = s.last_msg_receipt_time or s.start_time
    silent = None if last is None else max(0.0, now - last)
    idle = server_lsn is not None and s.written_lsn >= server_lsn
    values: dict[str, Any] = {
        "running": s.running, "state": s.status, "pid": s.pid,
        "silent_seconds": None if silent is None else round(silent, 3),
        "last_msg_receipt_time": s.last_msg_receipt_time, "server_idle": idle,
        "warning_silent": thresholds.warning_silent,
        "critical_silent": thresholds.critical_silent}
    if not s.running:
        when = f", last update {_utc(s.update_time)}" if s.update_time else ""
        return CheckResult(name, Status.CRITICAL,
                           f"not running (last pid {s.pid}{when}): start walfast receive -D "
                           f'"{directory}"', values)
    head = f"{s.state}, pid {s.pid}"
    if s.state == "waiting":
        return CheckResult(name, Status.WARNING,
                           f"{head}: lost its connection and is retrying every 5 s "
                           f"({s.reconnects} reconnects so far); see its log", values)
    if s.state == "stopping":
        return CheckResult(name, Status.WARNING, f"{head}: it is shutting down", values)
    if silent is None:
        return CheckResult(name, Status.OK, f"{head}, no message yet", values)
    heard = (f"last message {_seconds(silent)} ago" if s.last_msg_receipt_time
             else f"no message in the {_seconds(silent)} since it started")
    if idle:
        return CheckResult(name, Status.OK,
                           f"{head}, {heard}, nothing to receive: it has all WAL up to the "
                           f"server's {format_lsn(server_lsn or 0)}", values)
    todo = ("the connection may be half-open or the walsender stuck: look at "
            "pg_stat_replication and the receiver's log; restarting the receiver reconnects")
    if silent > thresholds.critical_silent:
        return CheckResult(name, Status.CRITICAL,
                           f"{head}, {heard} (more than {_seconds(thresholds.critical_silent)})"
                           f" while the server has more WAL; {todo}", values)
    if silent > thresholds.warning_silent:
        return CheckResult(name, Status.WARNING,
                           f"{head}, {heard} (more than {_seconds(thresholds.warning_silent)})"
                           f" while the server has more WAL; {todo}", values)
    return CheckResult(name, Status.OK, f"{head}, {heard}", values)


def check_behind(snapshot: ProgressSnapshot | None, server_lsn: int | None,
                 segment_size: int, thresholds: Thresholds) -> CheckResult:
    """Item **behind**: how far the written and the flushed WAL are behind
    the server's position.  Judged on the flushed position (what would
    survive a crash); on the written one for a --no-sync receiver, which
    never flushes."""
    name = "behind"
    if server_lsn is None:
        return _not_checked(name, "no server position (no connection)")
    if snapshot is None:
        return _not_checked(name, "no progress state in the directory")
    s = snapshot
    written = max(0, server_lsn - s.written_lsn)
    flushed = max(0, server_lsn - s.flushed_lsn) if s.sync else None
    judged = written if flushed is None else flushed
    warning, critical = thresholds.behind_limits(segment_size)
    values = {"server_lsn": format_lsn(server_lsn), "written_lsn": format_lsn(s.written_lsn),
              "flushed_lsn": format_lsn(s.flushed_lsn) if s.sync else None,
              "written_behind_bytes": written, "flushed_behind_bytes": flushed,
              "behind_segments": round(judged / segment_size, 2),
              "warning_bytes": warning, "critical_bytes": critical}
    text = f"written {format_size(written)}"
    if flushed is None:
        text += " behind (--no-sync: nothing is flushed)"
    else:
        text += f", flushed {format_size(flushed)} ({_segments(flushed, segment_size)}) behind"
    text += f" the server's {format_lsn(server_lsn)}"
    what = "written" if flushed is None else "flushed"
    todo = ("no receiver is running to catch up (see receiver)" if not s.running else
            "expected while it catches up after a stop; otherwise look at its log, the "
            "network and the disk")
    if judged > critical:
        return CheckResult(name, Status.CRITICAL,
                           f"{text}: more than {format_size(critical)} {what} behind; {todo}",
                           values)
    if judged > warning:
        return CheckResult(name, Status.WARNING,
                           f"{text}: more than {format_size(warning)} {what} behind; {todo}",
                           values)
    return CheckResult(name, Status.OK, text, values)


# --------------------------------------------------------------------------- #
# running them
# --------------------------------------------------------------------------- #

@dataclass(frozen=True)
class CheckOptions:
    """What the command line asked for."""

    directory: Path
    conninfo: str = ""
    slot: str | None = None
    thresholds: Thresholds = Thresholds()
    #: The connection options as given (-d/-h/-p/-U), for the commands the
    #: items suggest; -d's value is never repeated (it may hold a password).
    conn_args: tuple[str, ...] = ()
    json: bool = False


def _read_receiver(directory: Path) -> tuple[ProgressSnapshot | None, str | None]:
    """The progress state, or why there is none."""
    from walfast.monitor.progress import state_path

    try:
        return read_progress(directory), None
    except ProgressStateError as e:
        if not state_path(directory).exists():
            return None, f"no {layout.STATE_DIR}/{layout.PROGRESS}"
        return None, _one_line(str(e))
    except OSError as e:
        return None, _one_line(str(e))


def _settled(directory: Path, snapshot: ProgressSnapshot, server_lsn: int,
             warning_silent: float) -> ProgressSnapshot:
    """Re-read the progress state for up to :data:`SETTLE_SECONDS` while the
    receiver looks silent and behind the server (WAL committed just before
    the check may be on its way)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    s = snapshot
    while (s.running and s.written_lsn < server_lsn
           and time.time() - (s.last_msg_receipt_time or s.start_time or 0) > warning_silent
           and time.monotonic() < deadline):
        time.sleep(0.05)
        try:
            s = read_progress(directory)
        except (ProgressStateError, OSError):
            break
    return s


def run_checks(options: CheckOptions) -> list[CheckResult]:
    """Probe and evaluate every item, in the order they are printed."""
    t = options.thresholds
    repl, conn = probe_replication(options.conninfo)
    try:
        receiver, receiver_error = _read_receiver(options.directory)
        slot, from_receiver = options.slot, False
        if slot is None and receiver is not None and receiver.slot_name:
            slot, from_receiver = receiver.slot_name, True
        if repl.facts is None and not repl.reachable:
            sql = SqlProbe(error="the server cannot be reached (see connection)")
        else:
            sql = probe_sql(options.conninfo, slot, exclude_pid=repl.backend_pid)
    finally:
        if conn is not None:
            conn.close()
    facts = repl.facts
    server_lsn = facts.xlogpos if facts is not None else None
    if receiver is not None and server_lsn is not None:
        receiver = _settled(options.directory, receiver, server_lsn, t.warning_silent)
    segment_size = _segment_size(options.directory, facts, receiver)
    try:
        usage, disk_error = disk_usage(options.directory), None
    except OSError as e:
        usage, disk_error = None, f"{e.strerror or e} ({options.directory})"
    connected = receiver is not None and receiver.running and receiver.state == "streaming"
    return [check_connection(repl), check_role(repl, sql),
            check_wal_senders(sql, connected),
            check_slot(slot, sql, receiver, segment_size, t, conn_args=options.conn_args,
                       from_receiver=from_receiver),
            check_disk(usage, segment_size, t, disk_error),
            check_directory(options.directory, facts),
            check_receiver(receiver, receiver_error, server_lsn, t, options.directory),
            check_behind(receiver, server_lsn, segment_size, t)]


def _segment_size(directory: Path, facts: ServerFacts | None,
                  receiver: ProgressSnapshot | None) -> int:
    if facts is not None:
        return facts.segment_size
    try:
        ident = read_identity(directory)
    except (WalfastError, OSError):
        ident = None
    if ident is not None:
        return ident.wal_segment_size
    if receiver is not None and receiver.segment_size:
        return receiver.segment_size
    return DEFAULT_SEGMENT_SIZE


def format_report(directory: Path, results: Sequence[CheckResult]) -> str:
    """The human form: a header, one line per item, the overall status."""
    worst = overall(results)
    bad = [r.name for r in results if r.status is not Status.OK]
    tail = f" ({', '.join(bad)})" if bad else ""
    return "\n".join([f'walfast check "{directory}":', *(r.line() for r in results),
                      f"overall: {worst.name}{tail}"])


# --------------------------------------------------------------------------- #
# the command line
# --------------------------------------------------------------------------- #

_EPILOG = """\
items:
  connection        a physical replication connection works (IDENTIFY_SYSTEM)
  replication role  the role has REPLICATION or is a superuser (SQL)
  max_wal_senders   a walsender is free for the receiver (SQL)
  slot              -S (else the receiver's slot) exists, is physical, is not
                    held by another connection, still has its WAL; on
                    PostgreSQL 18 not idle past idle_replication_slot_timeout/2
  disk              free space on DIR's file system
  directory         DIR is writable and holds this server's WAL (.walfast/identity)
  receiver          a walfast receiver runs in DIR and hears from the server
  behind            how far the written and flushed WAL trail the server

The SQL items use a normal connection with the same options (its dbname, else
libpq's default, else postgres); when only replication connections are
allowed they are WARNING "not checked".  connect_timeout is 10 s unless the
conninfo or PGCONNECT_TIMEOUT sets one.  Run the check as the user the
receiver runs as (the directory must be writable by it).

exit status (Nagios plugin convention):
  0  every item OK
  1  some item WARNING, or a usage error (as every walfast command)
  2  some item CRITICAL
"""


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=PROG, add_help=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s -D DIR [-d CONNSTR] [-h HOST] [-p PORT] [-U USER]\n"
              "                     [-S SLOT] [--json] [THRESHOLDS]",
        description="Check that the walfast receiver writing into DIR, its server and its slot\n"
                    "are healthy, as barman check does: one line per item (OK, WARNING or\n"
                    "CRITICAL, with what is wrong and what to do), then the overall status.",
        epilog=_EPILOG)
    p.add_argument("-?", "--help", action="help", help="show this help, then exit")
    p.add_argument("-D", "--directory", metavar="DIR", required=True,
                   help="the receiver's output directory (its -D)")
    p.add_argument("-S", "--slot", metavar="SLOT",
                   help="the replication slot the receiver uses (default: the running "
                        "receiver's, if any)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: every item with its values, and the "
                        "overall status")
    c = p.add_argument_group(
        "connection options (as walfast receive's: libpq conninfo or URI, PG* variables, "
        "~/.pgpass)")
    c.add_argument("-d", "--dbname", metavar="CONNSTR", help="connection string")
    c.add_argument("-h", "--host", metavar="HOSTNAME",
                   help="database server host or socket directory")
    c.add_argument("-p", "--port", metavar="PORT", help="database server port number")
    c.add_argument("-U", "--username", metavar="NAME", help="connect as specified user")
    t = p.add_argument_group("thresholds (SIZE: a number with bytes, kB, MB, GB or TB)")
    t.add_argument("--warning-free", metavar="SIZE|N%", type=_limit,
                   help="free space below which disk is WARNING (default: 5%% of the file "
                        "system, at least 10 segments)")
    t.add_argument("--critical-free", metavar="SIZE|N%", type=_limit,
                   help="free space below which disk is CRITICAL (default: one segment "
                        "plus 1 MB)")
    t.add_argument("--warning-silent", metavar="SECS", type=_seconds_arg, default=60.0,
                   help="receiver WARNING after this long without a message while the "
                        "server has more WAL (default: 60, wal_receiver_timeout's default)")
    t.add_argument("--critical-silent", metavar="SECS", type=_seconds_arg, default=300.0,
                   help="receiver CRITICAL after this long (default: 300)")
    t.add_argument("--warning-behind", metavar="SIZE", type=_size_arg,
                   help="behind WARNING when the flushed WAL trails the server by more "
                        "(default: 2 segments)")
    t.add_argument("--critical-behind", metavar="SIZE", type=_size_arg,
                   help="behind CRITICAL when it trails by more (default: 8 segments)")
    t.add_argument("--warning-safe-wal", metavar="SIZE", type=_size_arg,
                   help="slot WARNING when its safe_wal_size is below (default: 4 segments)")
    return p


def _limit(text: str) -> SizeLimit:
    try:
        return SizeLimit.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'invalid number of seconds "{text}"') from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f'invalid number of seconds "{text}"')
    return value


def parse_args(argv: Sequence[str]) -> CheckOptions:
    """The command line as :class:`CheckOptions`; raises :class:`UsageError`."""
    args = build_parser().parse_args(argv)
    if args.warning_silent > args.critical_silent:
        raise UsageError(f"--warning-silent ({args.warning_silent:g}) must not exceed "
                         f"--critical-silent ({args.critical_silent:g})")
    if args.warning_behind is not None and args.critical_behind is not None \
            and args.warning_behind > args.critical_behind:
        raise UsageError("--warning-behind must not exceed --critical-behind")
    import psycopg

    try:
        conninfo = psycopg.conninfo.make_conninfo(
            args.dbname or "", host=args.host, port=args.port, user=args.username)
    except psycopg.Error as e:
        raise UsageError(f"invalid connection string: {_one_line(str(e))}") from None
    conn_args: list[str] = []
    for flag, value in (("-d", args.dbname and "CONNSTR"), ("-h", args.host),
                        ("-p", args.port), ("-U", args.username)):
        if value:
            conn_args += [flag, value]
    return CheckOptions(
        directory=Path(args.directory), conninfo=conninfo, slot=args.slot,
        conn_args=tuple(conn_args), json=args.json,
        thresholds=Thresholds(
            warning_free=args.warning_free, critical_free=args.critical_free,
            warning_silent=args.warning_silent, critical_silent=args.critical_silent,
            warning_behind=args.warning_behind, critical_behind=args.critical_behind,
            warning_safe_wal=args.warning_safe_wal))


def main(argv: Sequence[str]) -> int:
    """``walfast check ARGS`` (*argv* without the command name); returns the
    exit status (:class:`Status`, 1 also for a usage error)."""
    try:
        options = parse_args(argv)
    except UsageError as e:
        return print_usage_error(e, progname="walfast", command=PROG)
    results = run_checks(options)
    worst = overall(results)
    if options.json:
        print(json.dumps({"directory": str(options.directory), "status": worst.name,
                          "exit_code": int(worst),
                          "items": [r.to_json() for r in results]}, indent=2))
    else:
        print(format_report(options.directory, results))
    return int(worst)
