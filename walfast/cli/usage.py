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
import re
import sys
from typing import NoReturn

__all__ = ["ArgumentParser", "UsageError", "parse_size", "print_usage_error"]

_SIZE_UNITS = {"": 1, "b": 1, "bytes": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30,
               "tb": 1 << 40}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*")


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


def parse_size(text: str) -> int:
    """Bytes of ``"10GB"``, ``"512 MB"``, ``"1024kB"`` or a bare byte count
    (PostgreSQL's units, case-insensitive), for options that take a size.
    Raises ValueError."""
    m = _SIZE_RE.fullmatch(text)
    if m is None or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f'invalid size "{text}": expected a number with an optional unit '
                         f"(bytes, kB, MB, GB, TB)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
