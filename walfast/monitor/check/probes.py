"""Probes: what ``walfast check`` collects before judging anything.

The replication connection (:func:`probe_replication`: ``IDENTIFY_SYSTEM``
and the sizes, :func:`walfast.replication.commands.server_facts`), a normal
SQL connection (:func:`probe_sql`: the role, walsenders in use, the slot's
row; every version-dependent query is built in :func:`slot_query` and
:func:`idle_timeout_query`), the file system (:func:`disk_usage`) and the
receiver's progress state (:func:`read_receiver`).  psycopg is imported
only when a connection is made.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from walfast import majors
from walfast.errors import WalfastError
from walfast.lsn import parse_lsn
from walfast.monitor.check.results import libpq_message, one_line
from walfast.monitor.progress import ProgressSnapshot, ProgressStateError, read_progress
from walfast.waldir import layout

if TYPE_CHECKING:
    import psycopg

    from walfast.replication.commands import ServerFacts

#: libpq's connect_timeout when neither the conninfo nor PGCONNECT_TIMEOUT
#: sets one (libpq's own default is to wait forever).
DEFAULT_CONNECT_TIMEOUT = 10
#: A check's SQL statements give up after this long (a hung server).
STATEMENT_TIMEOUT_MS = 10_000
#: How long the receiver item waits for a message when the receiver looks
#: silent while the server has WAL it has not got: a commit made just
#: before the check reaches the receiver in milliseconds.
SETTLE_SECONDS = 1.0

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
# in one place; which major has which is walfast.majors' table (13 added
# wal_status and safe_wal_size; 17 inactive_since and invalidation_reason;
# 18 idle_replication_slot_timeout).
def _major(server_version: int) -> majors.MajorFacts:
    return majors.facts(majors.major_of(server_version))


def slot_query(server_version: int) -> str:
    """The ``pg_replication_slots`` query for a server of *server_version*
    (``server_version_num``): :class:`SlotRow`'s columns, NULL where the
    server has none, joined with ``pg_stat_replication`` for the holder.
    One parameter: the slot name."""
    cols = ["s.slot_name", "s.slot_type", "s.active", "s.active_pid", "s.restart_lsn::text"]
    if _major(server_version).slot_wal_status:
        cols += ["s.wal_status", "s.safe_wal_size"]
    else:
        cols += ["NULL::text", "NULL::bigint"]
    if _major(server_version).slot_inactive_since:
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
    if not _major(server_version).idle_replication_slot_timeout:
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
        msg = libpq_message(e)
        return ReplicationProbe(error=msg, reachable=not any(s in msg for s in _UNREACHABLE)), None
    except WalfastError as e:
        return ReplicationProbe(error=one_line(str(e))), None
    try:
        facts = server_facts(conn)
    except (psycopg.Error, WalfastError) as e:
        conn.close()
        return ReplicationProbe(error=libpq_message(e)), None
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
            first_error = first_error or libpq_message(e)
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
        return SqlProbe(error=f"SQL failed ({libpq_message(e)})")
    return SqlProbe(server_version=version, role=role, senders=senders, slot=slot_row,
                    idle_timeout=idle_timeout)



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




def read_receiver(directory: Path) -> tuple[ProgressSnapshot | None, str | None]:
    """The progress state, or why there is none."""
    from walfast.monitor.progress import state_path

    try:
        return read_progress(directory), None
    except ProgressStateError as e:
        if not state_path(directory).exists():
            return None, f"no {layout.STATE_DIR}/{layout.PROGRESS}"
        return None, one_line(str(e))
    except OSError as e:
        return None, one_line(str(e))


def settled(directory: Path, snapshot: ProgressSnapshot, server_lsn: int,
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


