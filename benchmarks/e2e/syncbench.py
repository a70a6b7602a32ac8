"""Synchronous-standby benchmark: pgbench on a primary whose only
synchronous standby is the receiver.

The receiver runs with ``--synchronous`` (flush and report after every
write), no slot, application_name ``bench_sync``; once it streams and has
caught up, ``synchronous_standby_names = 'bench_sync'`` is set (ALTER SYSTEM +
reload) and pgbench runs (tpcb-like, the default script; ``-n``: no vacuum
between runs) with ``synchronous_commit = on``, so every commit waits for the
receiver's flush report.  "none" runs the same pgbench with no standby at all
(commits wait for the primary's own WAL flush only); "discard" is the
discard receiver's ``--ack`` mode, which acknowledges every batch as flushed
without writing it (the ceiling for any receiver that does write).  The
setting is reset before the receiver is stopped.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.e2e.primary import Primary
from benchmarks.e2e.receivers import REPO_ROOT, ack_argv, clean_env, receiver_argv
from walfast.cluster import tool_env

APP = "bench_sync"
STANDBYS = ("none", "walfast", "pg_receivewal", "discard")

_TPS_RE = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
_LAT_RE = re.compile(r"^latency average = ([0-9.]+) ms", re.M)
_FAILED_RE = re.compile(r"^number of failed transactions: (\d+)", re.M)


def _pgbench(primary: Primary, *args: str, timeout: float) -> str:
    c = primary.cluster
    argv = [str(primary.bindir / "pgbench"), "-h", str(c.socket_dir), "-p", str(c.port),
            "-U", "postgres", *args, "postgres"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=tool_env(primary.bindir, clean_env()), stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout + proc.stderr


def init_pgbench(primary: Primary, scale: int) -> None:
    _pgbench(primary, "-i", "-q", "-s", str(scale), timeout=1800)
    primary.execute("CHECKPOINT")


def _set_sync_names(primary: Primary, value: str | None) -> None:
    if value is None:
        primary.execute("ALTER SYSTEM RESET synchronous_standby_names")
    else:
        primary.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{value}'")
    primary.execute("SELECT pg_reload_conf()")


def _wait(pred: Any, what: str, proc: subprocess.Popen[bytes] | None, log: Path,
          timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"waiting for {what}: the receiver exited with {proc.returncode}: "
                               f"{log.read_text(errors='replace')[-1000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _sync_state(primary: Primary) -> tuple[str | None, bool]:
    rows = primary.execute(
        "SELECT sync_state, flush_lsn >= pg_current_wal_lsn() FROM pg_stat_replication "
        "WHERE application_name = %s AND state = 'streaming'", (APP,))
    return (rows[0][0], bool(rows[0][1])) if rows else (None, False)


def run_one(primary: Primary, standby: str, transport: str, seconds: int, clients: int,
            threads: int, workdir: Path, logdir: Path, round_: int) -> dict[str, Any]:
    result: dict[str, Any] = dict(standby=standby, round=round_, transport=transport,
                                  seconds=seconds, clients=clients, threads=threads)
    proc = None
    outdir = workdir / f"sync-r{round_}-{standby}"
    log = logdir / f"sync-r{round_}-{standby}.stderr"
    try:
        if standby != "none":
            outdir.mkdir()
            conninfo = primary.conninfo(transport, application_name=APP)
            if standby == "discard":
                argv = ack_argv(conninfo)
            else:
                argv = receiver_argv(standby, primary.bindir, conninfo, outdir, ["--synchronous"])
            result["argv"] = argv
            with open(log, "wb") as err:
                env = tool_env(primary.bindir, clean_env()) if standby == "pg_receivewal" \
                    else clean_env()
                proc = subprocess.Popen(argv, stdout=err, stderr=err, stdin=subprocess.DEVNULL,
                                        env=env, cwd=REPO_ROOT)
            _wait(lambda: _sync_state(primary)[1], f"{standby} to stream and catch up", proc, log)
            _set_sync_names(primary, APP)
            _wait(lambda: _sync_state(primary)[0] == "sync", f"{standby} to be the sync standby",
                  proc, log)
        out = _pgbench(primary, "-n", "-c", str(clients), "-j", str(threads), "-T", str(seconds),
                       timeout=seconds * 3 + 120)
        if standby != "none":
            state = _sync_state(primary)[0]
            if state != "sync":
                raise RuntimeError(f"{standby} was no longer the sync standby ({state})")
        tps, lat = _TPS_RE.search(out), _LAT_RE.search(out)
        if tps is None or lat is None:
            raise RuntimeError(f"cannot read pgbench's output:\n{out[-2000:]}")
        failed = _FAILED_RE.search(out)
        result.update(status="ok", tps=float(tps.group(1)), latency_ms=float(lat.group(1)),
                      failed=int(failed.group(1)) if failed else 0)
    except (RuntimeError, subprocess.SubprocessError) as exc:
        result.update(status="failed", error=str(exc)[:1000])
    finally:
        _set_sync_names(primary, None)  # before the standby goes, or commits hang
        if proc is not None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(outdir, ignore_errors=True)
    return result
