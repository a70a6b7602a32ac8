"""The ``walfast`` command line.

``walfast receive`` streams WAL into a directory with pg_receivewal's core
options and behaviour (messages, exit codes).  This is the only module that
configures logging: the library only logs to the ``walfast`` logger.

Exit status: 0 when stopped by SIGINT/SIGTERM or when ``--endpos`` was
reached; 1 on any error (one line on stderr, never a traceback for a user
mistake) and on a lost connection with ``--no-loop``.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import re
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import psycopg

from walfast import __version__
from walfast.errors import WalfastError
from walfast.lsn import parse_lsn
from walfast.segments import check_directory
from walfast.status import ReceiveExtras
from walfast.stream import (
    NOTICE,
    ReceiveOutcome,
    StreamOptions,
    error_text,
    receive_to_directory,
)

PROG = "walfast"
log = logging.getLogger("walfast")


class UsageError(Exception):
    """A command-line mistake: reported with a hint to --help, exit 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> "NoReturn":  # type: ignore[name-defined]  # noqa: F821
        raise UsageError(message)


def _receive_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = sub.add_parser(
        "receive",
        add_help=False,
        help="stream WAL from a server into a directory (like pg_receivewal)",
        description="Receive PostgreSQL write-ahead logs into a directory, as pg_receivewal "
        "does: segment files byte-identical to the server's, the incomplete one named "
        ".partial. Connection options follow libpq (PG* environment variables and "
        ".pgpass work).",
    )
    g = p.add_argument_group("Options")
    g.add_argument("-D", "--directory", metavar="DIR", help="receive write-ahead log files into this directory (must exist)")
    g.add_argument("-E", "--endpos", metavar="LSN", help="exit after receiving the specified LSN")
    g.add_argument("-n", "--no-loop", action="store_true", help="do not loop on connection lost")
    g.add_argument("--no-sync", action="store_true", help="do not wait for changes to be written safely to disk")
    g.add_argument("-s", "--status-interval", metavar="SECS", default="10",
                   help="time between status packets sent to server (default: 10)")
    g.add_argument("-S", "--slot", metavar="SLOTNAME", help="replication slot to use")
    g.add_argument("--synchronous", action="store_true", help="flush write-ahead log immediately after writing")
    g.add_argument("-v", "--verbose", action="store_true", help="output verbose messages")
    # Issue 7 (walfast.status / walfast.metrics): metrics endpoint, catch-up bar.
    g.add_argument("--metrics-address", metavar="[HOST:]PORT",
                   help="serve Prometheus metrics there (PORT alone: 127.0.0.1; default: off)")
    g.add_argument("--no-progress", action="store_true",
                   help="no progress bar while catching up (shown on a terminal only)")
    g.add_argument("-?", "--help", action="help", help="show this help, then exit")
    c = p.add_argument_group("Connection options")
    c.add_argument("-d", "--dbname", metavar="CONNSTR", default="", help="connection string")
    c.add_argument("-h", "--host", metavar="HOSTNAME", help="database server host or socket directory")
    c.add_argument("-p", "--port", metavar="PORT", help="database server port number")
    c.add_argument("-U", "--username", metavar="NAME", help="connect as specified database user")
    c.add_argument("-w", "--no-password", action="store_true", help="never prompt for password")
    c.add_argument("-W", "--password", action="store_true", help="force password prompt (should happen automatically)")
    assert isinstance(p, argparse.ArgumentParser)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="walfast: a fast, durable PostgreSQL WAL receiver.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _receive_parser(sub)
    sub.add_parser("demo", add_help=False,
                   help="stream a throwaway local primary's WAL and check it (walfast demo --help)")
    sub.add_parser("status", add_help=False, help="show a receiver's progress (walfast status --help)")
    sub.add_parser("wait", add_help=False,
                   help="wait until a receiver has flushed an LSN (walfast wait --help)")
    return parser


class _StopFlag:
    """Set by SIGINT/SIGTERM; the receive loop checks it every tick."""

    def __init__(self) -> None:
        self.set = False

    def __call__(self) -> bool:
        return self.set

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.set = True


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger("walfast")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else NOTICE)
    root.propagate = False


