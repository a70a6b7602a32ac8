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
  at most one 10 ms tick.  Only where this machine's /proc shows the
  walsender (:meth:`walfast.bench.primary.Source.walsender_is_local`); None
  elsewhere (a remote server).
* **MB/s**: bytes of the range / wall time (MB = 10^6 bytes, GB = 10^9).
  A second figure, **streaming MB/s**, leaves out the start-up: the
  receiver's stderr (``-v``) is polled every 10 ms for its ``starting log
  streaming at`` line, and the bytes are divided by the time from that line
  to the exit.
* **receive MB/s**: bytes / time from the spawn to the receiver's
  ``stopped log streaming at`` line (``-v``, printed at ``--endpos`` by both
  programs), the end of the receive itself; with ``--archive`` walfast
  exits only once its uploads are done, so for that mode the exit is not
  the end of the receive.  At that line the thread also reads the CPU
  seconds so far of the receiver (all threads, and its main thread alone:
  walfast's receive loop), of the walsender, of the archive mode's S3
  server, and of the whole machine (``/proc/stat``), plus how long the
  output's disk has been busy: the receive window's figures.
* **bytes read**: ``read_bytes`` of ``/proc/<pid>/io`` (as written):
  walfast's uploader reading completed segments back from the disk.

The archive mode's own figures (upload lag and throughput, the S3
server's CPU) are in :mod:`walfast.bench.archive`.

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
from typing import TYPE_CHECKING, Any


from walfast.archive.status import read_archive_status
from walfast.bench.options import ARCHIVE_BUCKET, ARCHIVE_PREFIX, DISCARD, MODES, RECEIVERS
from walfast.bench.primary import SUFFIX, Source, WalRange
from walfast.cluster import tool_env
from walfast.lsn import format_lsn, parse_lsn, segment_file_name
from walfast.s3server import S3Server
from walfast.waldir.layout import ARCHIVED, state_file

if TYPE_CHECKING:
    from walfast.bench.archive import Store

__all__ = [
    "ARCHIVE_BUCKET", "ARCHIVE_PREFIX", "DISCARD", "MODES", "PACKAGE_ROOT", "RECEIVERS", "Run",
    "WalsenderSampler", "ack_argv", "clean_env", "discard_argv", "machine_cpu", "measure",
    "proc_cpu_seconds", "proc_io", "receiver_argv",
]

#: The directory the walfast package is in.  Receivers run from there, so
#: that ``python -m walfast.cli`` is the walfast this harness is (a
#: checkout's own build, or the installed one), whatever the caller's
#: current directory holds.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]

#: -Z values as pg_receivewal before 15 takes them (a gzip level); it has no
#: other method (given one, atoi makes it level 0: plain files).
Z_BEFORE_15 = {"gzip:1": "1"}

START_RE = re.compile(r"starting log streaming at ([0-9A-F]+/[0-9A-F]+) \(timeline (\d+)\)")
STOP_RE = re.compile(r"stopped log streaming at ([0-9A-F]+/[0-9A-F]+)")
FINISHED_RE = re.compile(r"finished segment at ([0-9A-F]+/[0-9A-F]+)")
#: An object of the archive stored, in the S3 server's request log (werkzeug's
#: line): a PUT of the whole object, or the completion of a multipart upload.
STORED_RE = re.compile(
    rf'"(?:PUT /{ARCHIVE_BUCKET}/{ARCHIVE_PREFIX}/([^ ?/]+)|POST /{ARCHIVE_BUCKET}/'
    rf'{ARCHIVE_PREFIX}/([^ ?/]+)\?uploadId=[^ ]*) HTTP/[0-9.]+" 200 ')
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


def receiver_argv(receiver: str, receivewal: Path | None, conninfo: str, directory: Path,
                  options: list[str]) -> list[str]:
    """Command line of walfast or pg_receivewal (*receivewal*, its path):
    the same options."""
    common = ["-d", conninfo, "-D", str(directory), "-v", *options]
    if receiver == "walfast":
        return [sys.executable, "-m", "walfast.cli", "receive", *common]
    if receiver == "pg_receivewal" and receivewal is not None:
        return [str(receivewal), *common]
    raise ValueError(f"no command line for receiver {receiver!r}")


def discard_argv(conninfo: str, slot: str, rng: WalRange) -> list[str]:
    return [sys.executable, "-m", "walfast.bench.discard", conninfo, slot,
            format_lsn(rng.start), format_lsn(rng.end)]


def ack_argv(conninfo: str) -> list[str]:
    """The discard receiver as an acknowledge-only synchronous standby."""
    return [sys.executable, "-m", "walfast.bench.discard", "--ack", conninfo]


def _stat_cpu_seconds(path: str) -> float | None:
    """utime + stime from a /proc ``stat`` file, None once it is gone."""
    try:
        stat = Path(path).read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def proc_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a live process (all its threads)."""
    return _stat_cpu_seconds(f"/proc/{pid}/stat")


def thread_cpu_seconds(pid: int, tid: int) -> float | None:
    """utime + stime of one thread (a live process's main thread: tid = pid)."""
    return _stat_cpu_seconds(f"/proc/{pid}/task/{tid}/stat")


def involuntary_switches(pid: int, tid: int | None = None) -> int | None:
    """How often the thread (default: the process's main thread) was taken
    off a CPU while it could have gone on running (preempted):
    ``nonvoluntary_ctxt_switches`` of its ``status``."""
    try:
        text = Path(f"/proc/{pid}/task/{tid or pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("nonvoluntary_ctxt_switches:"):
            return int(line.split()[1])
    return None


def proc_io(pid: int) -> dict[str, int]:
    """``/proc/<pid>/io`` as a dict (``read_bytes``, ``write_bytes``, ...);
    empty when it cannot be read."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            key, _, value = line.partition(":")
            out[key.strip()] = int(value)
    except (OSError, ValueError):
        pass
    return out


def proc_write_bytes(pid: int) -> int | None:
    return proc_io(pid).get("write_bytes")


def machine_cpu() -> dict[str, float]:
    """The whole machine's CPU time so far from ``/proc/stat`` (seconds summed
    over CPUs): ``busy`` (user, nice, system, irq, softirq), ``idle`` (idle
    and iowait), ``steal`` (taken by the hypervisor for other guests)."""
    with open("/proc/stat") as f:
        fields = [int(x) / _CLK_TCK for x in f.readline().split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return dict(busy=user + nice + system + irq + softirq, idle=idle + iowait, steal=steal)


def disk_busy_seconds(path: Path) -> float | None:
    """How long the block device holding *path* has been busy with I/O
    (``io_ticks`` of its ``stat`` in sysfs), None when unknown."""
    dev = os.stat(path).st_dev
    try:
        fields = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat").read_text().split()
        return int(fields[9]) / 1000
    except (OSError, IndexError, ValueError):
        return None


class WalsenderSampler(threading.Thread):
    """Finds the run slot's walsender and samples its CPU time (see the
    module docstring); also records whether its connection uses TLS.

    It also follows the receiver's stderr (``-v``), each line timed from the
    spawn: the ``starting log streaming`` line, every ``finished segment``
    line and the ``stopped log streaming`` line (the end of the receive,
    when the CPU counters of :meth:`counters` are taken again); and, given
    *archived_path* (walfast's ``.walfast/archived``), when each name
    appears in it (the store confirmed that upload)."""

    def __init__(self, source: Source, slot: str, stderr_path: Path,
                 archived_path: Path | None = None, store: S3Server | None = None,
                 outdir: Path | None = None) -> None:
        super().__init__(daemon=True)
        #: the receiver's output directory: its disk's busy time is sampled
        self.outdir = outdir
        self.source, self.slot = source, slot
        self.stderr_path = stderr_path
        self.archived_path = archived_path
        self.store = store
        #: when the receiver was spawned (set by the caller once it is)
        self.t0 = time.perf_counter()
        #: the receiver's pid (set by the caller once it is spawned)
        self.recv_pid: int | None = None
        #: set once the sampler's own connection is up: start the receiver
        #: after it, or a short run can end before its walsender is seen
        self.connected = threading.Event()
        #: seconds from spawning the receiver to its "starting log streaming" line
        self.start_line_s: float | None = None
        #: ... to each "finished segment" line, and to "stopped log streaming"
        self.finished_s: list[float] = []
        self.stop_line_s: float | None = None
        #: :meth:`counters` when the stop line was seen
        self.at_stop: dict[str, Any] | None = None
        #: (seconds from the spawn, name) of each file walfast recorded as archived
        self.archived: list[tuple[float, str]] = []
        #: (seconds from the spawn, name) of each object the S3 server stored
        #: (its request log's line for the PUT, written as it answers)
        self.stored: list[tuple[float, str]] = []
        self.pid: int | None = None
        self.cpu: float | None = None
        self.preempted: int | None = None
        self.ssl: bool | None = None
        self.cipher: str | None = None
        self._stop_event = threading.Event()
        self._err = _Tail(stderr_path)
        self._rec = _Tail(archived_path) if archived_path is not None else None
        self._store_log: _Tail | None = None
        if store is not None and store.log is not None:
            self._store_log = _Tail(store.log)
            self._store_log.skip()

    def stop_line_before(self, wall: float) -> float | None:
        """When the receiver printed its ``stopped log streaming`` line
        (seconds from the spawn), at most *wall* (spawn to exit): the stderr
        is polled every 10 ms, so a receiver that exits right after printing
        it (walfast) is seen to print it after its exit."""
        return None if self.stop_line_s is None else min(self.stop_line_s, wall)

    def counters(self) -> dict[str, Any]:
        """CPU seconds so far of the receiver, its walsender, the S3 server
        and the whole machine."""
        recv = self.recv_pid
        wal = self.pid if self.pid is not None and self.source.walsender_is_local(self.pid) \
            else None
        return dict(
            t=time.perf_counter() - self.t0,
            receiver=None if recv is None else proc_cpu_seconds(recv),
            # its main thread: walfast's receive loop (the others upload)
            receiver_main=None if recv is None else thread_cpu_seconds(recv, recv),
            receiver_preempted=None if recv is None else involuntary_switches(recv),
            walsender_preempted=None if wal is None else (
                involuntary_switches(wal) or self.preempted),
            # the walsender may have exited already: its last sample then
            walsender=None if wal is None else (proc_cpu_seconds(wal) or self.cpu),
            store=None if self.store is None else self.store.cpu_seconds(),
            machine=machine_cpu(),
            disk=None if self.outdir is None else disk_busy_seconds(self.outdir))

    def run(self) -> None:
        with self.source.connect() as conn:
            self.connected.set()
            while not self._stop_event.is_set():
                self.follow()
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

    def follow(self) -> None:
        """Read what the receiver added to its stderr and the archive record."""
        now = time.perf_counter() - self.t0
        for line in self._err.lines():
            if self.start_line_s is None and START_RE.search(line):
                self.start_line_s = now
            elif FINISHED_RE.search(line):
                self.finished_s.append(now)
            elif self.stop_line_s is None and STOP_RE.search(line):
                self.stop_line_s = now
                self.sample()
                self.at_stop = self.counters()
        if self._rec is not None:
            self.archived += [(now, name) for name in self._rec.lines() if name]
        if self._store_log is not None:
            for line in self._store_log.lines():
                m = STORED_RE.search(line)
                if m:
                    self.stored.append((now, m.group(1) or m.group(2)))

    def sample(self) -> None:
        if self.pid is not None and self.source.walsender_is_local(self.pid):
            cpu = proc_cpu_seconds(self.pid)
            if cpu is not None:
                self.cpu = cpu
            preempted = involuntary_switches(self.pid)
            if preempted is not None:
                self.preempted = preempted

    def finish(self) -> None:
        self.sample()
        self._stop_event.set()
        self.join(30)
        self.follow()


class _Tail:
    """The complete lines a growing file gained since the last call."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.rest = path, 0, b""

    def skip(self) -> None:
        """Start from the file's present end."""
        try:
            self.offset = self.path.stat().st_size
        except FileNotFoundError:
            pass

    def lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        *done, self.rest = (self.rest + data).split(b"\n")
        return [line.decode(errors="replace").strip() for line in done]


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


def _interrupt(proc: subprocess.Popen[bytes]) -> None:
    """Stop a receiver the benchmark is leaving (Ctrl-C): SIGINT, as a user
    stops one, then SIGKILL after 10 s.  It is not reaped here."""
    try:
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 10
        while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
            if time.monotonic() > deadline:
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    except (OSError, KeyboardInterrupt):
        proc.send_signal(signal.SIGKILL)


def measure(run: Run, source: Source, rng: WalRange, workdir: Path, logdir: Path,
            timeout: float, store: Store | None = None) -> dict[str, Any]:
    """Run once and return the measurements (``status`` ok, unavailable or
    failed; figures only when ok).  The output directory is checked
    (:meth:`~walfast.bench.primary.Source.check_output`), then removed.
    *store*: the archive mode's S3 server
    (:class:`walfast.bench.archive.Store`); the bucket is checked and
    emptied too.  Interrupted (KeyboardInterrupt), the receiver is stopped
    and the run slot dropped before the exception goes on."""
    tag = f"r{run.round}-{run.transport}-{run.mode}-{run.receiver}"
    result: dict[str, Any] = dict(receiver=run.receiver, mode=run.mode, transport=run.transport,
                                  round=run.round)
    major = source.major
    extra, method = MODES[run.mode] if run.receiver != DISCARD else ([], "")
    archiving = run.mode == "archive" and run.receiver == "walfast"
    if run.receiver == "pg_receivewal" and source.receivewal is None:
        result.update(status="unavailable", error=source.receivewal_missing)
        return result
    if archiving and store is None:
        from walfast.bench.archive import moto_available

        result.update(status="unavailable", error=moto_available() or "no S3 server")
        return result
    if archiving:
        assert store is not None
        left = store.empty()
        if left:
            result["warning"] = f"{left} objects were left in the bucket before the run"
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
    slot = source.new_run_slot()
    conninfo = source.conninfo(run.transport)
    if run.receiver == DISCARD:
        argv = discard_argv(conninfo, slot, rng)
    else:
        argv = receiver_argv(run.receiver, source.receivewal, conninfo, outdir,
                             [*extra, "-S", slot, "--endpos", format_lsn(rng.end - 1)])
    stderr_path = logdir / f"{tag}.stderr"
    result["argv"] = source.redact(argv)
    timed_out = threading.Event()
    try:
        with open(stderr_path, "wb") as err:
            sampler = WalsenderSampler(
                source, slot, stderr_path,
                archived_path=state_file(outdir, ARCHIVED) if archiving else None,
                store=store.server if archiving and store is not None else None, outdir=outdir)
            sampler.start()
            sampler.connected.wait(30)
            env = source.receiver_env()
            if run.receiver == "pg_receivewal" and source.receivewal is not None:
                env = tool_env(source.receivewal.parent, env)
            if archiving and store is not None:
                env.update(store.server.env)
            at_spawn = sampler.counters()
            t0 = sampler.t0 = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=err, stderr=err, stdin=subprocess.DEVNULL,
                                    env=env, cwd=PACKAGE_ROOT)
            sampler.recv_pid = proc.pid

        def on_timeout() -> None:
            timed_out.set()
            proc.send_signal(signal.SIGKILL)
        watchdog = threading.Timer(timeout, on_timeout)
        watchdog.start()
        try:
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            wall = time.perf_counter() - t0
            at_exit = sampler.counters()
            io = proc_io(proc.pid)
            write_bytes = io.get("write_bytes")
        except BaseException:
            _interrupt(proc)
            raise
        finally:
            watchdog.cancel()
            sampler.finish()
            _, status, rusage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
    except BaseException:
        shutil.rmtree(outdir, ignore_errors=True)
        raise
    finally:
        try:
            source.drop_slot(slot)
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
        output_bytes, problem = source.check_output(outdir, rng, MODES[run.mode][1])
    if problem is None and archiving:
        from walfast.bench.archive import check_store

        assert store is not None
        problem = check_store(store, source, rng)
        warnings = [ln.strip() for ln in stderr.splitlines() if "warning:" in ln]
        if warnings:
            result["receiver_warnings"] = warnings[:5]
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
            write_bytes=write_bytes, read_bytes=io.get("read_bytes"),
            output_bytes=output_bytes)
        result.update(_receive_window(sampler, at_spawn, rng, wall))
        if archiving:
            from walfast.bench.archive import figures

            result.update(figures(sampler, rng, read_archive_status(outdir), at_spawn, at_exit,
                                  cpu, wall))
    else:
        nothing = all(p == seed and p.stat().st_size == 0 for p in outdir.iterdir())
        # a receiver that refuses the options (exit 1 before writing
        # anything) lacks the mode; anything else is a failure
        unavailable = (run.receiver != DISCARD and not timed_out.is_set()
                       and proc.returncode != 0 and nothing)
        result.update(status="unavailable" if unavailable else "failed", error=problem,
                      stderr_path=str(stderr_path))
    _remove(outdir)
    if archiving and store is not None:
        store.empty()
    return result


