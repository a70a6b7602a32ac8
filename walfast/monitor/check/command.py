"""``walfast check``'s command line: options, running the probes and
items in order, the report."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from walfast.cli.usage import ArgumentParser, UsageError, parse_size, print_usage_error
from walfast.errors import WalfastError
from walfast.lsn import MAX_SEGMENT_SIZE
from walfast.monitor.check.items import (
    check_behind, check_connection, check_directory, check_disk, check_receiver, check_role,
    check_slot, check_wal_senders,
)
from walfast.monitor.check.probes import (
    SqlProbe, disk_usage, probe_replication, probe_sql, read_receiver, settled,
)
from walfast.monitor.check.results import (
    CheckResult, SizeLimit, Status, Thresholds, one_line, overall,
)
from walfast.monitor.progress import ProgressSnapshot
from walfast.waldir.identity import read_identity

if TYPE_CHECKING:
    from walfast.replication.commands import ServerFacts

PROG = "walfast check"

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


def run_checks(options: CheckOptions) -> list[CheckResult]:
    """Probe and evaluate every item, in the order they are printed."""
    t = options.thresholds
    repl, conn = probe_replication(options.conninfo)
    try:
        receiver, receiver_error = read_receiver(options.directory)
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
        receiver = settled(options.directory, receiver, server_lsn, t.warning_silent)
    segment_size = _segment_size(options.directory, facts, receiver)
    # Limits in segments, when the size is not known: the largest there is.
    limit_size = segment_size if segment_size is not None else MAX_SEGMENT_SIZE
    try:
        usage, disk_error = disk_usage(options.directory), None
    except OSError as e:
        usage, disk_error = None, f"{e.strerror or e} ({options.directory})"
    connected = receiver is not None and receiver.running and receiver.state == "streaming"
    return [check_connection(repl), check_role(repl, sql),
            check_wal_senders(sql, connected),
            check_slot(slot, sql, receiver, limit_size, t, conn_args=options.conn_args,
                       from_receiver=from_receiver),
            check_disk(usage, segment_size, t, disk_error),
            check_directory(options.directory, facts),
            check_receiver(receiver, receiver_error, server_lsn, t, options.directory),
            check_behind(receiver, server_lsn, limit_size, t)]


def _segment_size(directory: Path, facts: ServerFacts | None,
                  receiver: ProgressSnapshot | None) -> int | None:
    """The WAL segment size as the server, the directory's identity or the
    progress state tells it; None when none does (the server was not reached
    and nothing was received yet)."""
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
    return None


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
        raise UsageError(f"invalid connection string: {one_line(str(e))}") from None
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

