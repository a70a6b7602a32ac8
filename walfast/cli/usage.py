"""Command-line mistakes: the one error class and how it is printed.

Every walfast command reports a usage error the way PostgreSQL's programs
do: ``PROG: error: MESSAGE`` then ``PROG: hint: Try "COMMAND --help" for
more information.``, exit status 1; getopt_long's own complaints are
``ARGV0: MESSAGE`` (no ``error:``).  ``walfast receive`` and
``walfast-receivewal`` word their messages as pg_receivewal; the other
commands parse with :class:`ArgumentParser`, which raises instead of
printing argparse's own usage block.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

__all__ = ["ArgumentParser", "UsageError", "print_usage_error"]


class UsageError(Exception):
    """A command-line mistake.

    *message* None: only the hint (pg_receivewal's ``--help`` after the
    first argument); *hint*: followed by ``Try "... --help"``; *getopt*:
    getopt_long's own complaint (``ARGV0: message``, no ``error:``).
    """

    def __init__(self, message: str | None, *, hint: bool = True, getopt: bool = False) -> None:
        super().__init__(message or "")
        self.message = message
        self.hint = hint
        self.getopt = getopt


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with mistakes raised as :class:`UsageError`."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def print_usage_error(err: UsageError, *, progname: str, command: str,
                      argv0: str | None = None) -> int:
    """Print *err* as PostgreSQL's programs do; return the exit status, 1."""
    if err.message is not None:
        if err.getopt:
            print(f"{argv0 or progname}: {err.message}", file=sys.stderr)
        else:
            print(f"{progname}: error: {err.message}", file=sys.stderr)
    if err.hint:
        print(f'{progname}: hint: Try "{command} --help" for more information.', file=sys.stderr)
    return 1
