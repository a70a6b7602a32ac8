"""The benchmark: its configuration, the round loop, and the results
document.

:func:`run_benchmark` starts the source (a throwaway primary that writes
one WAL range, or a real server whose own traffic makes one), then per
round (``rounds``) measures the limits (disk, memcpy) and runs every
receiver in every mode over every transport on that same range, walfast
and pg_receivewal next to each other (A B A B ...), then the discard
receiver; the modes' order turns each round.  Then, when asked, the
synchronous-standby benchmark (pgbench, :mod:`walfast.bench.syncbench`).
It prints a line per run while it goes, then the table; writes the results
document (JSON: every run's figures and command line, the limits, the
pgbench runs, machine and versions, the server's settings), the markdown
table and the chart when asked.

``walfast bench`` (:mod:`walfast.cli.bench`) and ``python -m
benchmarks.e2e`` are its two front ends.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from walfast.bench import archive, limits, report, syncbench
from walfast.bench.options import DISCARD, LEVELS, RECEIVERS
from walfast.bench.primary import ExternalPrimary, Primary, SetupError, Source, WalRange
from walfast.bench.receivers import PACKAGE_ROOT, Run, measure
from walfast.cluster import find_bindir

__all__ = ["BenchConfig", "SetupError", "SyncConfig", "machine_info", "run_benchmark"]

Say = Callable[[str], None]


@dataclass
class SyncConfig:
    """The synchronous-standby benchmark (pgbench)."""

    seconds: int = 20
    scale: int = 10
    clients: int = 8
    threads: int = 2
    #: how the standby connects (tcp, unix, tls)
    transport: str = "unix"
    #: the synchronous_commit levels, each a pgbench run per standby and round
    levels: list[str] = field(default_factory=lambda: list(LEVELS))


@dataclass
class BenchConfig:
    """What to run and where the results go (see the front ends' --help)."""

    size: int
    rounds: int
    modes: list[str]
    receivers: list[str]
    workdir: Path
    #: the throwaway primary's transports; None with ``dsn`` (its own)
    transports: list[str] | None = None
    #: a real server (``-d``); None: the throwaway primary
    dsn: str | None = None
    #: with ``dsn``: an existing slot whose WAL to use (``-S``)
    slot: str | None = None
    #: with ``dsn``: how long to wait for the server's own traffic, seconds
    max_wait: float = 3600.0
    #: the throwaway primary's major (None: find_bindir's) and segment size
    major: int | None = None
    wal_segsize_mb: int = 16
    #: measure the disk and memcpy limits each round
    limits: bool = True
    sync: SyncConfig | None = None
    pin_store: bool = False
    json_path: Path | None = None
    markdown_path: Path | None = None
    chart_path: Path | None = None
    #: the compact table on the terminal (walfast bench's), else every figure
    compact: bool = False
    #: the front end's name and command line, for the results document
    command: str = "walfast bench"
    argv: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- #
# machine and versions
# --------------------------------------------------------------------------- #

def mount_of(path: Path) -> dict[str, str]:
    """Filesystem type, device and options of the mount holding ``path``."""
    path_s = str(path.resolve())
    best: tuple[str, dict[str, str]] = ("", {})
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            mnt = left.split()[4].replace("\\040", " ")
            if (path_s == mnt or path_s.startswith(mnt.rstrip("/") + "/")) \
                    and len(mnt) >= len(best[0]):
                fstype, dev = right.split()[:2]
                best = (mnt, dict(mount=mnt, fstype=fstype, device=dev, options=left.split()[5],
                                  super_options=right.split()[2]))
    return best[1]


def _out(argv: list[str], env: dict[str, str] | None = None) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                              cwd=PACKAGE_ROOT, env=env).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unknown ({exc})"


def machine_info(source: Source, workdir: Path) -> dict[str, Any]:
    """The machine, the versions of everything involved, the filesystems."""
    import psycopg

    from walfast import __version__
    from walfast.cluster import tool_env

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    try:
        import numpy
        numpy_version: str | None = numpy.__version__
    except ImportError:
        numpy_version = None
    import walfast
    info: dict[str, Any] = dict(
        cpu=cpu, cpus=os.cpu_count(), memory_gib=round(int(mem) / 2**20, 1),
        kernel=platform.release(), python=platform.python_version(),
        psycopg=psycopg.__version__, libpq=psycopg.pq.version(), numpy=numpy_version,
        walfast=f"{__version__} {walfast.__file__}",
        loadavg_at_start=[round(x, 2) for x in os.getloadavg()],
        output_fs=mount_of(workdir))
    if isinstance(source, Primary):
        info["postgres"] = _out([str(source.bindir / "postgres"), "--version"],
                                tool_env(source.bindir))
        info["pg_wal_fs"] = mount_of(source.cluster.pg_wal)
    elif isinstance(source, ExternalPrimary):
        info["postgres"] = f"PostgreSQL {source.server_version} (the server's)"
    if source.receivewal is not None:
        info["pg_receivewal"] = _out([str(source.receivewal), "--version"],
                                     tool_env(source.receivewal.parent))
    # The commit only of a checkout the walfast run here comes from.
    if (PACKAGE_ROOT / ".git").exists():
        info["git_commit"] = _out(["git", "rev-parse", "--short", "HEAD"])
        info["git_dirty"] = bool(_out(["git", "status", "--porcelain", "--untracked-files=no"]))
    return info


