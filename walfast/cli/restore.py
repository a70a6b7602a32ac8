"""``walfast restore``'s command line: PostgreSQL's ``restore_command``.

The work is :mod:`walfast.archive.restore`'s; this module parses the
arguments, prints what PostgreSQL's log should show and sets the exit
status as PostgreSQL reads it: 0 the file is in place, 1 it is not (quiet
when the archive does not have it, an error message when it has it but it
cannot be delivered), 1 for a usage error too, as every walfast command.
A signal (SIGTERM at a server shutdown, SIGINT) removes the temporary file
and then ends the process by that signal, so that PostgreSQL sees it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from walfast.cli.usage import ArgumentParser, UsageError, print_usage_error

__all__ = ["main"]

PROG = "walfast restore"

_DESCRIPTION = """\
Fetch the WAL file WALFILE from the archive LOCATION and write it as DEST:
PostgreSQL's restore_command, for a standby or a point-in-time recovery
fed from walfast's archive.

  restore_command = 'walfast restore %f %p --from s3://bucket/prefix'

LOCATION is s3://BUCKET/PREFIX (the object of a file is PREFIX/NAME; boto3's
standard configuration: AWS_* variables, profiles, instance roles,
AWS_ENDPOINT_URL for MinIO and the like) or a local directory, such as
walfast receive's -D directory (its .walfast/ state is never taken for WAL).

A segment is taken as NAME, else NAME.gz, NAME.lz4 or NAME.zst (decompressed).
Before DEST is written it is checked: exactly the segment size its first page
header gives (xlp_seg_size), every page header that of this segment.  History
files (00000002.history) and .backup files are copied as they are.  DEST is
written durably: a temporary file next to it, fsync, rename, fsync of the
directory."""

_EPILOG = """\
exit status (as restore_command must answer):
  0  DEST holds the file
  1  the archive does not have it (nothing printed; -v prints one line), or it
     cannot be delivered: the archive failed (retried first, a few times over
     about 4 s, when the failure may pass), the file is damaged or not what its
     name says (an error message naming it and why), or a usage error

--partial is for the end of recovery (a standby promoted, or the last WAL of
a lost primary): the newest WAL may be only in a .partial file.  Without it a
.partial is never used.

--prefetch=N makes a standby catching up from a bucket fetch ahead instead of
paying one round trip per segment; the spool may be removed at any time (after
a promotion nothing reads it any more)."""


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
                       usage=f"{PROG} WALFILE DEST --from LOCATION [--partial] [--prefetch N] "
                             f"[--spool DIR] [-v]",
                       description=_DESCRIPTION, epilog=_EPILOG)
    p.add_argument("walfile", metavar="WALFILE",
                   help="the file to fetch: restore_command's %%f")
    p.add_argument("dest", metavar="DEST", help="where to write it: restore_command's %%p")
    p.add_argument("--from", dest="location", metavar="LOCATION", required=True,
                   help="the archive: s3://BUCKET/PREFIX or a directory")
    p.add_argument("--partial", action="store_true",
                   help="when no complete form of a segment exists, use NAME.partial (or "
                        "its compressed forms), zero-padded to the segment size")
    p.add_argument("--prefetch", metavar="N", default="0",
                   help="after delivering a segment, fetch the next N segments of its "
                        "timeline in parallel, in the background, into the spool; later "
                        "calls take them from there (default 0: no prefetch; at most 64)")
    p.add_argument("--spool", metavar="DIR", type=Path, default=None,
                   help="the prefetch spool (default: .walfast-prefetch in DEST's "
                        "directory, i.e. in pg_wal)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="print one line saying what was delivered from where, or that "
                        "the archive does not have the file")
    return p


def _prefetch_count(text: str) -> int:
    from walfast.archive.restore import MAX_PREFETCH

    value = text.strip()
    if not value.isdigit() or not 0 <= int(value) <= MAX_PREFETCH:
        raise UsageError(f'invalid --prefetch value "{text}": must be an integer from 0 '
                         f"to {MAX_PREFETCH}")
    return int(value)


class _Signalled(BaseException):
    """SIGTERM or SIGINT arrived: unwind (temporaries are removed), then die
    by the signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Signalled(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """``walfast restore ARGS``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
        prefetch = _prefetch_count(args.prefetch)
        from walfast.archive.restore import parse_request

        parse_request(args.walfile)
    except UsageError as e:
        return print_usage_error(e, progname=PROG, command=PROG)
    except ValueError as e:
        return print_usage_error(UsageError(str(e)), progname=PROG, command=PROG)
    if not args.dest:
        return print_usage_error(UsageError("DEST is empty"), progname=PROG, command=PROG)
    old = {s: signal.signal(s, _on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _run(args, prefetch)
    except _Signalled as e:
        for s, handler in old.items():
            signal.signal(s, handler)
        signal.signal(e.signum, signal.SIG_DFL)
        os.kill(os.getpid(), e.signum)
        return 1     # pragma: no cover (the signal ended the process)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)


def _run(args: argparse.Namespace, prefetch: int) -> int:
    from walfast.archive.restore import restore
    from walfast.errors import WalfastError, describe

    try:
        done = restore(args.walfile, Path(args.dest), args.location, partial=args.partial,
                       prefetch=prefetch, spool=args.spool)
    except (WalfastError, OSError) as e:
        print(f"{PROG}: error: {describe(e)}", file=sys.stderr)
        return 1
    except Exception as e:   # a bug: still one line, never a traceback in the server log
        print(f"{PROG}: error: unexpected {type(e).__name__} restoring \"{args.walfile}\": "
              f"{e}", file=sys.stderr)
        return 1
    if done is None:
        if args.verbose:
            print(f'{PROG}: "{args.walfile}" is not in the archive "{args.location}"',
                  file=sys.stderr)
        return 1
    if args.verbose:
        if done.from_spool:
            how = f'from the prefetch spool ("{done.source}")'
        elif done.partial:
            how = (f'from "{done.source}", {done.valid_bytes} bytes of WAL zero-padded to '
                   f"{done.segment_size}")
        else:
            how = f'from "{done.source}"'
        print(f'{PROG}: restored "{done.name}" {how}', file=sys.stderr)
    return 0
