"""``walfast demo``: walfast's main job on an embedded default.

Starts a throwaway local PostgreSQL primary, makes it write WAL, streams that
WAL with ``walfast receive`` (a separate process, exactly as a user runs it),
checks every completed segment byte for byte against the primary's own
``pg_wal``, reports how fast it went, and removes everything it created.

Catch-up is what is timed: the WAL is generated first (kept by a slot), then
walfast streams it from the start to ``--endpos``.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from walfast.cluster import Cluster, find_bindir
from walfast.lsn import (
    format_lsn, parse_lsn, parse_segment_file_name, parse_wal_file_name, segment_start,
)

__all__ = ["main", "run_demo"]


def _say(msg: str) -> None:
    print(f"walfast demo: {msg}", flush=True)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_demo(segment_size_mb: int = 16, wal_mb: int = 256, keep: bool = False) -> int:
    """Run the demo; return the exit status (0 when every check passed)."""
    bindir = find_bindir()
    if bindir is None:
        print("walfast demo: error: PostgreSQL server binaries not found; install PostgreSQL "
              "(>= 15) or set PG_BINDIR to the directory holding initdb and pg_ctl",
              file=sys.stderr)
        return 1
    version = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                             text=True).stdout.strip()
    _say(f"{version} from {bindir}")
    out = Path(tempfile.mkdtemp(prefix="walfast-demo-wal-"))
    with Cluster(bindir, wal_segsize_mb=segment_size_mb) as pg:
        segsize = pg.wal_segment_size
        _say(f"started a throwaway primary on 127.0.0.1:{pg.port} "
             f"({segment_size_mb} MB WAL segments, data in {pg.datadir})")
        pg.execute("SELECT pg_create_physical_replication_slot('walfast_demo', true)")
        ((slot_lsn,),) = pg.execute(
            "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = 'walfast_demo'")
        t0 = time.monotonic()
        pg.generate_wal(wal_mb * 1_000_000)
        end_lsn = pg.switch_wal()
        gen_s = time.monotonic() - t0
        begin = segment_start(parse_lsn(slot_lsn), segsize)
        # Stop at the end of the segment holding the switch record: that
        # segment is complete (the switch pads it), the next one is not begun.
        stop = segment_start(end_lsn, segsize) + segsize
        _say(f"generated {(stop - begin) / 1e6:.0f} MB of WAL ({format_lsn(begin)} .. "
             f"{format_lsn(stop)}) in {gen_s:.1f} s")

        # Catch up from the slot's position to the end, as a user would.
        cmd = [sys.executable, "-m", "walfast.cli", "receive", "-D", str(out),
               "-d", pg.conninfo(), "-S", "walfast_demo", "-E", format_lsn(stop - 1),
               "-n", "-v"]
        _say("running: walfast receive -D " + str(out) + " -S walfast_demo -E "
             + format_lsn(stop - 1) + " -n -v")
        cpu0 = _children_cpu()
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.monotonic() - t0
        cpu = _children_cpu() - cpu0
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            _say(f"walfast receive exited with {proc.returncode}")
            return 1
        lines = proc.stderr.strip().splitlines()
        for line in lines[:2] + (["..."] if len(lines) > 4 else []) + lines[-2:]:
            print("    " + line)

        # Check: every completed segment is the primary's, byte for byte.
        # Completed segments only: not .partial, nor walfast's state directory.
        received = sorted(p for p in out.iterdir()
                          if (wal := parse_wal_file_name(p.name)) and wal.complete and wal.plain)
        nbytes = 0
        for f in received:
            theirs = pg.pg_wal / f.name
            if f.read_bytes() != theirs.read_bytes():
                _say(f"MISMATCH: {f.name} differs from the primary's pg_wal/{f.name}")
                return 1
            nbytes += f.stat().st_size
        segnos = [parse_segment_file_name(f.name, segsize)[1] for f in received]
        expected = list(range(begin // segsize, stop // segsize))
        if segnos != expected:
            _say(f"MISMATCH: received segments {segnos}, expected {expected}")
            return 1
        ((restart,),) = pg.execute(
            "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = 'walfast_demo'")
        _say(f"checked: {len(received)} completed segments ({nbytes / 1e6:.0f} MB) are "
             f"byte-identical to the primary's pg_wal; the slot advanced to {restart}")
        _say(f"streamed {nbytes / 1e6:.0f} MB in {wall:.2f} s: {nbytes / 1e6 / wall:.0f} MB/s, "
             f"walfast process CPU {cpu:.2f} s including interpreter start-up "
             f"({cpu / (nbytes / 1e9):.2f} s/GB); durable: every segment fdatasync'ed "
             "before its rename")
    if keep:
        _say(f"kept the received WAL in {out}")
    else:
        shutil.rmtree(out, ignore_errors=True)
    _say("done; the throwaway primary and its files are gone")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="walfast demo",
        description="Start a throwaway local PostgreSQL primary, generate WAL, stream it with "
        "walfast receive, check every segment byte for byte against the primary's pg_wal, "
        "report the speed, and remove everything.")
    p.add_argument("--segment-size", type=int, default=16, metavar="MB",
                   help="WAL segment size of the throwaway primary (default 16)")
    p.add_argument("--wal", type=int, default=256, metavar="MB",
                   help="how much WAL to generate (default 256)")
    p.add_argument("--keep", action="store_true", help="keep the received WAL directory")
    args = p.parse_args(argv)
    return run_demo(args.segment_size, args.wal, args.keep)


if __name__ == "__main__":
    sys.exit(main())
