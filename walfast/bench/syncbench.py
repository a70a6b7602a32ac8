"""Synchronous-standby benchmark: pgbench on the throwaway primary whose
only synchronous standby is the receiver.

The receiver runs with ``--synchronous`` (flush and report after every
write), no slot, application_name ``bench_sync``; once it streams and has
caught up, ``synchronous_standby_names = 'bench_sync'`` is set (ALTER SYSTEM +
reload) and pgbench runs (tpcb-like, the default script; ``-n``: no vacuum
between runs) once per ``synchronous_commit`` level asked (``PGOPTIONS``
gives pgbench's sessions the level): ``on``, every commit waits for the
receiver's flush report; ``remote_write``, for its write report (walfast
sends one before each fdatasync, as the walreceiver does; pg_receivewal
reports only after it).  The levels' order turns each round.  "none" runs
the same pgbench with no standby at all (commits wait for the primary's own
WAL flush only); "discard" is the discard receiver's ``--ack`` mode, which
acknowledges every batch as written and flushed without writing it (the
ceiling for any receiver that does write).  The setting is reset before
the receiver is stopped.

Per pgbench run: TPS ("without initial connection time") and average
latency from pgbench, the transactions it processed, and the CPU seconds
the receiver process and its walsender spent meanwhile (``/proc``, read
just before and after pgbench), per transaction.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from walfast.bench.options import LEVELS
from walfast.bench.primary import Primary
from walfast.bench.receivers import (
    PACKAGE_ROOT, ack_argv, clean_env, proc_cpu_seconds, receiver_argv,
)
from walfast.cluster import tool_env

__all__ = ["APP", "LEVELS", "STANDBYS", "init_pgbench", "run_standby"]

APP = "bench_sync"
STANDBYS = ("none", "walfast", "pg_receivewal", "discard")

_TPS_RE = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
_LAT_RE = re.compile(r"^latency average = ([0-9.]+) ms", re.M)
_FAILED_RE = re.compile(r"^number of failed transactions: (\d+)", re.M)
_TX_RE = re.compile(r"^number of transactions actually processed: (\d+)", re.M)


def _pgbench(primary: Primary, *args: str, timeout: float, level: str | None = None) -> str:
    c = primary.cluster
    argv = [str(primary.bindir / "pgbench"), "-h", str(c.socket_dir), "-p", str(c.port),
            "-U", "postgres", *args, "postgres"]
    env = tool_env(primary.bindir, clean_env())
    if level is not None:
        env["PGOPTIONS"] = f"-c synchronous_commit={level}"
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          env=env, stdin=subprocess.DEVNULL)
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


def _wait(pred: Callable[[], bool], what: str, proc: subprocess.Popen[bytes] | None, log: Path,
          timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"waiting for {what}: the receiver exited with {proc.returncode}: "
                               f"{log.read_text(errors='replace')[-1000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _sync_state(primary: Primary) -> tuple[str | None, bool, int | None]:
    """(sync_state, caught up, walsender pid) of the standby."""
    rows = primary.execute(
        "SELECT sync_state, flush_lsn >= pg_current_wal_lsn(), pid FROM pg_stat_replication "
        "WHERE application_name = %s AND state = 'streaming'", (APP,))
    return (rows[0][0], bool(rows[0][1]), rows[0][2]) if rows else (None, False, None)


def _cpu(pid: int | None) -> float | None:
    return None if pid is None else proc_cpu_seconds(pid)


def _per_tx_us(before: float | None, after: float | None, tx: int) -> float | None:
    if before is None or after is None or tx <= 0:
        return None
    return round((after - before) / tx * 1e6, 2)


def run_standby(primary: Primary, standby: str, transport: str, levels: list[str], seconds: int,
                clients: int, threads: int, workdir: Path, logdir: Path,
                round_: int) -> list[dict[str, Any]]:
    """Start *standby* once, make it the synchronous standby, then run
    pgbench once per level of *levels*, in that order; one result per
    level (``status`` ok, failed, or unavailable when there is no
    pg_receivewal)."""
    base: dict[str, Any] = dict(standby=standby, round=round_, transport=transport,
                                seconds=seconds, clients=clients, threads=threads)
    results = [dict(base, synchronous_commit=level) for level in levels]
    if standby == "pg_receivewal" and primary.receivewal is None:
        for r in results:
            r.update(status="unavailable", error=primary.receivewal_missing)
        return results
    proc = None
    outdir = workdir / f"sync-r{round_}-{standby}"
    log = logdir / f"sync-r{round_}-{standby}.stderr"
    walsender: int | None = None
    done = 0
    try:
        if standby != "none":
            outdir.mkdir()
            conninfo = primary.conninfo(transport, application_name=APP)
            if standby == "discard":
                argv = ack_argv(conninfo)
            else:
                argv = receiver_argv(standby, primary.receivewal, conninfo, outdir,
                                     ["--synchronous"])
            for r in results:
                r["argv"] = argv
            with open(log, "wb") as err:
                env = clean_env()
                if standby == "pg_receivewal" and primary.receivewal is not None:
                    env = tool_env(primary.receivewal.parent, env)
                proc = subprocess.Popen(argv, stdout=err, stderr=err, stdin=subprocess.DEVNULL,
                                        env=env, cwd=PACKAGE_ROOT)
            _wait(lambda: _sync_state(primary)[1], f"{standby} to stream and catch up", proc, log)
            _set_sync_names(primary, APP)
            _wait(lambda: _sync_state(primary)[0] == "sync", f"{standby} to be the sync standby",
                  proc, log)
            walsender = _sync_state(primary)[2]
        for r in results:
            level = r["synchronous_commit"]
            recv0, wal0 = _cpu(None if proc is None else proc.pid), _cpu(walsender)
            out = _pgbench(primary, "-n", "-c", str(clients), "-j", str(threads),
                           "-T", str(seconds), timeout=seconds * 3 + 120, level=level)
            recv1, wal1 = _cpu(None if proc is None else proc.pid), _cpu(walsender)
            if standby != "none":
                state = _sync_state(primary)[0]
                if state != "sync":
                    raise RuntimeError(f"{standby} was no longer the sync standby ({state})")
            tps, lat, tx = _TPS_RE.search(out), _LAT_RE.search(out), _TX_RE.search(out)
            if tps is None or lat is None or tx is None:
                raise RuntimeError(f"cannot read pgbench's output:\n{out[-2000:]}")
            failed = _FAILED_RE.search(out)
            n = int(tx.group(1))
            r.update(status="ok", tps=float(tps.group(1)), latency_ms=float(lat.group(1)),
                     failed=int(failed.group(1)) if failed else 0, transactions=n,
                     recv_cpu_s=None if recv0 is None or recv1 is None else round(recv1 - recv0, 3),
                     recv_cpu_us_per_tx=_per_tx_us(recv0, recv1, n),
                     walsender_cpu_us_per_tx=_per_tx_us(wal0, wal1, n))
            done += 1
    except (RuntimeError, subprocess.SubprocessError, psycopg.Error) as exc:
        for r in results[done:]:
            r.update(status="failed", error=str(exc)[:1000])
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
    return results

