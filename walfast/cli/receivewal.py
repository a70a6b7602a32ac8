"""pg_receivewal's command line, for ``walfast-receivewal`` and ``walfast receive``.

``walfast-receivewal ARGS`` behaves as ``pg_receivewal ARGS`` (PostgreSQL
15-18): the same options, parsed as glibc's ``getopt_long`` parses them
(abbreviated long options, clustered short options, operands anywhere), the
same checks in the same order, the same messages after the program name and
the same exit codes.  ``walfast receive ARGS`` (:mod:`walfast.cli`) is the
same program under walfast's own name.  The two front ends share everything
here and differ only in the names they print (:class:`Frontend`).

The order of checks is pg_receivewal.c's ``main()``:

1. ``--help``/``-?`` and ``--version``/``-V``, honoured only as the first
   argument (elsewhere ``--help`` gets just the hint, ``-?`` and ``-V`` are
   invalid options);
2. each option as it comes: ``-E`` and ``-s`` values are checked at once;
3. operands, ``--create-slot`` with ``--drop-slot``, a slot for either,
   ``--synchronous`` with ``--no-sync``, a target directory;
4. ``-Z`` (see :func:`walfast.cli.compress_option.parse_compress_option`);
5. the directory (not for ``--create-slot``/``--drop-slot``);
6. then connecting, ``IDENTIFY_SYSTEM``, the slot action or streaming.

Deliberate differences from pg_receivewal: ``-Z zstd`` is accepted; the
first line of ``--version`` names walfast after the PostgreSQL version it
stands for (:data:`walfast.majors.NEWEST_TESTED_MAJOR`); ``--help`` ends with walfast's lines
instead of PostgreSQL's bug-report address.

Exit status: 0 after ``--help``/``--version``, a slot action, SIGINT/SIGTERM
or ``--endpos``; 1 for every error (usage, connection, server, ``-n``
disconnection).
"""

from __future__ import annotations

import gc
import getpass
import logging
import os
import re
import signal
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from walfast import __version__, majors
from walfast.cli import exit_now
from walfast.cli.compress_option import parse_compress_option
from walfast.cli.usage import UsageError, parse_size, print_usage_error
from walfast.errors import ServerRefusedError, WalfastError, describe, libpq_error_text
from walfast.log import NOTICE
from walfast.waldir.codecs import CompressionSpec

if TYPE_CHECKING:
    import psycopg

    from walfast.archive.uploader import ArchiveOptions

# psycopg, the engine and the stream loop are imported when a connection is
# made (run()), so --help, --version and usage errors start fast.

__all__ = [
    "Frontend",
    "RECEIVE_FRONTEND",
    "ReceiveWalArgs",
    "main",
    "parse_args",
    "run",
    "run_frontend",
    "scan_lsn",
]

log = logging.getLogger("walfast")

# --------------------------------------------------------------------------- #
# the option table and glibc's getopt_long
# --------------------------------------------------------------------------- #

@dataclass(frozen=True)
class Option:
    """One option: its long name, its short letter (None: long only) and
    whether it takes a value."""

    name: str
    short: str | None
    has_arg: bool


#: pg_receivewal's ``long_options`` in its order (glibc lists the candidates
#: of an ambiguous abbreviation in this order).  ``help`` and ``version`` map
#: to no short option: pg_receivewal's short option string has neither ``?``
#: nor ``V``, so after the first argument they are usage errors.
OPTIONS: tuple[Option, ...] = (
    Option("help", None, False),
    Option("version", None, False),
    Option("directory", "D", True),
    Option("dbname", "d", True),
    Option("endpos", "E", True),
    Option("host", "h", True),
    Option("port", "p", True),
    Option("username", "U", True),
    Option("no-loop", "n", False),
    Option("no-password", "w", False),
    Option("password", "W", False),
    Option("status-interval", "s", True),
    Option("slot", "S", True),
    Option("verbose", "v", False),
    Option("compress", "Z", True),
    Option("create-slot", None, False),
    Option("drop-slot", None, False),
    Option("if-not-exists", None, False),
    Option("synchronous", None, False),
    Option("no-sync", None, False),
    # walfast's addition, in both front ends (no pg_receivewal option starts
    # with "re", so every abbreviation of theirs stays unambiguous).
    Option("receive-timeout", None, True),
    Option("min-free", None, True),
)

