"""``walfast status`` and ``walfast wait``: a receiver's progress, read from outside.

Both read the receiver's shared progress state (:mod:`walfast.monitor.progress`)
and never talk to the receiver.  ``walfast wait`` is what another process
uses the way PostgreSQL's startup process uses the walreceiver's
``flushedUpto``: it returns once a position is durably flushed.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections.abc import Sequence

from walfast.archive.status import describe_archive, read_archive_status
from walfast.cli.usage import ArgumentParser, UsageError, print_usage_error
from walfast.errors import WalfastError
from walfast.lsn import format_lsn, parse_lsn
from walfast.monitor.progress import ProgressSnapshot, ProgressStateError, read_progress

__all__ = [
    "EXIT_ERROR", "EXIT_NOT_RUNNING", "EXIT_REACHED", "EXIT_TIMEOUT", "format_size",
    "format_status", "main", "wait_flushed",
]

PROG = "walfast"

#: ``walfast wait`` exit codes.
EXIT_REACHED = 0
EXIT_ERROR = 1
EXIT_TIMEOUT = 2
EXIT_NOT_RUNNING = 3


def _status_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=f"{PROG} status", description="Show the progress of the walfast "
                "receiver writing into DIR, from its shared progress state (no connection "
                "to the receiver or the server).")
    p.add_argument("directory", metavar="DIR", help="the receiver's output directory (-D)")
    p.add_argument("--json", action="store_true", help="print the state as one JSON object")
    return p


def _wait_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=f"{PROG} wait", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Wait until the walfast receiver writing into DIR has durably flushed "
        "(fdatasync'ed) the WAL up to LSN.",
        epilog=f"exit status:\n"
        f"  {EXIT_REACHED}  LSN is flushed\n"
        f"  {EXIT_ERROR}  error: no progress state in DIR, bad arguments, or the receiver\n"
        "     runs with --no-sync (it never flushes)\n"
        f"  {EXIT_TIMEOUT}  --timeout elapsed first\n"
        f"  {EXIT_NOT_RUNNING}  no receiver is running (or it stopped) before LSN was flushed\n\n"
        "Without --synchronous a receiver flushes at segment ends, at status updates\n"
        "(with a slot) and when it stops; --synchronous flushes every batch.")
    p.add_argument("directory", metavar="DIR", help="the receiver's output directory (-D)")
    p.add_argument("--lsn", required=True, metavar="X/X", help="the position to wait for")
    p.add_argument("--timeout", metavar="S", type=float, default=None,
                   help="give up after S seconds (default: wait as long as the receiver runs)")
    return p


def _utc(t: float | None) -> str:
    if t is None:
        return "never"
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def format_size(n: float) -> str:
    """As PostgreSQL's pg_size_pretty: 1024-based units, 16 MB segments."""
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if abs(n) < 10240 or unit == "TB":
            return f"{n:.0f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def format_status(s: ProgressSnapshot, directory: str) -> str:
    """The human form of ``walfast status``."""
    flushed = (f"{format_lsn(s.flushed_lsn)} (fdatasync'ed)" if s.sync
               else "none: the receiver runs with --no-sync")
    mean = f", mean {s.flush_time / s.flushes * 1000:.2f} ms" if s.flushes else ""
    sender = s.sender_host + (f":{s.sender_port}" if s.sender_port else "")
    rows = [
        ("system identifier", str(s.system_identifier)),
        ("timeline", f"{s.received_tli} (started at {format_lsn(s.receive_start_lsn)} "
                     f"on timeline {s.receive_start_tli})"),
        ("written", format_lsn(s.written_lsn)),
        ("flushed", flushed),
        ("primary's WAL end", f"{format_lsn(s.latest_end_lsn)} (advanced "
                              f"{_utc(s.latest_end_time)})"),
        ("behind", _behind(s)),
        ("last message", f"sent {_utc(s.last_msg_send_time)}, "
                         f"received {_utc(s.last_msg_receipt_time)}{_ago(s)}"),
        ("segment size", format_size(s.segment_size)),
        ("slot", s.slot_name or "(none)"),
        ("sender", sender or "(not connected yet)"),
        ("received", f"{s.messages} messages, {format_size(s.wal_bytes)} of WAL, "
                     f"{s.segments_completed} segments completed"),
        ("flushes", f"{s.flushes}{mean}; {s.status_updates} status updates, "
                    f"{s.reconnects} reconnects"),
        ("started", _utc(s.start_time)),
        ("updated", _utc(s.update_time)),
    ]
    archive = read_archive_status(directory)
    if archive is not None:
        rows.append(("archive", describe_archive(archive)))
    head = f'walfast receiver in "{directory}": {s.status} (pid {s.pid})'
    return "\n".join([head] + [f"  {k:<19} {v}" for k, v in rows])


