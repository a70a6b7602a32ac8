"""Helpers for the ``walfast receive`` integration tests: running walfast and
pg_receivewal as subprocesses, and comparing what they wrote with the
server's own ``pg_wal`` files.

Used by tests/test_receive.py and tests/test_receive_errors.py.  Like
tests/pgcluster.py it has no pytest dependency except the ``procs`` fixture
at the end, which the test modules import.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path


from walfast.lsn import format_lsn, parse_lsn, parse_segment_file_name, parse_wal_file_name

#: WAL segment files a receiver writes: completed or ``.partial``.
START_RE = re.compile(r"starting log streaming at ([0-9A-F]+/[0-9A-F]+) \(timeline (\d+)\)")

#: Environment variables that could point the programs at another server.
_SCRUB_ENV = (
    "PGDATA", "PGHOST", "PGHOSTADDR", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE",
    "PGSERVICEFILE", "PGOPTIONS", "PGPASSWORD", "PGPASSFILE", "PGSSLMODE", "PGAPPNAME",
    "PGTZ", "PGCLIENTENCODING", "PG_COLOR",
)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV}
    env["PG_COLOR"] = "never"
    return env


def walfast_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "walfast.cli", "receive", *args]


def pg_receivewal_argv(bindir: Path, *args: str) -> list[str]:
    return [str(bindir / "pg_receivewal"), *args]


class Receiver:
    """A receiver (walfast or pg_receivewal) running as a subprocess, its
    stdout and stderr going to files (never a pipe that could fill up).
    *new_session*: in a process group of its own (for a program that starts
    the receiver itself, such as Barman)."""

    def __init__(self, name: str, argv: Sequence[str], logdir: Path, *,
                 new_session: bool = False) -> None:
        self.name = name
        self.argv = list(argv)
        self.stderr_path = logdir / f"{name}.stderr"
        self.stdout_path = logdir / f"{name}.stdout"
        with open(self.stderr_path, "wb") as err, open(self.stdout_path, "wb") as out:
            self.popen = subprocess.Popen(self.argv, stdout=out, stderr=err,
                                          stdin=subprocess.DEVNULL, env=clean_env(),
                                          start_new_session=new_session)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.name} did not exit within {timeout} s; stderr:\n{self.stderr()}") from None

    def interrupt(self, timeout: float = 30) -> int:
        """SIGINT, then wait for the exit status."""
        if self.alive():
            self.popen.send_signal(signal.SIGINT)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.alive():
            self.popen.kill()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass

    def start_position(self, timeout: float = 30) -> tuple[int, int]:
        """The ``starting log streaming at X/X (timeline N)`` of its -v log
        (the first one)."""
        deadline = time.monotonic() + timeout
        while True:
            m = START_RE.search(self.stderr())
            if m:
                return parse_lsn(m.group(1)), int(m.group(2))
            if not self.alive() or time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} did not log its start position; stderr:\n{self.stderr()}")
            time.sleep(0.05)


def wait_until(pred: Callable[[], object], what: str, timeout: float = 60,
               procs: Sequence[Receiver] = (), interval: float = 0.05):
    """Poll *pred* until it returns something true (returned); fail after
    *timeout* or as soon as one of *procs* has exited."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        for p in procs:
            if not p.alive():
                raise AssertionError(
                    f"waiting for {what}: {p.name} exited with {p.popen.returncode}; "
                    f"stderr:\n{p.stderr()}")
        if time.monotonic() > deadline:
            logs = "".join(f"\n--- {p.name} stderr ---\n{p.stderr()}" for p in procs)
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{logs}")
        time.sleep(interval)


# --------------------------------------------------------------------------- #
# the server side
# --------------------------------------------------------------------------- #

def replication_rows(cluster) -> dict[str, dict]:
    """pg_stat_replication by application_name."""
    rows = cluster.execute(
        "SELECT application_name, pid, state, sent_lsn::text, write_lsn::text, "
        "flush_lsn::text, sync_state, client_addr::text FROM pg_stat_replication")
    out = {}
    for app, pid, state, sent, write, flush, sync_state, addr in rows:
        out[app] = dict(pid=pid, state=state, sync_state=sync_state, client_addr=addr,
                        sent_lsn=parse_lsn(sent) if sent else None,
                        write_lsn=parse_lsn(write) if write else None,
                        flush_lsn=parse_lsn(flush) if flush else None)
    return out


def wait_streaming(cluster, names: Sequence[str], procs: Sequence[Receiver] = (),
                   timeout: float = 30) -> dict[str, dict]:
    """Wait until each application name has a walsender in state streaming."""
    def ready():
        rows = replication_rows(cluster)
        if all(rows.get(n, {}).get("state") == "streaming" for n in names):
            return rows
        return None
    return wait_until(ready, f"{', '.join(names)} streaming", timeout, procs)


def pg_wal_range(cluster, name: str, offset: int, length: int) -> bytes:
    with open(cluster.pg_wal / name, "rb") as f:
        f.seek(offset)
        return f.read(length)


# --------------------------------------------------------------------------- #
# what the receivers wrote
# --------------------------------------------------------------------------- #

def wal_files(directory: Path) -> list[str]:
    """Names of the uncompressed segment files in *directory* (completed
    and .partial)."""
    return sorted(p.name for p in directory.iterdir()
                  if (wal := parse_wal_file_name(p.name)) is not None and wal.plain)


