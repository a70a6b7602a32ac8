"""The benchmark's names (modes, receivers, transports, synchronous_commit
levels) and the command-line options ``walfast bench`` and ``python -m
benchmarks.e2e`` share, defined once (each front end picks its defaults);
:func:`config_from_args` turns them into a
:class:`walfast.bench.run.BenchConfig`.

It imports nothing but argparse, so that ``walfast bench --help`` stays
light; the machinery takes the names from here.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from walfast.bench.run import BenchConfig

__all__ = [
    "ARCHIVE_BUCKET", "ARCHIVE_PREFIX", "DISCARD", "LEVELS", "MODES", "RECEIVERS", "TRANSPORTS",
    "add_embedded_options", "add_run_options", "add_sync_options", "config_from_args",
    "parse_list", "parse_size",
]

#: Where the ``archive`` mode's objects go (emptied after each run).
ARCHIVE_BUCKET, ARCHIVE_PREFIX = "bench", "wal"

#: mode -> (extra receiver options, output compression method ('' = none)).
#: -Z uses pg_receivewal's METHOD[:DETAIL] syntax; gzip's detail is the level.
MODES: dict[str, tuple[list[str], str]] = {
    "durable": ([], ""),
    "no-sync": (["--no-sync"], ""),
    "synchronous": (["--synchronous"], ""),
    "lz4": (["-Z", "lz4"], "lz4"),
    "gzip1": (["-Z", "gzip:1"], "gzip"),
    "zstd": (["-Z", "zstd"], "zstd"),
    # durable with the run's slot, completed segments shipped to the loopback
    # S3 server the harness runs (walfast.bench.archive); walfast only
    "archive": (["--archive", f"s3://{ARCHIVE_BUCKET}/{ARCHIVE_PREFIX}"], ""),
}
#: The receivers that write (walfast and pg_receivewal get the same options).
RECEIVERS = ("walfast", "pg_receivewal")
#: The receiver that keeps nothing (:mod:`walfast.bench.discard`).
DISCARD = "discard"
#: How the receivers reach the throwaway primary: 127.0.0.1 without TLS, its
#: unix socket, 127.0.0.1 with TLS.
TRANSPORTS = ("tcp", "unix", "tls")
#: The ``synchronous_commit`` levels the synchronous standby is measured under.
LEVELS = ("on", "remote_write")

ALL_MODES = tuple(MODES)
ALL_RECEIVERS = (*RECEIVERS, DISCARD)

_SIZE_RE = re.compile(r"^\s*([0-9.]+)\s*([kKmMgG]i?[bB]?)?\s*$")
_UNITS = {"": 10**6, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 2**10, "mi": 2**20, "gi": 2**30}


def parse_size(text: str) -> int:
    """'3GB' -> 3*10^9, '64MiB' -> 64*2^20, '512' -> 512 MB."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 3GB, 64MB, 512MiB)")
    unit = (m.group(2) or "").lower().rstrip("b")
    try:
        value = int(float(m.group(1)) * _UNITS[unit])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 3GB, 64MB, 512MiB)"
                                         ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (it must be more than 0)")
    return value


def parse_list(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """A comma-separated subset of *allowed*, in the order given."""
    def parse(text: str) -> list[str]:
        items = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
        bad = [s for s in items if s not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(bad) if bad else repr(text)}; choose from "
                f"{','.join(allowed)}")
        return items
    return parse


