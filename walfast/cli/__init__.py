"""The ``walfast`` command line.

``walfast receive`` streams WAL into a directory with pg_receivewal's options
and behaviour (messages, exit codes): it is :mod:`walfast.receivewal` (the
``walfast-receivewal`` command) under walfast's name.  ``walfast demo`` runs
the main job on a throwaway primary; ``walfast status`` and ``walfast wait``
read a receiver's progress state (:mod:`walfast.status`).  This module and
:mod:`walfast.receivewal` are the only ones that configure logging: the
library only logs to the ``walfast`` logger.

Exit status: as pg_receivewal's for ``receive`` (0 when stopped by
SIGINT/SIGTERM or when ``--endpos`` was reached, 1 on any error, never a
traceback for a user mistake).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from walfast import __version__

PROG = "walfast"


class UsageError(Exception):
    """A command-line mistake: reported with a hint to --help, exit 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="walfast: a fast, durable PostgreSQL WAL receiver.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    # Listed here for --help; parsed by walfast.receivewal (pg_receivewal's
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
    return parser


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    print(f'{PROG}: hint: Try "{PROG} --help" for more information.', file=sys.stderr)
    return 1


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
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        return _fail(str(e))
    if args.command is None:
        parser.print_help(sys.stderr)
        return 1
    return _fail(f"unknown command {args.command!r}")  # pragma: no cover (all dispatched above)

