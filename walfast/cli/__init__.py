"""The commands: ``walfast`` and ``walfast-receivewal``.

* ``walfast receive`` streams WAL into a directory with pg_receivewal's
  options and behaviour (messages, exit codes): it is
  :mod:`walfast.cli.receivewal` (the ``walfast-receivewal`` command) under
  walfast's name;
* ``walfast demo`` runs the main job on a throwaway primary
  (:mod:`walfast.cli.demo`);
* ``walfast status`` and ``walfast wait`` read a receiver's progress state
  (:mod:`walfast.monitor.status`);
* ``walfast check`` checks a receiver, its server and its slot, as
  ``barman check`` does (:mod:`walfast.monitor.check`);
* ``walfast restore`` fetches one WAL file from the archive for PostgreSQL's
  ``restore_command`` (:mod:`walfast.cli.restore`).
* ``walfast bench`` benchmarks WAL throughput, walfast against
  pg_receivewal, on a throwaway primary or a real server
  (:mod:`walfast.cli.bench`, the benchmark itself :mod:`walfast.bench`).

This module only dispatches (and ends the receiver's process without the
interpreter's teardown, :func:`exit_now`): each command's module is
imported when it runs, so ``walfast --version`` loads nothing else.  The commands are the
only code that configures logging; the library only logs to the ``walfast``
logger.  Usage errors: :mod:`walfast.cli.usage`.

Exit status: as pg_receivewal's for ``receive`` (0 when stopped by
SIGINT/SIGTERM or when ``--endpos`` was reached, 1 on any error, never a
traceback for a user mistake); Nagios's for ``check`` (0 OK, 1 WARNING or a
usage error, 2 CRITICAL); ``restore_command``'s for ``restore`` (0 the file
is in place, 1 it is not); for ``bench`` 0 when every run counted, 1 when
one failed or on an error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from walfast import __version__
from walfast.cli.usage import ArgumentParser, UsageError, print_usage_error

PROG = "walfast"


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="walfast: a fast, durable PostgreSQL WAL receiver.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    # Listed here for --help; parsed by walfast.cli.receivewal (pg_receivewal's
    # getopt_long rules), as walfast-receivewal parses them.
    sub.add_parser("receive", add_help=False,
                   help="stream WAL from a server into a directory, with pg_receivewal's "
                        "options (walfast receive --help)")
    sub.add_parser("demo", add_help=False,
                   help="stream a throwaway local primary's WAL and check it (walfast demo --help)")
    sub.add_parser("status", add_help=False,
                   help="show a receiver's progress (walfast status --help)")
    sub.add_parser("wait", add_help=False,
                   help="wait until a receiver has flushed an LSN (walfast wait --help)")
    sub.add_parser("check", add_help=False,
                   help="check a receiver, its server and slot, like barman check; "
                        "Nagios exit codes (walfast check --help)")
    sub.add_parser("restore", add_help=False,
                   help="fetch a WAL file from the archive (S3 or a directory) for "
                        "restore_command (walfast restore --help)")
    sub.add_parser("bench", add_help=False,
                   help="benchmark WAL throughput: walfast against pg_receivewal, on a "
                        "throwaway primary or a real server (walfast bench --help)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["receive"]:
        from walfast.cli import receivewal

        return receivewal.run_frontend(argv[1:], receivewal.RECEIVE_FRONTEND)
    if argv[:1] == ["demo"]:
        from walfast.cli import demo

        return demo.main(argv[1:])
    if argv[:1] in (["status"], ["wait"]):
        from walfast.monitor import status

        return status.main(argv)
    if argv[:1] == ["check"]:
        from walfast.monitor import check

        return check.main(argv[1:])
    if argv[:1] == ["restore"]:
        from walfast.cli import restore

        return restore.main(argv[1:])
    if argv[:1] == ["bench"]:
        from walfast.cli import bench

        return bench.main(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        return print_usage_error(e, progname=PROG, command=PROG)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 1
    return print_usage_error(  # pragma: no cover (all dispatched above)
        UsageError(f"unknown command {args.command!r}"), progname=PROG, command=PROG)


def exit_now(code: int) -> NoReturn:
    """End the receiver's process with *code*, skipping the interpreter's
    teardown: by then every file is synced and closed, the connection
    ended and every thread stopped, and the teardown (collecting and
    freeing every module's objects) cost ~55 ms of CPU at each exit, more
    than the rest of a short run's Python.  Output buffers are flushed
    first; nothing of walfast's registers atexit work."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass        # a closed pipe: nothing more can be said
    os._exit(code)


def console_main() -> NoReturn:
    """The ``walfast`` console script: :func:`main`.  The receiver starts
    with the cyclic GC off (see :func:`walfast.cli.receivewal.run`) and
    ends with :func:`exit_now`; the other commands run as usual."""
    receiver = sys.argv[1:2] == ["receive"]
    if receiver:
        gc.disable()
    code = main()
    if receiver:
        exit_now(code)
    sys.exit(code)