def _whole_number(minimum: int, words: str) -> Callable[[str], int]:
    """An argparse type: a whole number of at least *minimum* (*words*
    says the rule in the error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{words}: {text!r}")
        return value
    return parse


_positive = _whole_number(1, "must be at least 1")
_not_negative = _whole_number(0, "must not be negative")


Group = Any     # an argparse parser or argument group


def add_run_options(g: Group, *, size: str, modes: Sequence[str]) -> None:
    """What to run: size, rounds, modes, receivers, where output goes."""
    g.add_argument("--size", type=parse_size, default=parse_size(size), metavar="SIZE",
                   help=f"WAL each run receives (default {size}); MB/GB = 10^6/10^9 bytes, "
                        "MiB/GiB = 2^20/2^30; rounded up to whole segments")
    g.add_argument("--rounds", type=_positive, default=3, metavar="N",
                   help="rounds; each runs every receiver in every mode once (default 3)")
    g.add_argument("--modes", type=parse_list(ALL_MODES), default=list(modes), metavar="LIST",
                   help=f"comma-separated modes, of {', '.join(ALL_MODES)} (default "
                        f"{','.join(modes)}): durable is the receivers' default; no-sync "
                        "and synchronous their --no-sync and --synchronous; lz4, gzip1 "
                        "(level 1), zstd their -Z; archive: walfast --archive to a "
                        "loopback S3 server (needs moto[server])")
    g.add_argument("--receivers", type=parse_list(ALL_RECEIVERS), default=list(ALL_RECEIVERS),
                   metavar="LIST",
                   help="comma-separated receivers, of walfast, pg_receivewal, discard "
                        "(default all); pg_receivewal is the server major's own, when one is found; "
                        "discard keeps nothing: the sender's ceiling")
    g.add_argument("--workdir", type=Path, metavar="DIR",
                   default=Path(os.environ.get("WALFAST_BENCH_DIR", "/var/tmp")),
                   help="where the receivers' output directories go: the disk to measure, not "
                        "tmpfs (default $WALFAST_BENCH_DIR or /var/tmp)")
    g.add_argument("--pin-store", action="store_true",
                   help="archive mode: run the S3 server on the last CPU alone and everything "
                        "else on the others (a diagnostic)")


def add_embedded_options(g: Group, *, transports: Sequence[str]) -> None:
    """The throwaway primary: its major, segment size, and how the
    receivers reach it."""
    g.add_argument("--transports", type=parse_list(TRANSPORTS), default=list(transports),
                   metavar="LIST",
                   help=f"comma-separated, of tcp, unix, tls (default {','.join(transports)}): "
                        "127.0.0.1 without TLS, the unix socket, 127.0.0.1 with TLS")
    g.add_argument("--major", type=int, metavar="N",
                   help="PostgreSQL major of the primary and of pg_receivewal (default: "
                        "PG_BINDIR, PG_MAJOR, else the newest installed)")
    g.add_argument("--wal-segsize", type=_positive, default=16, metavar="MB",
                   help="the primary's WAL segment size in MiB (default 16)")


def add_sync_options(g: Group, *, seconds_help: str) -> None:
    """pgbench with each receiver as the only synchronous standby."""
    g.add_argument("--pgbench-seconds", type=_not_negative, default=20, metavar="S",
                   help=seconds_help)
    g.add_argument("--pgbench-scale", type=_positive, default=10, metavar="N",
                   help="pgbench -i scale (default 10)")
    g.add_argument("--pgbench-clients", type=_positive, default=8, metavar="N",
                   help="pgbench -c (default 8)")
    g.add_argument("--pgbench-threads", type=_positive, default=2, metavar="N",
                   help="pgbench -j (default 2)")
    g.add_argument("--pgbench-transport", choices=TRANSPORTS, default="unix",
                   help="how the synchronous standby connects (default unix)")
    g.add_argument("--synchronous-commit", type=parse_list(LEVELS), default=list(LEVELS),
                   metavar="LIST",
                   help="comma-separated synchronous_commit levels pgbench runs under, of "
                        "on, remote_write (default both)")


def config_from_args(args: argparse.Namespace, *, command: str, argv: list[str],
                     sync: bool, json_path: Path | None, markdown_path: Path | None,
                     chart_path: Path | None, compact: bool) -> BenchConfig:
    """The :class:`~walfast.bench.run.BenchConfig` of parsed options."""
    from walfast.bench.run import BenchConfig, SyncConfig

    dsn = getattr(args, "dbname", None)
    return BenchConfig(
        size=args.size, rounds=args.rounds, modes=args.modes, receivers=args.receivers,
        workdir=args.workdir, pin_store=args.pin_store,
        transports=None if dsn else args.transports, major=args.major,
        wal_segsize_mb=args.wal_segsize, dsn=dsn, slot=getattr(args, "slot", None),
        max_wait=getattr(args, "max_wait", 3600.0), limits=not getattr(args, "no_limits", False),
        sync=SyncConfig(seconds=args.pgbench_seconds, scale=args.pgbench_scale,
                        clients=args.pgbench_clients, threads=args.pgbench_threads,
                        transport=args.pgbench_transport, levels=args.synchronous_commit)
        if sync else None,
        json_path=json_path, markdown_path=markdown_path, chart_path=chart_path,
        compact=compact, command=command, argv=argv)