def _receive_window(sampler: WalsenderSampler, at_spawn: dict[str, Any],
                    rng: WalRange, wall: float) -> dict[str, Any]:
    """The receive alone, from the spawn to the receiver's ``stopped log
    streaming`` line (walfast and pg_receivewal print it at ``--endpos``
    with ``-v``): receive MB/s, and the CPU seconds spent meanwhile by the
    receiver, its walsender and the whole machine (busy: of all its CPUs;
    steal: taken by the hypervisor).  *wall*: spawn to exit (see
    :meth:`WalsenderSampler.stop_line_before`)."""
    stop, at = sampler.stop_line_before(wall), sampler.at_stop
    if stop is None or at is None or stop <= 0:
        return {}
    out: dict[str, Any] = dict(recv_s=round(stop, 4), recv_mb_s=round(rng.nbytes / 1e6 / stop, 1))
    if sampler.start_line_s is not None and stop > sampler.start_line_s:
        out["stream_recv_mb_s"] = round(rng.nbytes / 1e6 / (stop - sampler.start_line_s), 1)
    if at.get("receiver") is not None:
        out["recv_cpu_recv_s"] = round(at["receiver"], 3)
    if at.get("receiver_main") is not None:
        out["recv_main_cpu_recv_s"] = round(at["receiver_main"], 3)
    for key in ("receiver_preempted", "walsender_preempted"):
        if at.get(key) is not None:
            out[f"{key}_recv"] = at[key]
    if at.get("walsender") is not None:
        out["walsender_cpu_recv_s"] = round(at["walsender"], 3)
    span = at["machine"]["busy"] + at["machine"]["idle"] + at["machine"]["steal"] - (
        at_spawn["machine"]["busy"] + at_spawn["machine"]["idle"] + at_spawn["machine"]["steal"])
    if span > 0:
        out["machine_busy_recv"] = round(
            (at["machine"]["busy"] - at_spawn["machine"]["busy"]) / span, 3)
        out["machine_steal_recv"] = round(
            (at["machine"]["steal"] - at_spawn["machine"]["steal"]) / span, 3)
    if at.get("disk") is not None and at_spawn.get("disk") is not None:
        out["disk_busy_recv"] = round((at["disk"] - at_spawn["disk"]) / stop, 3)
    return out


def _remove(directory: Path) -> None:
    """Delete a run's output and make the deletion (and any dirty pages of a
    --no-sync run) settle before the next run starts."""
    shutil.rmtree(directory)
    os.sync()