#: ``walfast receive`` also takes walfast's own options (walfast-receivewal
#: does not, so that its abbreviations stay pg_receivewal's: ``--no-p`` is
#: ``--no-password`` there, ambiguous here).
WALFAST_OPTIONS: tuple[Option, ...] = OPTIONS + (
    Option("archive", None, True),
    Option("archive-partial-interval", None, True),
    Option("metrics-address", None, True),
    Option("no-progress", None, False),
)

_SHORT = {o.short: o for o in OPTIONS if o.short is not None}


def getopt_long(args: Sequence[str], operands: list[str],
                options: Sequence[Option] = OPTIONS) -> Iterator[tuple[Option, str | None]]:
    """glibc ``getopt_long`` over *args* (without argv[0]), with GNU
    permutation: yields (option, value) in order and appends operands to
    *operands*.  An unknown, ambiguous or malformed option raises
    :class:`UsageError` with glibc's message, when it is reached (options
    before it have been yielded and checked by then, as in C)."""
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            operands.extend(args[i:])
            return
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            opt = _long_option(arg, name, options)
            if not opt.has_arg:
                if eq:
                    raise UsageError(f"option '--{opt.name}' doesn't allow an argument",
                                     hint=True, getopt=True)
                yield opt, None
            elif eq:
                yield opt, value
            elif i < len(args):
                i += 1
                yield opt, args[i - 1]
            else:
                raise UsageError(f"option '--{opt.name}' requires an argument",
                                 hint=True, getopt=True)
        elif arg.startswith("-") and arg != "-":
            j = 1
            while j < len(arg):
                letter = arg[j]
                j += 1
                short = _SHORT.get(letter)
                if short is None:
                    raise UsageError(f"invalid option -- '{letter}'", hint=True, getopt=True)
                if not short.has_arg:
                    yield short, None
                    continue
                if j < len(arg):
                    yield short, arg[j:]
                elif i < len(args):
                    i += 1
                    yield short, args[i - 1]
                else:
                    raise UsageError(f"option requires an argument -- '{letter}'",
                                     hint=True, getopt=True)
                break
        else:
            operands.append(arg)


def _long_option(arg: str, name: str, options: Sequence[Option]) -> Option:
    """An exact long name, else the one option it abbreviates."""
    for opt in options:
        if opt.name == name:
            return opt
    candidates = [opt for opt in options if opt.name.startswith(name)]
    if not candidates:
        raise UsageError(f"unrecognized option '{arg}'", hint=True, getopt=True)
    if len(candidates) > 1:
        possibilities = "".join(f" '--{opt.name}'" for opt in candidates)
        raise UsageError(f"option '{arg}' is ambiguous; possibilities:{possibilities}",
                         hint=True, getopt=True)
    return candidates[0]


# --------------------------------------------------------------------------- #
# option values, parsed as pg_receivewal's C library calls parse them
# --------------------------------------------------------------------------- #

_C_SPACE = " \t\n\r\f\v"
_HEX_RE = re.compile(r"([+-]?)(0[xX])?([0-9A-Fa-f]*)")


def _scan_hex(text: str) -> tuple[int, str] | None:
    """One ``%X`` conversion of glibc's sscanf: (value, rest) or None.
    Leading white space, a sign and a ``0x`` prefix are accepted; the
    number is strtoul()'s (saturating at 2**64-1, a minus sign negating
    modulo 2**64) stored into a 32-bit unsigned int."""
    stripped = text.lstrip(_C_SPACE)
    m = _HEX_RE.match(stripped)
    assert m is not None  # every part is optional
    sign, prefix, digits = m.groups()
    if not digits:
        if not prefix:
            return None
        digits = "0"  # "0x" with no hex digit after it: glibc reads the 0
    value = min(int(digits, 16), (1 << 64) - 1)
    if sign == "-":
        value = -value % (1 << 64)
    return value & 0xFFFFFFFF, stripped[m.end():]


def scan_lsn(text: str) -> int | None:
    """``sscanf(text, "%X/%X", &hi, &lo) == 2`` as pg_receivewal parses
    ``-E``: the LSN, or None if it does not scan.  Anything after the second
    number is ignored, as sscanf ignores it."""
    first = _scan_hex(text)
    if first is None or not first[1].startswith("/"):
        return None
    second = _scan_hex(first[1][1:])
    if second is None:
        return None
    return first[0] << 32 | second[0]