# --------------------------------------------------------------------------- #
# the run
# --------------------------------------------------------------------------- #

def run_line(r: dict[str, Any]) -> str:
    """The progress line of one run."""
    head = f"  round {r['round']} {r['transport']:<5} {r['mode']:<12} {r['receiver']:<14}"
    if r["status"] != "ok":
        return f"{head} {r['status'].upper()}: {r.get('error')}"
    ws = r["walsender_cpu_s_per_gb"]
    st = r["stream_mb_s"]
    line = (f"{head} {r['mb_s']:>8,.0f} MB/s ({'?' if st is None else f'{st:,.0f}'} streaming"
            + (f", {r['recv_mb_s']:,.0f} receive" if r.get("recv_mb_s") else "") + ")  "
            f"recv {r['recv_cpu_s_per_gb']:.2f} CPU s/GB  "
            f"walsender {'n/a' if ws is None else f'{ws:.2f}'} CPU s/GB  "
            f"written {(r['write_bytes'] or 0) / 1e6:,.0f} MB")
    if r["mode"] == "archive":
        def f(key: str, fmt: str) -> str:
            return "?" if r.get(key) is None else format(r[key], fmt)
        line += (f"\n{'':<45} archive: upload {f('upload_mb_s', ',.0f')} MB/s, lag at end "
                 f"{f('upload_lag_end_s', '.2f')} s, backlog max {f('backlog_max_segments', 'd')} "
                 f"segments, S3 server {f('store_cpu_s_per_gb', '.2f')} CPU s/GB, "
                 f"read back {(r.get('read_bytes') or 0) / 1e6:,.0f} MB")
    return line


def _sync_line(r: dict[str, Any]) -> str:
    head = f"  round {r['round']} standby {r['standby']:<14} {r['synchronous_commit']:<13}"
    if r["status"] != "ok":
        return f"{head} {r['status'].upper()}: {r.get('error')}"
    cpu = r.get("recv_cpu_us_per_tx")
    return (f"{head} {r['tps']:>9,.0f} TPS  latency {r['latency_ms']:.2f} ms"
            + ("" if cpu is None else f"  receiver {cpu:.1f} CPU µs/transaction"))


def precompile_walfast() -> bool:
    """Write the bytecode cache of the walfast the receivers run, so that
    no run pays for compiling it: a checkout never run before has none, and
    with ``PYTHONDONTWRITEBYTECODE`` set no run would ever write it (every
    start-up would compile walfast again).  True when the cache is complete
    (an installed walfast's normally is already)."""
    import compileall

    import walfast
    try:
        return bool(compileall.compile_dir(str(Path(walfast.__file__).parent), quiet=2))
    except OSError:
        return False


def _check_config(cfg: BenchConfig) -> None:
    if cfg.dsn is None and cfg.slot is not None:
        raise SetupError("-S/--slot names a slot of the server given with -d")
    if cfg.dsn is not None and cfg.sync is not None:
        raise SetupError("the synchronous-standby benchmark runs pgbench and sets "
                         "synchronous_standby_names: only on the throwaway primary, not with -d")
    if cfg.sync is not None and cfg.sync.seconds < 1:
        raise SetupError("the synchronous-standby benchmark needs --pgbench-seconds of 1 or more")
    if cfg.chart_path is not None:
        missing = report.matplotlib_missing()
        if missing:
            raise SetupError(f"--chart: {missing}")
    cfg.workdir.mkdir(parents=True, exist_ok=True)
    fs = mount_of(cfg.workdir)
    if fs.get("fstype") in ("tmpfs", "ramfs") and not os.environ.get("WALFAST_BENCH_ALLOW_TMPFS"):
        raise SetupError(f"{cfg.workdir} is on {fs['fstype']}: use --workdir on the disk to "
                         "measure (or WALFAST_BENCH_ALLOW_TMPFS=1)")