def _ago(s: ProgressSnapshot) -> str:
    silence = s.silence_seconds()
    return "" if silence is None else f" ({silence:.1f} s ago)"


def _behind(s: ProgressSnapshot) -> str:
    """The lag, or why it cannot be told (never "0 bytes" for a server that
    stopped talking)."""
    if s.state == "silent":
        return (f"unknown: no message from the server for {s.silence_seconds() or 0:.1f} s "
                f"(a reply was asked for; the connection is given up at the receive timeout)")
    if s.state == "paused":
        return "unknown: receiving is paused (no space for the next segment file)"
    return f"{format_size(s.lag_bytes)}, {s.lag_seconds():.3f} s"


def _err(message: str) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)


def cmd_status(argv: Sequence[str]) -> int:
    args = _status_parser().parse_args(argv)
    try:
        s = read_progress(args.directory)
    except (ProgressStateError, OSError) as e:
        _err(str(e))
        return EXIT_ERROR
    if args.json:
        out = s.to_json()
        archive = read_archive_status(args.directory)
        if archive is not None:
            out["archive"] = archive
        print(json.dumps(out, indent=2))
    else:
        print(format_status(s, args.directory))
    return 0


def wait_flushed(directory: str | os.PathLike[str], lsn: int, timeout: float | None = None,
                 interval: float = 0.01) -> tuple[int, ProgressSnapshot]:
    """Wait until *lsn* is flushed by the receiver writing into *directory*.

    Returns (exit code, last snapshot): :data:`EXIT_REACHED`,
    :data:`EXIT_TIMEOUT` or :data:`EXIT_NOT_RUNNING`.  Raises
    :class:`ProgressStateError` when there is no state, :class:`WalfastError`
    when the receiver runs with --no-sync.  Polls every *interval* seconds
    (the state is a file: reading it costs one pread); whether the receiver
    still runs is checked every quarter second.
    """
    start = time.monotonic()
    deadline = None if timeout is None else start + timeout
    s = read_progress(directory)
    next_probe = start + 0.25
    while True:
        if not s.sync:
            raise WalfastError(f'the receiver in "{directory}" runs with --no-sync: it never '
                               "flushes, so no position is ever durably flushed")
        if s.flushed_lsn >= lsn:
            return EXIT_REACHED, s
        if not s.running:
            return EXIT_NOT_RUNNING, s
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return EXIT_TIMEOUT, s
        time.sleep(interval if deadline is None else max(0.0, min(interval, deadline - now)))
        probe = time.monotonic() >= next_probe
        if probe:
            next_probe = time.monotonic() + 0.25
        s = read_progress(directory, check_running=probe)


def cmd_wait(argv: Sequence[str]) -> int:
    args = _wait_parser().parse_args(argv)
    try:
        lsn = parse_lsn(args.lsn)
    except ValueError:
        raise UsageError(f'invalid LSN "{args.lsn}": expected X/X (hexadecimal)') from None
    if args.timeout is not None and args.timeout < 0:
        raise UsageError("--timeout must be >= 0")
    try:
        code, s = wait_flushed(args.directory, lsn, args.timeout)
    except (WalfastError, OSError) as e:
        _err(str(e))
        return EXIT_ERROR
    if code == EXIT_TIMEOUT:
        _err(f"timed out after {args.timeout:g} s waiting for {format_lsn(lsn)} to be flushed "
             f"(flushed up to {format_lsn(s.flushed_lsn)})")
    elif code == EXIT_NOT_RUNNING:
        _err(f'no walfast receiver is running in "{args.directory}" (state {s.state}); '
             f"{format_lsn(lsn)} is not flushed (flushed up to {format_lsn(s.flushed_lsn)})")
    return code


def main(argv: Sequence[str]) -> int:
    """``walfast status ...`` / ``walfast wait ...`` (argv[0] is the command)."""
    command, rest = argv[0], list(argv[1:])
    try:
        return cmd_status(rest) if command == "status" else cmd_wait(rest)
    except UsageError as e:
        return print_usage_error(e, progname=PROG, command=f"{PROG} {command}")