class _Formatter(logging.Formatter):
    """pg_receivewal's style: ``walfast: message`` / ``walfast: error: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"{PROG}: error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"{PROG}: warning: {msg}"
        return f"{PROG}: {msg}"


def _fail(message: str, hint: bool = False) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    if hint:
        print(f'{PROG}: hint: Try "{PROG} receive --help" for more information.', file=sys.stderr)
    return 1


def _parse_int_option(value: str, name: str, lo: int, hi: int) -> int:
    """pg_receivewal's option_parse_int (strtol, base 10, trailing blanks
    allowed); raises UsageError with its messages."""
    text = value.rstrip()
    if not re.fullmatch(r"\s*[+-]?\d*", text) or text.strip() in ("+", "-"):
        raise UsageError(f'invalid value "{value}" for option {name}')
    number = int(text) if text.strip() else 0
    if not lo <= number <= hi:
        raise UsageError(f"{name} must be in range {lo}..{hi}")
    return number


def cmd_receive(args: argparse.Namespace) -> int:
    # pg_receivewal's order: option values (while parsing), stray arguments,
    # incompatible options, required options, then the directory.
    try:
        status_interval = _parse_int_option(
            args.status_interval, "-s/--status-interval", 0, 2147483647 // 1000)
    except UsageError as e:
        return _fail(str(e))
    endpos = None
    if args.endpos is not None:
        try:
            endpos = parse_lsn(args.endpos)
        except ValueError:
            return _fail(f'could not parse end position "{args.endpos}"')
    extra = getattr(args, "extra", [])
    if extra:
        return _fail(f'too many command-line arguments (first is "{extra[0]}")', hint=True)
    if args.synchronous and args.no_sync:
        return _fail("cannot use --synchronous together with --no-sync", hint=True)
    if not args.directory:
        return _fail("no target directory specified", hint=True)
    directory = Path(args.directory)
    try:
        check_directory(directory)
    except OSError as e:
        return _fail(f'could not open directory "{args.directory}": {e.strerror}')

    password = getpass.getpass("Password: ") if args.password and not args.no_password else None
    try:
        conninfo = psycopg.conninfo.make_conninfo(
            args.dbname, host=args.host, port=args.port, user=args.username, password=password,
        )
    except psycopg.Error as e:  # a malformed connection string
        return _fail(str(e).strip())
    options = StreamOptions(
        directory=directory, slot=args.slot, synchronous=args.synchronous,
        status_interval=float(status_interval), sync=not args.no_sync, endpos=endpos,
    )
    stop = _StopFlag()
    signal.signal(signal.SIGINT, stop.handler)
    signal.signal(signal.SIGTERM, stop.handler)
    try:  # issue 7: metrics endpoint and catch-up bar beside the loop
        extras = ReceiveExtras(directory, args.metrics_address, args.no_progress)
    except WalfastError as e:
        return _fail(str(e))
    try:
        outcome = receive_to_directory(conninfo, options, should_stop=stop,
                                       loop=not args.no_loop)
    except psycopg.Error as e:
        return _fail(error_text(e))
    except (WalfastError, OSError) as e:
        return _fail(str(e))
    finally:
        extras.close()
    if outcome is ReceiveOutcome.DISCONNECTED:
        return _fail("disconnected")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["demo"]:
        from walfast import demo

        return demo.main(argv[1:])
    if argv[:1] in (["status"], ["wait"]):  # issue 7
        from walfast import status

        return status.main(argv)
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except UsageError as e:
        return _fail(str(e), hint=True)
    options = [a for a in extra if a.startswith("-") and a != "-"]
    if options or (extra and args.command is None):
        return _fail(f"unrecognized arguments: {' '.join(options or extra)}", hint=True)
    args.extra = extra  # stray arguments: reported by the command, as pg_receivewal does
    if args.command is None:
        parser.print_help(sys.stderr)
        return 1
    _setup_logging(getattr(args, "verbose", False))
    try:
        return cmd_receive(args)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