def _open_source(cfg: BenchConfig, say: Say) -> tuple[Source, WalRange]:
    """Start the throwaway primary and make the range, or pin one on the
    real server."""
    if cfg.dsn is not None:
        ext = ExternalPrimary(cfg.dsn, say=say)
        try:
            say(f"server: PostgreSQL {ext.server_version} "
                f"({'standby' if ext.in_recovery else 'primary'}, {ext.transport}"
                + ("" if ext.local else ", remote: walsender CPU n/a") + "); pg_receivewal: "
                + (str(ext.receivewal) if ext.receivewal else "not found"))
            rng = ext.pin_range(cfg.size, cfg.slot, cfg.max_wait, progress=say)
        except BaseException:
            ext.close()
            raise
        return ext, rng
    try:
        bindir = find_bindir(major=cfg.major)
    except ValueError as exc:               # PG_MAJOR, or --major, not a major
        raise SetupError(str(exc)) from None
    if bindir is None:
        if cfg.major is not None:
            raise SetupError(f"PostgreSQL {cfg.major} not found (scripts/fetch-postgresql "
                             f"{cfg.major} fetches it)")
        raise SetupError("PostgreSQL server binaries not found: install PostgreSQL, or set "
                         "PG_BINDIR to the directory holding initdb and pg_ctl")
    primary = Primary(bindir, cfg.size, cfg.wal_segsize_mb)
    try:
        say(f"a throwaway primary ({_out([str(bindir / 'postgres'), '--version'])}) on "
            f"127.0.0.1:{primary.cluster.port}, data in {primary.cluster.base}")
        rng = primary.make_range(cfg.size, progress=say)
    except BaseException:
        primary.close()
        raise
    return primary, rng


