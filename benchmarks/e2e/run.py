"""``python -m benchmarks.e2e``: the end-to-end benchmark, one command.

Starts a throwaway primary, makes one WAL range (``--size``), then per round
(``--rounds``) measures the limits (disk, memcpy) and runs every receiver in
every mode over every transport on that same range, walfast and
pg_receivewal next to each other (A B A B ...), then the discard receiver.
Then the synchronous-standby benchmark (pgbench).  Prints the table, writes
the JSON (every run's figures, machine and versions), a markdown copy of the
table next to it, and the chart.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.e2e import archive, limits, report, syncbench
from benchmarks.e2e.primary import TRANSPORTS, Primary
from benchmarks.e2e.receivers import DISCARD, MODES, RECEIVERS, REPO_ROOT, Run, measure
from walfast.cluster import find_bindir

_SIZE_RE = re.compile(r"^\s*([0-9.]+)\s*([kKmMgG]i?[bB]?)?\s*$")
_UNITS = {"": 10**6, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 2**10, "mi": 2**20, "gi": 2**30}


def parse_size(text: str) -> int:
    """'3GB' -> 3*10^9, '64MiB' -> 64*2^20, '512' -> 512 MB."""
    m = _SIZE_RE.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 3GB, 64MB, 512MiB)")
    unit = (m.group(2) or "").lower().rstrip("b")
    return int(float(m.group(1)) * _UNITS[unit])


def _choices(allowed: tuple[str, ...] | list[str]) -> Any:
    def parse(text: str) -> list[str]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in items if s not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(
                f"unknown {bad or text!r}; choose from {', '.join(allowed)}")
        return items
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.e2e",
        description="End-to-end benchmark of walfast against pg_receivewal on a throwaway "
                    "primary (see benchmarks/README.md).")
    p.add_argument("--size", type=parse_size, default=parse_size("3GB"),
                   help="WAL to generate and receive per run (default 3GB; MB/GB = 10^6/10^9, "
                        "MiB/GiB = 2^20/2^30); rounded up to whole segments")
    p.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    p.add_argument("--modes", type=_choices(list(MODES)), default=list(MODES),
                   help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--transports", type=_choices(TRANSPORTS), default=list(TRANSPORTS),
                   help=f"comma-separated subset of {','.join(TRANSPORTS)}")
    p.add_argument("--receivers", type=_choices((*RECEIVERS, DISCARD)),
                   default=[*RECEIVERS, DISCARD],
                   help="comma-separated subset of walfast,pg_receivewal,discard")
    p.add_argument("--major", type=int, metavar="N",
                   help="PostgreSQL major of the primary and of pg_receivewal (Debian's or "
                        "scripts/fetch-postgresql's; default: PG_BINDIR, PG_MAJOR, else "
                        "the one found first, as walfast.cluster.find_bindir)")
    p.add_argument("--wal-segsize", type=int, default=16, metavar="MB",
                   help="the primary's WAL segment size in MiB (default 16)")
    p.add_argument("--pgbench-seconds", type=int, default=20,
                   help="duration of each synchronous-standby pgbench run; 0 skips that "
                        "benchmark (default 20)")
    p.add_argument("--pgbench-scale", type=int, default=10)
    p.add_argument("--pgbench-clients", type=int, default=8)
    p.add_argument("--pgbench-threads", type=int, default=2)
    p.add_argument("--pgbench-transport", choices=TRANSPORTS, default="unix",
                   help="how the synchronous standby connects (default unix)")
    p.add_argument("--pin-store", action="store_true",
                   help="archive mode: run the S3 server on the last CPU alone and everything "
                        "else (primary, receivers, harness) on the others, so the store's CPU "
                        "does not compete with the receive (a diagnostic; default: all share "
                        "every CPU)")
    p.add_argument("--workdir", type=Path, default=Path(os.environ.get("WALFAST_BENCH_DIR",
                                                                      "/var/tmp")),
                   help="where the receivers' output directories go; must be on the disk "
                        "being measured, not tmpfs (default $WALFAST_BENCH_DIR or /var/tmp)")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    p.add_argument("--json", type=Path,
                   default=REPO_ROOT / "benchmarks" / "results" / f"e2e-{stamp}.json",
                   help="results file (default benchmarks/results/e2e-DATE.json); the "
                        "markdown table goes next to it (.md)")
    p.add_argument("--chart", type=Path, default=REPO_ROOT / "benchmarks" / "e2e_chart.png",
                   help="PNG chart (default benchmarks/e2e_chart.png); '' for none")
    return p


# --------------------------------------------------------------------------- #
# machine and versions
# --------------------------------------------------------------------------- #

def _mount_of(path: Path) -> dict[str, str]:
    """Filesystem type, device and options of the mount holding ``path``."""
    path_s = str(path.resolve())
    best: tuple[str, dict[str, str]] = ("", {})
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            mnt = left.split()[4].replace("\\040", " ")
            if (path_s == mnt or path_s.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
                fstype, dev = right.split()[:2]
                best = (mnt, dict(mount=mnt, fstype=fstype, device=dev, options=left.split()[5],
                                  super_options=right.split()[2]))
    return best[1]


def _out(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                              cwd=REPO_ROOT).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"


def machine_info(bindir: Path, workdir: Path, primary: Primary) -> dict[str, Any]:
    import numpy
    import psycopg

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    walfast = _out([sys.executable, "-c",
                    "import walfast, walfast._core; print(walfast.__version__, walfast.__file__)"])
    return dict(
        cpu=cpu, cpus=os.cpu_count(), memory_gib=round(int(mem) / 2**20, 1),
        kernel=platform.release(), python=platform.python_version(),
        psycopg=psycopg.__version__, libpq=psycopg.pq.version(), numpy=numpy.__version__,
        postgres=_out([str(bindir / "postgres"), "--version"]),
        pg_receivewal=_out([str(bindir / "pg_receivewal"), "--version"]),
        walfast=walfast,
        git_commit=_out(["git", "rev-parse", "--short", "HEAD"]),
        git_dirty=bool(_out(["git", "status", "--porcelain", "--untracked-files=no"])),
        output_fs=_mount_of(workdir),
        pg_wal_fs=_mount_of(primary.cluster.pg_wal),
    )


# --------------------------------------------------------------------------- #
# the run
# --------------------------------------------------------------------------- #

def _say(msg: str) -> None:
    print(msg, flush=True)


def _run_line(r: dict[str, Any]) -> str:
    head = f"  round {r['round']} {r['transport']:<5} {r['mode']:<12} {r['receiver']:<14}"
    if r["status"] != "ok":
        return f"{head} {r['status'].upper()}: {r.get('error')}"
    ws = r["walsender_cpu_s_per_gb"]
    st = r["stream_mb_s"]
    line = (f"{head} {r['mb_s']:>8,.0f} MB/s ({'?' if st is None else f'{st:,.0f}'} streaming"
            + (f", {r['recv_mb_s']:,.0f} receive" if r.get("recv_mb_s") else "") + ")  "
            f"recv {r['recv_cpu_s_per_gb']:.2f} CPU s/GB  "
            f"walsender {'?' if ws is None else f'{ws:.2f}'} CPU s/GB  "
            f"written {(r['write_bytes'] or 0) / 1e6:,.0f} MB")
    if r["mode"] == "archive":
        def f(key: str, fmt: str) -> str:
            return "?" if r.get(key) is None else format(r[key], fmt)
        line += (f"\n{'':<45} archive: upload {f('upload_mb_s', ',.0f')} MB/s, lag at end "
                 f"{f('upload_lag_end_s', '.2f')} s, backlog max {f('backlog_max_segments', 'd')} "
                 f"segments, S3 server {f('store_cpu_s_per_gb', '.2f')} CPU s/GB, "
                 f"read back {(r.get('read_bytes') or 0) / 1e6:,.0f} MB")
    return line


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rounds < 1:
        _say("--rounds must be at least 1")
        return 2
    try:
        bindir = find_bindir(major=args.major)
    except ValueError as exc:               # PG_MAJOR, or --major, not a major
        _say(str(exc))
        return 2
    if bindir is None:
        if args.major is not None:
            _say(f"PostgreSQL {args.major} not found (scripts/fetch-postgresql {args.major} "
                 "fetches it)")
        else:
            _say("PostgreSQL server binaries not found (set PG_BINDIR or PG_MAJOR)")
        return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    fs = _mount_of(args.workdir)
    if fs.get("fstype") in ("tmpfs", "ramfs") and not os.environ.get("WALFAST_BENCH_ALLOW_TMPFS"):
        _say(f"{args.workdir} is on {fs['fstype']}: use --workdir on the disk to measure "
             "(or WALFAST_BENCH_ALLOW_TMPFS=1)")
        return 2
    archiving = "archive" in args.modes and "walfast" in args.receivers
    no_store = archive.moto_available() if archiving else None
    if no_store:
        _say(f"archive mode: {no_store}; its runs are reported unavailable")
    store_cpus = None
    if args.pin_store:
        cpus = sorted(os.sched_getaffinity(0))
        if not archiving or no_store or len(cpus) < 2:
            _say("--pin-store needs the archive mode, moto and at least 2 CPUs")
            return 2
        # Everything started from here on (the primary and its walsenders,
        # the receivers) inherits the harness's CPUs; the S3 server gets the last.
        store_cpus = {cpus[-1]}
        os.sched_setaffinity(0, set(cpus[:-1]))
    workdir = Path(tempfile.mkdtemp(prefix="walfast-e2e-", dir=args.workdir))
    logdir = workdir / "logs"
    logdir.mkdir()
    receivers = [r for r in RECEIVERS if r in args.receivers]
    t_start = time.monotonic()
    store = None
    try:
        if archiving and not no_store:
            store = archive.Store(logdir, cpus=store_cpus)
        primary = Primary(bindir, args.size, args.wal_segsize)
    except BaseException:
        if store is not None:
            store.close()
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    try:
        _say(f"primary: {primary.cluster.base} (port {primary.cluster.port}); "
             f"output under {workdir}")
        rng = primary.make_range(args.size, progress=_say)
        doc: dict[str, Any] = {"meta": dict(
            date=datetime.datetime.now().isoformat(timespec="seconds"),
            argv=sys.argv, rounds=args.rounds, modes=args.modes, transports=args.transports,
            receivers=args.receivers, range=rng.as_dict(),
            compressed_fraction=primary.compressibility(rng),
            primary_settings={k: ({True: "on", False: "off"}[v] if isinstance(v, bool) else str(v))
                              for k, v in primary.cluster.settings().items()
                              if not k.startswith("ssl_")},
            machine=machine_info(bindir, args.workdir, primary),
            store=None if store is None else store.describe(),
            pinned=None if store_cpus is None else dict(
                store=sorted(store_cpus), others=sorted(os.sched_getaffinity(0)))),
            "limits": [], "runs": []}
        os.sync()
        timeout = max(300.0, rng.nbytes / 2e6)  # 2 MB/s would be a broken run
        for n in range(1, args.rounds + 1):
            _say(f"round {n}/{args.rounds}")
            round_limits = [limits.disk_limit(workdir, rng.nbytes, rng.segment_size),
                            limits.memcpy_limit(rng.nbytes, rng.segment_size)]
            if store is not None:
                round_limits.append(archive.upload_limit(store, workdir, rng))
            for lim in round_limits:
                lim["round"] = n
                doc["limits"].append(lim)
                if "mb_s" not in lim:
                    _say(f"  round {n} limit {lim['limit']:<6} FAILED: {lim.get('error')}")
                    continue
                _say(f"  round {n} limit {lim['limit']:<6} {lim['mb_s']:>10,.0f} MB/s")
            # The modes' order turns each round (A B C, B C A, ...), so that
            # no mode always runs first or right after the same one.
            k = (n - 1) % len(args.modes)
            modes = args.modes[k:] + args.modes[:k]
            for transport in args.transports:
                plan = [Run(rc, mode, transport, n) for mode in modes for rc in receivers]
                if DISCARD in args.receivers:
                    plan.append(Run(DISCARD, "discard", transport, n))
                for run in plan:
                    result = measure(run, primary, rng, workdir, logdir, timeout, store=store)
                    doc["runs"].append(result)
                    _say(_run_line(result))
        primary.drop_base_slot()
        if args.pgbench_seconds > 0:
            _say(f"synchronous standby: pgbench -i -s {args.pgbench_scale}")
            syncbench.init_pgbench(primary, args.pgbench_scale)
            sync_runs = []
            for n in range(1, args.rounds + 1):
                # The order turns each round (A B C D, B C D A, ...): in one
                # full run TPS rose with the position in the round.
                k = (n - 1) % len(syncbench.STANDBYS)
                for standby in syncbench.STANDBYS[k:] + syncbench.STANDBYS[:k]:
                    if standby != "none" and standby not in args.receivers:
                        continue
                    r = syncbench.run_one(primary, standby, args.pgbench_transport,
                                          args.pgbench_seconds, args.pgbench_clients,
                                          args.pgbench_threads, workdir, logdir, n)
                    sync_runs.append(r)
                    _say(f"  round {n} standby {standby:<14} " + (
                        f"{r['tps']:>9,.0f} TPS  latency {r['latency_ms']:.2f} ms"
                        if r["status"] == "ok" else f"FAILED: {r['error']}"))
            doc["syncbench"] = dict(
                settings=dict(scale=args.pgbench_scale, clients=args.pgbench_clients,
                              threads=args.pgbench_threads, seconds=args.pgbench_seconds,
                              transport=args.pgbench_transport, script="tpcb-like",
                              synchronous_commit="on"),
                runs=sync_runs)
        doc["meta"]["duration_s"] = round(time.monotonic() - t_start, 1)
    finally:
        primary.close()
        if store is not None:
            store.close()
        # output directories left by an interrupted run; the logs stay
        for p in workdir.iterdir():
            if p != logdir:
                shutil.rmtree(p, ignore_errors=True)
    doc["summary"] = report.summarize(doc)
    doc["sync_summary"] = report.sync_summary(doc)
    print()
    print(report.render(doc))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    args.json.with_suffix(".md").write_text(report.render(doc, markdown=True))
    _say(f"results: {args.json} (+ .md)")
    if str(args.chart) not in ("", "."):
        report.chart(doc, args.chart)
        _say(f"chart: {args.chart}")
    _say(f"total time {doc['meta']['duration_s']:.0f} s")
    failed = [r for r in doc["runs"] if r["status"] == "failed"]
    failed += [r for r in doc.get("syncbench", {}).get("runs", []) if r["status"] != "ok"]
    failed += [x for x in doc["limits"] if x.get("status") == "failed"]
    unavailable = [r for r in doc["runs"] if r["status"] == "unavailable"]
    if failed or unavailable:
        _say(f"{len(failed)} failed and {len(unavailable)} unavailable run(s); "
             f"their logs are kept in {logdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0
