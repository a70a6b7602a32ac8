"""``walfast bench``: how fast WAL is received here, walfast against
pg_receivewal and against a receiver that keeps nothing.

The command line only; the benchmark is :mod:`walfast.bench` (whose
:func:`~walfast.bench.run.run_benchmark` ``python -m benchmarks.e2e`` runs
too).  Parsing imports nothing heavy: ``walfast bench --help`` is light.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from walfast.bench.options import (
    add_embedded_options, add_run_options, add_sync_options, config_from_args,
)
from walfast.cli.usage import ArgumentParser, UsageError, print_usage_error

__all__ = ["build_parser", "main"]

PROG = "walfast bench"

_DESCRIPTION = """\
How fast WAL is received here: walfast against pg_receivewal.

walfast, pg_receivewal (the server major's own, when one is found) and a
receiver that keeps nothing (the sender's ceiling) stream the same range of
WAL, once per mode asked, in interleaved rounds.  Every run is checked (the
range's segments, byte for byte) before its figures count.  Reported per
receiver and mode: MB/s, receiver and walsender CPU seconds per GB, bytes
written, and the ratios to pg_receivewal and to the discard receiver.

Without -d it runs on a throwaway local primary (as walfast demo does),
which writes the range first, and removes everything afterwards.

With -d it runs against a real server, and writes nothing to it: a
temporary replication slot pins WAL from the server's current position (or
from an existing slot's, -S), the benchmark waits until the server's own
traffic has made --size bytes past it, and every receiver then streams
exactly that range from its own copy of the slot (each copy dropped after
its run, also on Ctrl-C).  The role needs REPLICATION and may connect to a
database (the slot functions are SQL): the one CONNSTR names, else postgres.
Walsender CPU is measured only where this machine's /proc shows the server's
processes (a local server); elsewhere it says n/a.
"""

_EPILOG = """\
examples:
  walfast bench                      1 GB, 3 rounds, durable, no-sync and synchronous
  walfast bench --size 3GB --modes durable,lz4 --transports tcp,unix,tls --json out.json
  walfast bench --sync-standby       also pgbench, each receiver the synchronous standby
  walfast bench -d "host=db1 user=replicator" --size 2GB --max-wait 900
  walfast bench -d "host=db1 user=replicator" -S archive_slot   the WAL that slot keeps

A line per run while it goes, then the table; --json keeps every figure
(python -m walfast.bench.report FILE --compact prints the table again, as
markdown).  Sizes: MB/GB are 10^6/10^9 bytes, MiB/GiB 2^20/2^30.  Exit status:
0 every run counted, 1 a run failed or an error, 130 interrupted.
"""

#: Options that describe the throwaway primary (refused with -d) and the
#: synchronous-standby benchmark (refused without --sync-standby), with
#: their defaults: parsed with None, so that being given can be told.
_EMBEDDED = {"transports": ["tcp"], "major": None, "wal_segsize": 16}
_SYNC = {"pgbench_seconds": 20, "pgbench_scale": 10, "pgbench_clients": 8,
         "pgbench_threads": 2, "pgbench_transport": "unix",
         "synchronous_commit": ["on", "remote_write"]}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description=_DESCRIPTION, epilog=_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    run = p.add_argument_group("what runs")
    add_run_options(run, size="1GB", modes=("durable", "no-sync", "synchronous"))
    run.add_argument("--no-limits", action="store_true",
                     help="do not measure the disk and memcpy limits each round (they write "
                          "the range's volume once more per round)")
    real = p.add_argument_group("a real server (nothing is written to it)")
    real.add_argument("-d", "--dbname", metavar="CONNSTR",
                      help="benchmark against this server (a libpq connection string, as "
                           "walfast receive -d; PG* variables and .pgpass apply)")
    real.add_argument("-S", "--slot", metavar="SLOT",
                      help="use the WAL this existing physical slot keeps (it is copied, never "
                           "moved); default: a new temporary slot at the server's position")
    real.add_argument("--max-wait", type=float, default=3600.0, metavar="SECONDS",
                      help="how long to wait for the server's own traffic to make --size "
                           "bytes of WAL (default 3600)")
    emb = p.add_argument_group("the throwaway primary (without -d)")
    add_embedded_options(emb, transports=("tcp",))
    sync = p.add_argument_group("synchronous standby (throwaway primary only)")
    sync.add_argument("--sync-standby", action="store_true",
                      help="also run pgbench with each receiver as the primary's only "
                           "synchronous standby (walfast and pg_receivewal --synchronous, "
                           "the discard receiver acknowledging without writing, and no "
                           "standby), under each synchronous_commit level")
    add_sync_options(sync, seconds_help="duration of each pgbench run (default 20)")
    out = p.add_argument_group("output")
    out.add_argument("--json", type=Path, metavar="FILE",
                     help="write every figure, command line, the machine and the versions")
    out.add_argument("--chart", type=Path, metavar="FILE",
                     help="draw MB/s per receiver and mode into this PNG (needs matplotlib: "
                          "pip install 'walfast[bench]')")
    p.set_defaults(**dict.fromkeys((*_EMBEDDED, *_SYNC)))
    return p


def _check(args: argparse.Namespace) -> None:
    """Options that go together; fills in the defaults left None."""
    given = [k for k in _EMBEDDED if getattr(args, k) is not None]
    if args.dbname is not None and given:
        raise UsageError(f"--{given[0].replace('_', '-')} describes the throwaway primary: "
                         "not with -d")
    if args.slot is not None and args.dbname is None:
        raise UsageError("-S/--slot names a slot of the server given with -d")
    if args.dbname is not None and args.sync_standby:
        raise UsageError("--sync-standby runs pgbench and sets synchronous_standby_names: only "
                         "on the throwaway primary, not with -d")
    given = [k for k in _SYNC if getattr(args, k) is not None]
    if given and not args.sync_standby:
        raise UsageError(f"--{given[0].replace('_', '-')} is an option of --sync-standby")
    if args.pgbench_seconds == 0:
        raise UsageError("--pgbench-seconds must be at least 1")
    if args.max_wait < 0:
        raise UsageError("--max-wait must not be negative")
    for key, default in (*_EMBEDDED.items(), *_SYNC.items()):
        if getattr(args, key) is None:
            setattr(args, key, default)


def _say(msg: str) -> None:
    print(msg if msg[:1].isspace() or not msg else f"walfast bench: {msg}", flush=True)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _check(args)
    except UsageError as e:
        return print_usage_error(e, progname=PROG, command=PROG)
    cfg = config_from_args(args, command=PROG, argv=[PROG, *argv], sync=args.sync_standby,
                           json_path=args.json, markdown_path=None, chart_path=args.chart,
                           compact=True)
    from walfast.bench.run import SetupError, run_benchmark

    # SIGTERM cleans up as Ctrl-C does: receivers stopped, slots dropped.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return run_benchmark(cfg, say=_say)
    except SetupError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted: the receivers were stopped, the benchmark's slots dropped "
              "and its files removed", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