def run_benchmark(cfg: BenchConfig, say: Say = print) -> int:
    """Run the benchmark; return 0 when every run counted, 1 when one
    failed.  :class:`SetupError` when it cannot run; KeyboardInterrupt
    goes through after everything was cleaned up (receivers stopped, slots
    dropped, the throwaway primary and the output removed)."""
    _check_config(cfg)
    bytecode_cached = precompile_walfast()
    archiving = "archive" in cfg.modes and "walfast" in cfg.receivers
    no_store = archive.moto_available() if archiving else None
    if no_store:
        say(f"archive mode: {no_store}; its runs are reported unavailable")
    store_cpus = None
    if cfg.pin_store:
        cpus = sorted(os.sched_getaffinity(0))
        if not archiving or no_store or len(cpus) < 2:
            raise SetupError("--pin-store needs the archive mode, moto and at least 2 CPUs")
        # Everything started from here on (the primary and its walsenders,
        # the receivers) inherits the harness's CPUs; the S3 server gets the last.
        store_cpus = {cpus[-1]}
        os.sched_setaffinity(0, set(cpus[:-1]))
    workdir = Path(tempfile.mkdtemp(prefix="walfast-bench-", dir=cfg.workdir))
    logdir = workdir / "logs"
    logdir.mkdir()
    receivers = [r for r in RECEIVERS if r in cfg.receivers]
    t_start = time.monotonic()
    store = None
    source: Source | None = None
    keep_logs = False
    try:
        if archiving and not no_store:
            store = archive.Store(logdir, cpus=store_cpus)
        source, rng = _open_source(cfg, say)
        transports = list(source.transports()) if cfg.transports is None else cfg.transports
        say(f"output under {workdir}")
        doc: dict[str, Any] = {"meta": dict(
            command=cfg.command,
            date=datetime.datetime.now().isoformat(timespec="seconds"),
            argv=source.redact(cfg.argv), rounds=cfg.rounds, modes=cfg.modes,
            transports=transports, receivers=cfg.receivers, range=rng.as_dict(),
            source=source.describe(),
            primary_settings=source.settings() if isinstance(source, (Primary, ExternalPrimary))
            else {},
            machine=machine_info(source, cfg.workdir),
            store=None if store is None else store.describe(),
            pinned=None if store_cpus is None else dict(
                store=sorted(store_cpus), others=sorted(os.sched_getaffinity(0)))),
            "limits": [], "runs": []}
        os.sync()
        timeout = max(300.0, rng.nbytes / 2e6)  # 2 MB/s would be a broken run
        for n in range(1, cfg.rounds + 1):
            say(f"round {n}/{cfg.rounds}")
            round_limits = []
            if cfg.limits:
                round_limits = [limits.disk_limit(workdir, rng.nbytes, rng.segment_size),
                                limits.memcpy_limit(rng.nbytes, rng.segment_size)]
            if store is not None:
                round_limits.append(archive.upload_limit(store, workdir, rng))
            for lim in round_limits:
                lim["round"] = n
                doc["limits"].append(lim)
                if "mb_s" not in lim:
                    say(f"  round {n} limit {lim['limit']:<6} FAILED: {lim.get('error')}")
                    continue
                say(f"  round {n} limit {lim['limit']:<6} {lim['mb_s']:>10,.0f} MB/s")
            # The modes' order turns each round (A B C, B C A, ...), so that
            # no mode always runs first or right after the same one.
            k = (n - 1) % len(cfg.modes)
            modes = cfg.modes[k:] + cfg.modes[:k]
            for transport in transports:
                plan = [Run(rc, mode, transport, n) for mode in modes for rc in receivers]
                if DISCARD in cfg.receivers:
                    plan.append(Run(DISCARD, "discard", transport, n))
                for run in plan:
                    result = measure(run, source, rng, workdir, logdir, timeout, store=store)
                    doc["runs"].append(result)
                    say(run_line(result))
        doc["meta"]["compressed_fraction"] = source.compressibility(rng)
        if cfg.sync is not None and isinstance(source, Primary):
            source.drop_base_slot()
            _sync_benchmark(cfg, cfg.sync, source, doc, workdir, logdir, say)
        doc["meta"]["duration_s"] = round(time.monotonic() - t_start, 1)
        doc["meta"]["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        doc["meta"]["machine"]["walfast_bytecode_cached"] = bytecode_cached
        keep_logs = True
    finally:
        if source is not None:
            source.close()
        if store is not None:
            store.close()
        if keep_logs:
            # output directories left by a failed run; the logs stay
            for p in workdir.iterdir():
                if p != logdir:
                    shutil.rmtree(p, ignore_errors=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return _finish(cfg, doc, workdir, logdir, say)


def _sync_benchmark(cfg: BenchConfig, sync: SyncConfig, primary: Primary, doc: dict[str, Any],
                    workdir: Path, logdir: Path, say: Say) -> None:
    say(f"synchronous standby: pgbench -i -s {sync.scale}")
    syncbench.init_pgbench(primary, sync.scale)
    sync_runs: list[dict[str, Any]] = []
    for n in range(1, cfg.rounds + 1):
        # The orders turn each round (A B C D, B C D A, ...): in one full
        # run TPS rose with the position in the round.
        k = (n - 1) % len(syncbench.STANDBYS)
        j = (n - 1) % len(sync.levels)
        levels = sync.levels[j:] + sync.levels[:j]
        for standby in syncbench.STANDBYS[k:] + syncbench.STANDBYS[:k]:
            if standby != "none" and standby not in cfg.receivers:
                continue
            for r in syncbench.run_standby(primary, standby, sync.transport, levels, sync.seconds,
                                           sync.clients, sync.threads, workdir, logdir, n):
                sync_runs.append(r)
                say(_sync_line(r))
    doc["syncbench"] = dict(
        settings=dict(scale=sync.scale, clients=sync.clients, threads=sync.threads,
                      seconds=sync.seconds, transport=sync.transport, script="tpcb-like",
                      synchronous_commit=list(sync.levels)),
        runs=sync_runs)


def _finish(cfg: BenchConfig, doc: dict[str, Any], workdir: Path, logdir: Path, say: Say) -> int:
    """The table, the files, the exit status."""
    doc["summary"] = report.summarize(doc)
    doc["sync_summary"] = report.sync_summary(doc)
    print()
    print(report.render(doc, compact=cfg.compact), flush=True)
    if cfg.json_path is not None:
        cfg.json_path.parent.mkdir(parents=True, exist_ok=True)
        cfg.json_path.write_text(json.dumps(doc, indent=1) + "\n")
        say(f"results: {cfg.json_path}")
    if cfg.markdown_path is not None:
        cfg.markdown_path.write_text(report.render(doc, markdown=True))
        say(f"markdown table: {cfg.markdown_path}")
    if cfg.chart_path is not None:
        report.chart(doc, cfg.chart_path)
        say(f"chart: {cfg.chart_path}")
    say(f"total time {doc['meta']['duration_s']:.0f} s")
    failed = [r for r in doc["runs"] if r["status"] == "failed"]
    failed += [r for r in doc.get("syncbench", {}).get("runs", []) if r["status"] == "failed"]
    failed += [x for x in doc["limits"] if x.get("status") == "failed"]
    unavailable = [r for r in doc["runs"] if r["status"] == "unavailable"]
    if failed or unavailable:
        say(f"{len(failed)} failed and {len(unavailable)} unavailable run(s); "
            f"their logs are kept in {logdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0