def parse_int_option(value: str, name: str, lo: int, hi: int) -> int:
    """PostgreSQL's ``option_parse_int`` (strtol, base 10, trailing white
    space allowed, an empty value is 0); raises UsageError (no hint) with
    its messages."""
    text = value.rstrip(_C_SPACE)
    body = text.lstrip(_C_SPACE)
    if not re.fullmatch(r"[+-]?\d*", body) or body in ("+", "-"):
        raise UsageError(f'invalid value "{value}" for option {name}', hint=False)
    number = int(body) if body else 0
    if not lo <= number <= hi:
        raise UsageError(f"{name} must be in range {lo}..{hi}", hint=False)
    return number


# --------------------------------------------------------------------------- #
# the parsed command line
# --------------------------------------------------------------------------- #

@dataclass
class ReceiveWalArgs:
    """What pg_receivewal's command line asked for, validated."""

    directory: str | None = None
    dbname: str | None = None
    host: str | None = None
    port: str | None = None
    username: str | None = None
    endpos: int | None = None
    no_loop: bool = False
    #: pg_receivewal's dbgetpassword: -1 never prompt (-w), 1 always (-W),
    #: 0 (the default) only if the server asks; the last of -w/-W wins.
    password_prompt: int = 0
    status_interval: int = 10
    #: --receive-timeout: seconds without a message before the connection
    #: counts as lost (walfast only; 0: never)
    receive_timeout: int = 60
    #: --min-free: bytes a new segment file must leave free (walfast only)
    min_free: int = 0
    slot: str | None = None
    verbose: bool = False
    compress: str = "none"
    create_slot: bool = False
    drop_slot: bool = False
    if_not_exists: bool = False
    synchronous: bool = False
    no_sync: bool = False
    compression: CompressionSpec | None = None
    # walfast receive only (WALFAST_OPTIONS)
    archive: str | None = None
    archive_partial_interval: int = 0
    metrics_address: str | None = None
    no_progress: bool = False

    def apply(self, opt: Option, value: str | None) -> None:
        """One option from getopt_long, checked as pg_receivewal checks it."""
        if value is None:
            self._apply_flag(opt.name)
        elif opt.name == "endpos":
            lsn = scan_lsn(value)
            if lsn is None:
                raise UsageError(f'could not parse end position "{value}"', hint=False)
            # 0/0 is InvalidXLogRecPtr: pg_receivewal then has no end position.
            self.endpos = lsn or None
        elif opt.name == "status-interval":
            self.status_interval = parse_int_option(
                value, "-s/--status-interval", 0, 2147483647 // 1000)
        elif opt.name == "receive-timeout":
            self.receive_timeout = parse_int_option(
                value, "--receive-timeout", 0, 2147483647 // 1000)
        elif opt.name == "archive-partial-interval":
            self.archive_partial_interval = parse_int_option(
                value, "--archive-partial-interval", 0, 2147483647 // 1000)
        elif opt.name == "min-free":
            try:
                self.min_free = parse_size(value)
            except ValueError as e:
                raise UsageError(f"--min-free: {e}", hint=False) from None
        else:
            setattr(self, opt.name.replace("-", "_"), value)

    def _apply_flag(self, name: str) -> None:
        if name in ("help", "version"):
            # getopt_long returns '?'/'V', which pg_receivewal's switch has
            # no case for: just the hint.
            raise UsageError(None, hint=True)
        if name == "no-password":
            self.password_prompt = -1
        elif name == "password":
            self.password_prompt = 1
        else:
            setattr(self, name.replace("-", "_"), True)


def parse_args(args: Sequence[str], options: Sequence[Option] = OPTIONS) -> ReceiveWalArgs:
    """Parse and check pg_receivewal's arguments (without argv[0]) in
    pg_receivewal's order, up to and including the directory check.
    *options* is the option table (:data:`WALFAST_OPTIONS` for ``walfast
    receive``).  Raises :class:`UsageError`."""
    parsed = ReceiveWalArgs()
    operands: list[str] = []
    for opt, value in getopt_long(args, operands, options):
        parsed.apply(opt, value)
    if operands:
        raise UsageError(f'too many command-line arguments (first is "{operands[0]}")',
                         hint=True)
    if parsed.drop_slot and parsed.create_slot:
        raise UsageError("cannot use --create-slot together with --drop-slot", hint=True)
    if parsed.slot is None and (parsed.drop_slot or parsed.create_slot):
        action = "--drop-slot" if parsed.drop_slot else "--create-slot"
        raise UsageError(f"{action} needs a slot to be specified using --slot", hint=True)
    if parsed.synchronous and parsed.no_sync:
        raise UsageError("cannot use --synchronous together with --no-sync", hint=True)
    if parsed.archive_partial_interval and parsed.archive is None:
        raise UsageError("--archive-partial-interval needs an archive (--archive)", hint=True)
    if parsed.archive is not None and not parsed.archive.startswith("s3://"):
        raise UsageError(f'--archive: "{parsed.archive}" is not s3://BUCKET/PREFIX', hint=False)
    slot_action = parsed.drop_slot or parsed.create_slot
    if parsed.directory is None and not slot_action:
        raise UsageError("no target directory specified", hint=True)
    try:
        parsed.compression = parse_compress_option(parsed.compress)
    except ValueError as e:
        raise UsageError(str(e), hint=False) from None
    if parsed.directory is not None and not slot_action:
        from walfast.waldir.directory import check_directory

        try:
            check_directory(parsed.directory)
        except OSError as e:
            raise UsageError(f'could not open directory "{parsed.directory}": {e.strerror}',
                             hint=False) from None
    return parsed


# --------------------------------------------------------------------------- #
# front ends
# --------------------------------------------------------------------------- #

@dataclass(frozen=True)
class Frontend:
    """The names one front end prints.

    *argv0* starts getopt_long's complaints (glibc prints argv[0] as given);
    *progname* every other message (pg_receivewal's get_progname(): the
    base name); *command* is what ``--help`` and the hint call the program;
    *application_name* the fallback ``application_name`` of its connections
    (pg_receivewal uses its progname).
    """

    argv0: str
    progname: str
    command: str
    version_line: str
    application_name: str
    #: walfast's own options (metrics, progress bar) on top of pg_receivewal's
    walfast_options: bool = False

    @property
    def options(self) -> tuple[Option, ...]:
        return WALFAST_OPTIONS if self.walfast_options else OPTIONS

    @classmethod
    def for_receivewal(cls, argv0: str) -> "Frontend":
        """``walfast-receivewal`` (or a link to it) invoked as *argv0*."""
        progname = os.path.basename(argv0)
        if not progname or progname.endswith(".py"):  # python -m walfast.cli.receivewal
            argv0 = progname = "walfast-receivewal"
        # The newest major walfast is tested against: walfast itself
        # refuses no newer server (commands.check_server_version sets no
        # upper bound), but tools such as Barman require a pg_receivewal at
        # least as new as the server and read the version from this line.
        return cls(argv0=argv0, progname=progname, command=progname,
                   version_line=(f"pg_receivewal (PostgreSQL) {majors.NEWEST_TESTED_MAJOR}.0 "
                                 f"(walfast {__version__})"),
                   application_name=progname)


RECEIVE_FRONTEND = Frontend(argv0="walfast", progname="walfast", command="walfast receive",
                            version_line=f"walfast {__version__}", application_name="walfast",
                            walfast_options=True)

_HELP = """\
{command} receives PostgreSQL streaming write-ahead logs.

Usage:
  {command} [OPTION]...

Options:
  -D, --directory=DIR    receive write-ahead log files into this directory
  -E, --endpos=LSN       exit after receiving the specified LSN
      --if-not-exists    do not error if slot already exists when creating a slot
  -n, --no-loop          do not loop on connection lost
      --no-sync          do not wait for changes to be written safely to disk
  -s, --status-interval=SECS
                         time between status packets sent to server (default: 10)
  -S, --slot=SLOTNAME    replication slot to use
      --synchronous      flush write-ahead log immediately after writing
  -v, --verbose          output verbose messages
{walfast_options}  -V, --version          output version information, then exit
  -Z, --compress=METHOD[:DETAIL]
                         compress as specified
  -?, --help             show this help, then exit

Connection options:
  -d, --dbname=CONNSTR   connection string
  -h, --host=HOSTNAME    database server host or socket directory
  -p, --port=PORT        database server port number
  -U, --username=NAME    connect as specified database user
  -w, --no-password      never prompt for password
  -W, --password         force password prompt (should happen automatically)

Optional actions:
      --create-slot      create a new replication slot (for the slot's name see --slot)
      --drop-slot        drop the replication slot (for the slot's name see --slot)

This is walfast {version}, a drop-in replacement for pg_receivewal.
METHOD is gzip, lz4, zstd (walfast only: files named *.zst) or none.
walfast also takes --receive-timeout=SECS: a connection the server left
silent that long counts as lost (default: 60, 0: never); and
--min-free=SIZE: receiving pauses (the connection kept) instead of creating
a segment file that would leave less free space (default: 0, until full).
"""


_WALFAST_HELP = """\
      --archive=s3://BUCKET/PREFIX
                         also ship every completed file to S3 (boto3's settings;
                         AWS_ENDPOINT_URL for MinIO and the like); with -S the
                         slot never passes what the bucket holds
      --archive-partial-interval=SECS
                         upload the open segment as NAME.partial at most every
                         SECS seconds (default: 0, never)
      --metrics-address=[HOST:]PORT
                         serve Prometheus metrics there (PORT alone: 127.0.0.1)
      --no-progress      no progress bar while catching up (shown on a terminal)
"""


def help_text(fe: Frontend) -> str:
    """pg_receivewal's --help, with walfast's closing lines."""
    return _HELP.format(command=fe.command, version=__version__,
                        walfast_options=_WALFAST_HELP if fe.walfast_options else "")


# --------------------------------------------------------------------------- #
# running
# --------------------------------------------------------------------------- #

class _StopFlag:
    """Set by SIGINT/SIGTERM; the receive loop checks it every tick."""

    def __init__(self) -> None:
        self.set = False

    def __call__(self) -> bool:
        return self.set

    def handler(self, signum: int, frame: FrameType | None) -> None:
        self.set = True


class _Formatter(logging.Formatter):
    """pg_receivewal's style: ``PROG: message`` / ``PROG: error: ...``."""

    def __init__(self, progname: str) -> None:
        super().__init__()
        self.progname = progname

    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR:
            return f"{self.progname}: error: {msg}"
        if record.levelno >= logging.WARNING:
            return f"{self.progname}: warning: {msg}"
        return f"{self.progname}: {msg}"


def _setup_logging(verbose: bool, progname: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(progname))
    root = logging.getLogger("walfast")
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else NOTICE)
    root.propagate = False


def _server_message(exc: psycopg.Error) -> str:
    """The server's error as libpq's PQerrorMessage() words it
    (``ERROR:  ...``, with its DETAIL/HINT lines), else psycopg's text."""

    result = exc.pgresult
    if result is not None and result.error_message:
        return result.error_message.decode(errors="replace").rstrip("\n")
    return libpq_error_text(exc)


def _slot_action(conninfo: str, args: ReceiveWalArgs, fe: Frontend) -> None:
    """``--create-slot`` / ``--drop-slot``: connect, IDENTIFY_SYSTEM, the
    command, as pg_receivewal does them.  Raises WalfastError with its
    message."""
    import psycopg

    from walfast.replication import commands as protocol
    from walfast.replication.connection import connect

    assert args.slot is not None
    conn = connect(conninfo, application_name=fe.application_name)
    try:
        try:
            info = protocol.identify_system(conn)
        except psycopg.Error as e:
            raise ServerRefusedError(
                f'could not send replication command "IDENTIFY_SYSTEM": {_server_message(e)}'
            ) from None
        protocol.check_physical(info, args.slot)
        if args.drop_slot:
            log.info('dropping replication slot "%s"', args.slot)
            command = protocol.drop_replication_slot_command(args.slot)
        else:
            log.info('creating replication slot "%s"', args.slot)
            command = protocol.create_replication_slot_command(
                args.slot, reserve_wal=False, server_version=conn.info.server_version)
        try:
            if args.drop_slot:
                protocol.drop_replication_slot(conn, args.slot)
            else:
                # pg_receivewal's slot reserves no WAL until first used.
                protocol.create_replication_slot(
                    conn, args.slot, if_not_exists=args.if_not_exists, reserve_wal=False)
        except psycopg.Error as e:
            raise ServerRefusedError(
                f'could not send replication command "{command}": {_server_message(e)}'
            ) from None
    finally:
        conn.close()


def _prompt_password() -> str:
    """PostgreSQL's simple_prompt("Password: ", echo=false): on the
    terminal when there is one, else the prompt on stderr, the answer from
    stdin (no echo to turn off, no warning about it), then a newline."""
    try:
        with open("/dev/tty"):
            pass
    except OSError:
        sys.stderr.write("Password: ")
        sys.stderr.flush()
        answer = sys.stdin.readline()
        sys.stderr.write("\n")
        return answer.rstrip("\n")
    return getpass.getpass("Password: ")


def run(args: ReceiveWalArgs, fe: Frontend) -> int:
    """Everything after the command line: connect, then the slot action or
    streaming.  Returns the exit status; errors are printed as
    pg_receivewal prints them."""
    import psycopg

    from walfast.monitor.extras import ReceiveExtras
    from walfast.stream import ReceiveOutcome, StreamOptions, receive_to_directory

    if not gc.isenabled():
        # The console script turned the cyclic GC off: these imports are
        # most of the start-up, and ~25 ms cheaper without collections
        # during them.  What they made lives as long as the process: keep
        # it out of every later collection, then collect as usual.
        gc.freeze()
        gc.enable()
    password = _prompt_password() if args.password_prompt == 1 else None
    try:
        conninfo = psycopg.conninfo.make_conninfo(
            args.dbname or "", host=args.host, port=args.port, user=args.username,
            password=password)
    except psycopg.Error as e:  # a malformed connection string
        log.error("%s", str(e).strip())
        return 1
    stop = _StopFlag()
    signal.signal(signal.SIGINT, stop.handler)
    signal.signal(signal.SIGTERM, stop.handler)
    try:
        if args.create_slot or args.drop_slot:
            _slot_action(conninfo, args, fe)
            return 0
        assert args.directory is not None
        options = StreamOptions(
            directory=Path(args.directory), slot=args.slot, synchronous=args.synchronous,
            status_interval=float(args.status_interval), sync=not args.no_sync,
            endpos=args.endpos, compression=args.compression,
            receive_timeout=float(args.receive_timeout), min_free=args.min_free,
            archive=_archive_options(args),
        )
        with ReceiveExtras(options.directory, args.metrics_address, args.no_progress
                           or not fe.walfast_options):
            outcome = receive_to_directory(conninfo, options, should_stop=stop,
                                           loop=not args.no_loop,
                                           application_name=fe.application_name)
    except (psycopg.Error, WalfastError, OSError) as e:
        log.error("%s", describe(e))
        return 1
    if outcome is ReceiveOutcome.DISCONNECTED:
        log.error("disconnected")
        return 1
    return 0


def _archive_options(args: ReceiveWalArgs) -> ArchiveOptions | None:
    if args.archive is None:
        return None
    from walfast.archive.uploader import ArchiveOptions

    return ArchiveOptions(args.archive, float(args.archive_partial_interval))


def run_frontend(args: Sequence[str], fe: Frontend) -> int:
    """pg_receivewal's main() for *args* (without argv[0]) under front end
    *fe*; returns the exit status."""
    if args[:1] in (["--help"], ["-?"]):
        sys.stdout.write(help_text(fe))
        return 0
    if args[:1] in (["-V"], ["--version"]):
        print(fe.version_line)
        return 0
    try:
        parsed = parse_args(args, fe.options)
    except UsageError as err:
        return print_usage_error(err, progname=fe.progname, command=fe.command, argv0=fe.argv0)
    _setup_logging(parsed.verbose, fe.progname)
    try:
        return run(parsed, fe)
    except KeyboardInterrupt:  # before the signal handlers were installed
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    """The ``walfast-receivewal`` console script: *argv* as ``sys.argv``
    (argv[0] first)."""
    argv = list(sys.argv if argv is None else argv)
    return run_frontend(argv[1:], Frontend.for_receivewal(argv[0] if argv else ""))


def console_main() -> NoReturn:
    """The ``walfast-receivewal`` console script: starts with the cyclic GC
    off (see :func:`run`), ends with :func:`walfast.cli.exit_now`."""
    gc.disable()
    exit_now(main())


if __name__ == "__main__":
    console_main()