def completed_files(directory: Path) -> list[str]:
    return [n for n in wal_files(directory) if not n.endswith(".partial")]


def partial_files(directory: Path) -> list[str]:
    return [n for n in wal_files(directory) if n.endswith(".partial")]


def _read_range(path: Path, offset: int, length: int) -> bytes | None:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(length)
    except FileNotFoundError:
        return None


def mismatch(directory: Path, cluster, start: int, end: int, timeline: int = 1) -> str | None:
    """Compare the WAL in [start, end) that *directory* holds (in completed
    or .partial segment files) with the server's pg_wal.  None if equal,
    else a description of the first difference."""
    seg = cluster.wal_segment_size
    pos = start
    while pos < end:
        segno, off = divmod(pos, seg)
        name = cluster.segment_name(segno, timeline)
        n = min(seg - off, end - pos)
        mine = _read_range(directory / name, off, n)
        if mine is None:
            mine = _read_range(directory / (name + ".partial"), off, n)
        if mine is None:
            # completed between the two looks?
            mine = _read_range(directory / name, off, n)
        if mine is None:
            return f"{name} missing at {format_lsn(pos)}"
        theirs = pg_wal_range(cluster, name, off, n)
        if mine != theirs:
            if len(mine) < len(theirs):
                return f"{name} too short ({len(mine)} of {len(theirs)} bytes from {off})"
            i = next(i for i in range(len(theirs)) if mine[i] != theirs[i])
            return f"{name} differs at offset {off + i} ({format_lsn(pos + i)})"
        pos += n
    return None


def holds_wal(directory: Path, cluster, start: int, end: int, timeline: int = 1) -> bool:
    return mismatch(directory, cluster, start, end, timeline) is None


def segno_of(name: str, cluster) -> int:
    return parse_segment_file_name(name[:24], cluster.wal_segment_size)[1]


def assert_completed_like_pg_wal(directory: Path, cluster) -> list[str]:
    """Every completed segment in *directory* is byte-identical to pg_wal's,
    and they are contiguous (no gap).  Returns their names."""
    names = completed_files(directory)
    for name in names:
        assert (directory / name).read_bytes() == (cluster.pg_wal / name).read_bytes(), \
            f"{directory / name} differs from the server's pg_wal/{name}"
    segnos = [segno_of(n, cluster) for n in names]
    if segnos:
        assert segnos == list(range(segnos[0], segnos[0] + len(segnos))), f"gap in {names}"
    return names


# --------------------------------------------------------------------------- #
# shared by the side-by-side tests
# --------------------------------------------------------------------------- #

def make_dirs(tmp_path: Path, *names: str) -> list[Path]:
    """Make and return the directories *names* under *tmp_path*."""
    out = []
    for n in names:
        d = tmp_path / n
        d.mkdir()
        out.append(d)
    return out


def small_commit(cluster) -> int:
    """Commit one row; return the WAL position right after it."""
    with cluster.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS walfast_fill (id bigint, payload text)")
        conn.execute("INSERT INTO walfast_fill VALUES (-1, 'tail')")
        return parse_lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])


def same_output(wf, pg, segsize: int | None = None) -> None:
    """walfast printed exactly what pg_receivewal printed, program name
    aside (its stop message twice too: pg_receivewal's stop callback runs
    again after the file is closed).

    With *segsize*, walfast's start positions count as equal to
    pg_receivewal's when in the same segment: on resuming a .partial
    pg_receivewal starts at the segment start, walfast at the start of the
    file's last valid page (walfast/resume.py)."""
    ours = wf.stderr().replace("walfast: ", "PROG: ").splitlines()
    if segsize is not None:
        def to_segment_start(m: re.Match) -> str:
            lsn = parse_lsn(m.group(1))
            return f"starting log streaming at {format_lsn(lsn - lsn % segsize)} ("
        ours = [re.sub(r"starting log streaming at (\S+) \(", to_segment_start, line)
                for line in ours]
    theirs = pg.stderr().replace("pg_receivewal: ", "PROG: ").splitlines()
    assert ours == theirs


# --------------------------------------------------------------------------- #
# fixture
# --------------------------------------------------------------------------- #

class Procs:
    """Starts receivers and kills every one still running at teardown."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.started: list[Receiver] = []

    def walfast(self, *args: str, name: str = "walfast") -> Receiver:
        return self._start(name, walfast_argv(*args))

    def pg_receivewal(self, bindir: Path, *args: str, name: str = "pg_receivewal") -> Receiver:
        return self._start(name, pg_receivewal_argv(bindir, *args))

    def program(self, name: str, argv: Sequence[str]) -> Receiver:
        """Start any receiver command line (tests/compat.py's programs)."""
        return self._start(name, list(argv))

    def _start(self, name: str, argv: list[str]) -> Receiver:
        taken = {r.name for r in self.started}
        unique, k = name, 1
        while unique in taken:
            k += 1
            unique = f"{name}-{k}"
        r = Receiver(unique, argv, self.logdir)
        self.started.append(r)
        return r

    def kill_all(self) -> None:
        for r in self.started:
            r.kill()


def run_cli(argv: Sequence[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                          env=clean_env(), stdin=subprocess.DEVNULL)
