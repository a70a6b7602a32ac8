"""One measured run: a receiver streams the WAL range into a fresh directory.

What is measured, and how:

* **wall time**: from just before the receiver process is spawned to its
  exit (so it includes its start-up: interpreter and imports for walfast,
  connecting and the replication handshake for all).
* **receiver CPU**: user + sys of the receiver process (and any children it
  waited for) from ``os.wait4``'s rusage.
* **bytes written**: ``write_bytes`` of ``/proc/<pid>/io``, read after the
  receiver exited but before it is reaped (``waitid(WNOWAIT)``): the bytes
  whose page-cache pages it dirtied, i.e. that it sent towards the disk
  (rewriting a page already written back counts again; zero-filling counts).
* **walsender CPU**: utime + stime of the walsender backend serving the run,
  from ``/proc/<pid>/stat``.  Its pid is the run slot's ``active_pid``; a
  thread reads its stat every 10 ms while the run lasts and once more when
  the receiver has exited.  The walsender is new for each run, so its total
  is the run's.  What it spends after the last sample (its exit) is lost:
  at most one 10 ms tick.
* **MB/s**: bytes of the range / wall time (MB = 10^6 bytes, GB = 10^9).
  A second figure, **streaming MB/s**, leaves out the start-up: the
  receiver's stderr (``-v``) is polled every 10 ms for its ``starting log
  streaming at`` line, and the bytes are divided by the time from that line
  to the exit.

Where the server has no READ_REPLICATION_SLOT (before 15, walfast.majors)
the run slot cannot tell a receiver where to start: the output directory
then gets an empty ``.partial`` of the range's first segment, where both
programs' directory scans start.  pg_receivewal before 15 takes ``-Z`` as a
gzip level: the gzip mode is given to it as one, and the methods it lacks
are reported unavailable without a run.

The receivers run with ``-S <run slot> --endpos <end - 1>``: both stop once
``endpos <`` the position received, checked after each message and when a
segment completes inside one, so ``end - 1`` (the range's last byte) makes
both stop right after completing the range's last segment, with no
``.partial`` of the next one.  ``--endpos end`` would make both open and
pre-allocate (pg_receivewal: zero-fill) one more segment.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


from benchmarks.e2e.primary import SUFFIX, Primary, WalRange
from walfast.cluster import tool_env
from walfast.lsn import format_lsn, parse_lsn, segment_file_name

REPO_ROOT = Path(__file__).resolve().parents[2]

#: mode -> (extra receiver options, output compression method ('' = none)).
#: -Z uses pg_receivewal's METHOD[:DETAIL] syntax; gzip's detail is the level.
MODES: dict[str, tuple[list[str], str]] = {
    "durable": ([], ""),
    "no-sync": (["--no-sync"], ""),
    "synchronous": (["--synchronous"], ""),
    "lz4": (["-Z", "lz4"], "lz4"),
    "gzip1": (["-Z", "gzip:1"], "gzip"),
    "zstd": (["-Z", "zstd"], "zstd"),
}
#: -Z values as pg_receivewal before 15 takes them (a gzip level); it has no
#: other method (given one, atoi makes it level 0: plain files).
Z_BEFORE_15 = {"gzip:1": "1"}
RECEIVERS = ("walfast", "pg_receivewal")
DISCARD = "discard"

START_RE = re.compile(r"starting log streaming at ([0-9A-F]+/[0-9A-F]+) \(timeline (\d+)\)")
RECEIVED_RE = re.compile(r"received up to ([0-9A-F]+/[0-9A-F]+)")

_SCRUB_ENV = (
    "PGDATA", "PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE",
    "PGSERVICEFILE", "PGOPTIONS", "PGPASSWORD", "PGPASSFILE", "PGSSLMODE", "PGAPPNAME",
    "PGTZ", "PGCLIENTENCODING",
)
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV}
    env["PG_COLOR"] = "never"
    return env


def receiver_argv(receiver: str, bindir: Path, conninfo: str, directory: Path,
                  options: list[str]) -> list[str]:
    """Command line of walfast or pg_receivewal (the same options)."""
    common = ["-d", conninfo, "-D", str(directory), "-v", *options]
    if receiver == "walfast":
        return [sys.executable, "-m", "walfast.cli", "receive", *common]
    if receiver == "pg_receivewal":
        return [str(bindir / "pg_receivewal"), *common]
    raise ValueError(f"unknown receiver {receiver!r}")


def discard_argv(conninfo: str, slot: str, rng: WalRange) -> list[str]:
    return [sys.executable, "-m", "benchmarks.e2e.discard", conninfo, slot,
            format_lsn(rng.start), format_lsn(rng.end)]


def ack_argv(conninfo: str) -> list[str]:
    """The discard receiver as an acknowledge-only synchronous standby."""
    return [sys.executable, "-m", "benchmarks.e2e.discard", "--ack", conninfo]


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process, from /proc/<pid>/stat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_write_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class WalsenderSampler(threading.Thread):
    """Finds the run slot's walsender and samples its CPU time (see the
    module docstring); also records whether its connection uses TLS."""

    def __init__(self, primary: Primary, slot: str, stderr_path: Path) -> None:
        super().__init__(daemon=True)
        self.primary, self.slot = primary, slot
        self.stderr_path = stderr_path
        #: when the receiver was spawned (set by the caller once it is)
        self.t0 = time.perf_counter()
        #: set once the sampler's own connection is up: start the receiver
        #: after it, or a short run can end before its walsender is seen
        self.connected = threading.Event()
        #: seconds from spawning the receiver to its "starting log streaming" line
        self.start_line_s: float | None = None
        self.pid: int | None = None
        self.cpu: float | None = None
        self.ssl: bool | None = None
        self.cipher: str | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        with self.primary.cluster.connect() as conn:
            self.connected.set()
            while not self._stop_event.is_set():
                if self.start_line_s is None:
                    now = time.perf_counter() - self.t0
                    if START_RE.search(self.stderr_path.read_text(errors="replace")):
                        self.start_line_s = now
                if self.pid is None:
                    row = conn.execute(
                        "SELECT s.active_pid, l.ssl, l.version || ' ' || l.cipher "
                        "FROM pg_replication_slots s "
                        "LEFT JOIN pg_stat_ssl l ON l.pid = s.active_pid "
                        "WHERE s.slot_name = %s", (self.slot,)).fetchone()
                    if row and row[0] is not None:
                        self.pid, self.ssl, self.cipher = row
                if self.pid is not None:
                    self.sample()
                # Look for the walsender often until it is found: a short
                # run's walsender lives for a few tens of milliseconds.
                self._stop_event.wait(0.01 if self.pid is not None else 0.001)

    def sample(self) -> None:
        if self.pid is not None:
            cpu = proc_cpu_seconds(self.pid)
            if cpu is not None:
                self.cpu = cpu

    def finish(self) -> None:
        self.sample()
        self._stop_event.set()
        self.join(30)


@dataclass
class Run:
    """What to run: a receiver in a mode over a transport, in a round."""

    receiver: str
    mode: str
    transport: str
    round: int


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln or "FATAL" in ln or "Error" in ln]
    return (errors or lines or ["(no output)"])[-1][:300]


def measure(run: Run, primary: Primary, rng: WalRange, workdir: Path, logdir: Path,
            timeout: float) -> dict[str, Any]:
    """Run once and return the measurements (``status`` ok, unavailable or
    failed; figures only when ok).  The output directory is checked against
    pg_wal, then removed."""
    tag = f"r{run.round}-{run.transport}-{run.mode}-{run.receiver}"
    result: dict[str, Any] = dict(receiver=run.receiver, mode=run.mode, transport=run.transport,
                                  round=run.round)
    major = primary.major
    extra, method = MODES[run.mode] if run.receiver != DISCARD else ([], "")
    if run.receiver == "pg_receivewal" and not major.receivewal_command_line and "-Z" in extra:
        value = extra[extra.index("-Z") + 1]
        if value not in Z_BEFORE_15:
            result.update(status="unavailable", error=(
                f"pg_receivewal {major.major} has no -Z {value} (before 15 -Z takes a gzip "
                "level: it would write plain files)"))
            return result
        extra = [Z_BEFORE_15[value] if x == value else x for x in extra]
    outdir = workdir / tag
    outdir.mkdir()
    seed = None
    if run.receiver != DISCARD and not major.read_replication_slot:
        seed = outdir / (segment_file_name(rng.timeline, rng.start // rng.segment_size,
                                           rng.segment_size) + SUFFIX[method] + ".partial")
        seed.write_bytes(b"")
    slot = primary.new_run_slot()
    conninfo = primary.conninfo(run.transport)
    if run.receiver == DISCARD:
        argv = discard_argv(conninfo, slot, rng)
    else:
        argv = receiver_argv(run.receiver, primary.bindir, conninfo, outdir,
                             [*extra, "-S", slot, "--endpos", format_lsn(rng.end - 1)])
    stderr_path = logdir / f"{tag}.stderr"
    result["argv"] = argv
    timed_out = threading.Event()
    try:
        with open(stderr_path, "wb") as err:
            sampler = WalsenderSampler(primary, slot, stderr_path)
            sampler.start()
            sampler.connected.wait(30)
            t0 = sampler.t0 = time.perf_counter()
            env = clean_env() if run.receiver != "pg_receivewal" else \
                tool_env(primary.bindir, clean_env())
            proc = subprocess.Popen(argv, stdout=err, stderr=err, stdin=subprocess.DEVNULL,
                                    env=env, cwd=REPO_ROOT)

        def on_timeout() -> None:
            timed_out.set()
            proc.send_signal(signal.SIGKILL)
        watchdog = threading.Timer(timeout, on_timeout)
        watchdog.start()
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            wall = time.perf_counter() - t0
            write_bytes = proc_write_bytes(proc.pid)
        finally:
            watchdog.cancel()
            sampler.finish()
            _, status, rusage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        try:
            primary.drop_slot(slot)
        except Exception as exc:  # report, but the run's figures stand
            result["warning"] = f"could not drop slot {slot}: {exc}"
    stderr = stderr_path.read_text(errors="replace")
    result.update(exit_code=proc.returncode, walsender_pid=sampler.pid, ssl=sampler.ssl,
                  tls_cipher=sampler.cipher)
    m = START_RE.search(stderr)
    result["start_line"] = m.group(0) if m else None

    problem = None
    output_bytes = 0
    if timed_out.is_set():
        problem = f"killed after {timeout:.0f} s"
    elif proc.returncode != 0:
        problem = _last_error(stderr)
    elif m is None or parse_lsn(m.group(1)) != rng.start:
        problem = (f"did not start at {format_lsn(rng.start)}: "
                   f"{m.group(0) if m else 'no start line'}")
    elif run.receiver == DISCARD:
        got = RECEIVED_RE.search(stderr)
        if got is None or parse_lsn(got.group(1)) < rng.end:
            problem = f"did not reach {format_lsn(rng.end)}: {_last_error(stderr)}"
    else:
        output_bytes, problem = primary.check_output(outdir, rng, MODES[run.mode][1])
    if problem is None and run.transport == "tls" and sampler.ssl is not True:
        problem = "the connection did not use TLS"
    if problem is None and run.transport != "tls" and sampler.ssl:
        problem = "the connection used TLS"

    if problem is None:
        cpu = rusage.ru_utime + rusage.ru_stime
        gb = rng.nbytes / 1e9
        result.update(
            status="ok", wall_s=round(wall, 4), mb_s=round(rng.nbytes / 1e6 / wall, 1),
            recv_cpu_s=round(cpu, 3), recv_cpu_s_per_gb=round(cpu / gb, 3),
            recv_user_s=round(rusage.ru_utime, 3), recv_sys_s=round(rusage.ru_stime, 3),
            start_line_s=None if sampler.start_line_s is None else round(sampler.start_line_s, 3),
            stream_mb_s=None if sampler.start_line_s is None else
            round(rng.nbytes / 1e6 / (wall - sampler.start_line_s), 1),
            walsender_cpu_s=sampler.cpu,
            walsender_cpu_s_per_gb=None if sampler.cpu is None else round(sampler.cpu / gb, 3),
            write_bytes=write_bytes, output_bytes=output_bytes)
    else:
        nothing = all(p == seed and p.stat().st_size == 0 for p in outdir.iterdir())
        # a receiver that refuses the options (exit 1 before writing
        # anything) lacks the mode; anything else is a failure
        unavailable = (run.receiver != DISCARD and not timed_out.is_set()
                       and proc.returncode != 0 and nothing)
        result.update(status="unavailable" if unavailable else "failed", error=problem,
                      stderr_path=str(stderr_path))
    _remove(outdir)
    return result


def _remove(directory: Path) -> None:
    """Delete a run's output and make the deletion (and any dirty pages of a
    --no-sync run) settle before the next run starts."""
    shutil.rmtree(directory)
    os.sync()
