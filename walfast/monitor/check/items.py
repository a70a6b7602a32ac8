"""The items of ``walfast check``: one function per item turns probed
values into a :class:`~walfast.monitor.check.results.CheckResult`, saying
what is wrong and what to do in one line.  No I/O except
:func:`check_directory`, which looks at the directory itself.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from walfast.errors import WalfastError
from walfast.lsn import MAX_SEGMENT_SIZE, format_lsn
from walfast.monitor.check.probes import DiskUsage, ReplicationProbe, SqlProbe
from walfast.monitor.check.results import (
    CheckResult, Status, Thresholds, not_checked, one_line, seconds_text, segments_text, utc_text,
)
from walfast.monitor.progress import ProgressSnapshot
from walfast.monitor.status import format_size
from walfast.waldir.identity import DirectoryIdentity, find_identity

if TYPE_CHECKING:
    from walfast.replication.commands import ServerFacts

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
    return not_checked(name, sql.error or "no SQL connection")


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
            f"inactive for {seconds_text(row.inactive_seconds)} (since {row.inactive_since}), "
            f"past half of idle_replication_slot_timeout ({seconds_text(timeout)}): the first "
            f"checkpoint after that invalidates it; start the receiver")
    if problems:
        return CheckResult(name, Status.WARNING, f"{quoted}: " + "; ".join(problems), values)
    state = f"active (pid {row.active_pid}, our receiver)" if row.active else "inactive"
    wal = f", wal_status {row.wal_status}" if row.wal_status else ""
    safe = ("" if row.wal_status is None else
            ", safe_wal_size unlimited" if row.safe_wal_size is None
            else f", safe_wal_size {format_size(row.safe_wal_size)}")
    return CheckResult(name, Status.OK, f"{quoted} physical, {state}{wal}{safe}", values)


def check_disk(usage: DiskUsage | None, segment_size: int | None, thresholds: Thresholds,
               error: str | None = None) -> CheckResult:
    """Item **disk**: free space of the directory's file system.  With
    *segment_size* None (the server was not reached and nothing was received
    yet) the defaults are judged with the largest segment a server can have."""
    name = "disk"
    if usage is None:
        return not_checked(name, error or "no file system")
    known = segment_size is not None
    segment_size = segment_size if segment_size is not None else MAX_SEGMENT_SIZE
    warning, critical = thresholds.free_limits(segment_size, usage.total)
    pct = 100.0 * usage.free / usage.total if usage.total else 0.0
    values = {"free_bytes": usage.free, "total_bytes": usage.total,
              "free_percent": round(pct, 2), "warning_bytes": warning,
              "critical_bytes": critical, "segment_size": segment_size if known else None}
    have = f"{format_size(usage.free)} free of {format_size(usage.total)} ({pct:.0f} %)"
    todo = "free some space or move the directory to a larger file system"
    if usage.free < critical:
        return CheckResult(name, Status.CRITICAL,
                           f"{have}, below {format_size(critical)}: the next "
                           + (f"{format_size(segment_size)} segment" if known else
                              "segment (its size is not known: up to "
                              f"{format_size(segment_size)})")
                           + f" may not fit; {todo}", values)
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
        return CheckResult(name, Status.CRITICAL, one_line(str(e)), values)
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
        when = f", last update {utc_text(s.update_time)}" if s.update_time else ""
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
    heard = (f"last message {seconds_text(silent)} ago" if s.last_msg_receipt_time
             else f"no message in the {seconds_text(silent)} since it started")
    if idle:
        return CheckResult(name, Status.OK,
                           f"{head}, {heard}, nothing to receive: it has all WAL up to the "
                           f"server's {format_lsn(server_lsn or 0)}", values)
    todo = ("the connection may be half-open or the walsender stuck: look at "
            "pg_stat_replication and the receiver's log; restarting the receiver reconnects")
    if silent > thresholds.critical_silent:
        return CheckResult(name, Status.CRITICAL,
                           f"{head}, {heard} (more than {seconds_text(thresholds.critical_silent)})"
                           f" while the server has more WAL; {todo}", values)
    if silent > thresholds.warning_silent:
        return CheckResult(name, Status.WARNING,
                           f"{head}, {heard} (more than {seconds_text(thresholds.warning_silent)})"
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
        return not_checked(name, "no server position (no connection)")
    if snapshot is None:
        return not_checked(name, "no progress state in the directory")
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
        text += f", flushed {format_size(flushed)} ({segments_text(flushed, segment_size)}) behind"
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


