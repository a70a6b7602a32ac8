"""Helpers for the compatibility suite (tests/test_compat.py): run
pg_receivewal and walfast's drop-in (``walfast-receivewal``, or ``walfast
receive``) with the same arguments and compare what a user sees: the exit
status, the lines on stderr after the program name, the files written
(listing and content, decompressed where compressed).

``walfast-receivewal`` runs through an entry script written exactly as the
console script pip installs (``from walfast.cli.receivewal import main``), with
this checkout first on ``sys.path``, so the tests exercise the working tree
and the program name a user sees.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .receivers import clean_env
from walfast.waldir.layout import STATE_DIR

ROOT = Path(__file__).resolve().parent.parent

_ENTRY_SCRIPT = """\
#!{python}
# walfast-receivewal as pip installs it, running the checkout at {root}
import sys
sys.path.insert(0, {root!r})
from walfast.cli.receivewal import main
sys.exit(main())
"""


def write_entry_script(directory: Path, name: str = "walfast-receivewal") -> Path:
    """An executable ``walfast-receivewal`` console script in *directory*,
    named *name* (the name is what the program calls itself)."""
    path = directory / name
    path.write_text(_ENTRY_SCRIPT.format(python=sys.executable, root=str(ROOT)))
    path.chmod(0o755)
    return path


@dataclass(frozen=True)
class Program:
    """How to start one of the programs compared, and the names it prints:
    *argv0* starts getopt's complaints, *progname* the other messages,
    *command* is what the hint calls it (``Try "COMMAND --help"``)."""

    name: str
    argv: tuple[str, ...]
    progname: str
    command: str

    @property
    def argv0(self) -> str:
        return self.argv[0]

    def normalize(self, text: str) -> list[str]:
        """*text*'s lines with this program's names replaced by ``PROG``."""
        out = []
        for line in text.splitlines():
            for prefix in (f"{self.argv0}: ", f"{self.progname}: "):
                if line.startswith(prefix):
                    line = "PROG: " + line[len(prefix):]
                    break
            out.append(line.replace(f'Try "{self.command} --help"', 'Try "PROG --help"'))
        return out


def pg_receivewal(bindir: Path) -> Program:
    path = str(bindir / "pg_receivewal")
    return Program("pg_receivewal", (path,), "pg_receivewal", "pg_receivewal")


def walfast_receivewal(script: Path) -> Program:
    return Program("walfast-receivewal", (str(script),), script.name, script.name)


def walfast_receive() -> Program:
    return Program("walfast receive", (sys.executable, "-m", "walfast.cli", "receive"),
                   "walfast", "walfast receive")


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: list[str]  # normalized


def run(program: Program, args: Sequence[str], *, stdin: str = "",
        timeout: float = 60) -> Result:
    """Run *program* with *args* to completion, in a new session (no
    controlling terminal: a password prompt reads stdin, as in a cron job)."""
    p = subprocess.run([*program.argv, *args], input=stdin, capture_output=True, text=True,
                       timeout=timeout, env=clean_env(), cwd=ROOT, start_new_session=True)
    return Result(p.returncode, p.stdout, program.normalize(p.stderr))


# --------------------------------------------------------------------------- #
# directories
# --------------------------------------------------------------------------- #

def read_segment(path: Path) -> bytes:
    """A segment file's WAL bytes: decompressed for ``.gz``, ``.lz4`` and
    ``.zst`` names (with or without ``.partial``)."""
    name = path.name.removesuffix(".partial")
    data = path.read_bytes()
    if name.endswith(".gz"):
        return gzip.decompress(data)
    if name.endswith(".lz4"):
        import lz4.frame
        return bytes(lz4.frame.decompress(data))
    if name.endswith(".zst"):
        import zstandard
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


#: walfast's own state directory (pg_receivewal and Barman ignore it, so it
#: is left out when listings are compared).
WALFAST_FILES = frozenset({STATE_DIR})


def listing(directory: Path) -> list[str]:
    """Every file name in *directory* (WAL, partial, history, anything but
    :data:`WALFAST_FILES`)."""
    return sorted(p.name for p in directory.iterdir() if p.name not in WALFAST_FILES)


def directory_difference(a: Path, b: Path) -> str | None:
    """None if *a* and *b* hold the same file names with the same
    (decompressed) content, else what differs first."""
    names_a, names_b = listing(a), listing(b)
    if names_a != names_b:
        return f"listings differ: {names_a} vs {names_b}"
    for name in names_a:
        if read_segment(a / name) != read_segment(b / name):
            return f"{name} differs"
    return None


# --------------------------------------------------------------------------- #
# stderr of a streaming run
# --------------------------------------------------------------------------- #

def stream_lines(lines: Sequence[str]) -> list[str]:
    """The stderr lines of a streaming run, as compared between the two
    programs (both print their stop message twice with -v: pg_receivewal's
    stop callback runs again after the file is closed)."""
    return list(lines)
