"""Barman as a real client: its streaming archiver runs walfast as its
pg_receivewal.

Barman (https://pgbarman.org) archives WAL by running ``pg_receivewal``,
looked up first on the server's ``path_prefix``, into its ``streaming/``
directory; ``barman archive-wal`` (run by ``barman cron``) then moves every
WAL file from there into its WAL archive (``wals/``) and anything else it
finds there into ``errors/``, which ``barman check`` reports as
``archiver errors``.  Here ``pg_receivewal`` on the path_prefix is a link to
walfast-receivewal and everything else is real: Barman from PyPI (the
``test`` extra), a throwaway primary, and Barman's own commands run the way
its cron job and an operator run them, the receiver stopped and started
again between segments.

Barman's CLI is the one installed next to this interpreter.  Without it the
test is skipped, except under CI (``CI=true``), where it fails.
"""

from __future__ import annotations

import getpass
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from helpers.compat import write_entry_script
from helpers.receivers import (
    START_RE, Receiver, clean_env, completed_files, partial_files, wait_until,
)
from walfast.lsn import parse_lsn, parse_wal_file_name

pytestmark = pytest.mark.slow

SERVER = "pg"
SLOT = "barman"
#: Barman's WAL archive keeps segments in directories named after their
#: first 16 hex digits (timeline and log number).
_HASH_DIR_RE = re.compile(r"^[0-9A-F]{16}$")


@pytest.fixture(scope="module")
def barman_cli() -> Path:
    """Barman's CLI next to ``sys.executable``; skip (fail under CI) when
    Barman or its driver is missing or the CLI does not run."""
    cli = Path(sys.executable).with_name("barman")
    reason = None
    if importlib.util.find_spec("barman") is None:
        reason = "Barman is not installed (pip install -e '.[test]')"
    elif importlib.util.find_spec("psycopg2") is None:
        reason = "psycopg2 (Barman's PostgreSQL driver) is not installed"
    elif not os.access(cli, os.X_OK):
        reason = f"Barman's CLI is not at {cli}"
    else:
        r = subprocess.run([str(cli), "--version"], capture_output=True, text=True,
                           timeout=60, env=clean_env(), stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            reason = f"{cli} --version failed ({r.returncode}): {r.stdout}{r.stderr}"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; under CI this is a failure, not a skip", pytrace=False)
        pytest.skip(reason)
    return cli


# --------------------------------------------------------------------------- #
# processes
# --------------------------------------------------------------------------- #

def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group *pgid*."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, ValueError):
            continue
        if int(pgrp) == pgid and state != "Z":
            out.append(int(stat.parent.name))
    return out


class ReceiveWal(Receiver):
    """``barman receive-wal SERVER`` in the background, as Barman's cron
    starts it, in a process group of its own (pg_receivewal, which Barman
    starts, joins it).  :meth:`output` is all it printed: Barman's lines
    and, prefixed with the server name, pg_receivewal's."""

    def __init__(self, argv: Sequence[str], logdir: Path, name: str) -> None:
        super().__init__(name, argv, logdir, new_session=True)

    def output(self) -> str:
        return self.stdout_path.read_text(errors="replace") + self.stderr()

    def start_lsn(self) -> int:
        """Where pg_receivewal said it started streaming."""
        m = wait_until(lambda: START_RE.search(self.output()),
                       f"{self.name}: pg_receivewal's start", procs=[self])
        return parse_lsn(m.group(1))

    def terminate(self) -> None:
        """Teardown: stop Barman and whatever it started.  SIGINT to the
        group (Ctrl-C), SIGKILL to what is left after 15 s; never raises.
        The group id is signalled only while it is certainly ours: Barman
        not reaped yet, or live members seen in it."""
        try:
            if self.popen.returncode is None or group_members(self.pid):
                os.killpg(self.pid, signal.SIGINT)
            deadline = time.monotonic() + 15
            while group_members(self.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if group_members(self.pid):
                os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass


class Barman:
    """Barman's configuration for one server, its commands, and the
    ``receive-wal`` processes started (stopped at teardown)."""

    def __init__(self, cli: Path, root: Path, cluster, bindir: Path) -> None:
        self.cli = cli
        self.root = root
        self.cluster = cluster
        self.home = root / "home"
        self.log_file = root / "barman.log"
        self.logs = root / "logs"
        self.logs.mkdir()
        lock_dir = root / "lock"
        lock_dir.mkdir()
        # pg_receivewal: a link to walfast-receivewal, the console script as
        # pip installs it (tests/compat.py; it runs this checkout), which then
        # calls itself pg_receivewal; pg_basebackup: the server's own.
        self.bin = root / "bin"
        self.bin.mkdir()
        script = write_entry_script(self.bin)
        (self.bin / "pg_receivewal").symlink_to(script.name)
        (self.bin / "pg_basebackup").symlink_to(bindir / "pg_basebackup")
        conninfo = cluster.conninfo()
        self.config = root / "barman.conf"
        self.config.write_text(f"""\
[barman]
barman_home = {self.home}
barman_user = {getpass.getuser()}
log_file = {self.log_file}
log_level = INFO
barman_lock_directory = {lock_dir}

[{SERVER}]
description = walfast as Barman's pg_receivewal
conninfo = {conninfo}
streaming_conninfo = {conninfo}
backup_method = postgres
archiver = off
streaming_archiver = on
slot_name = {SLOT}
path_prefix = {self.bin}
""")
        self.server_dir = self.home / SERVER
        self.streaming = self.server_dir / "streaming"
        self.wals = self.server_dir / "wals"
        self.errors = self.server_dir / "errors"
        self.started: list[ReceiveWal] = []

    def argv(self, *args: str) -> list[str]:
        return [str(self.cli), "-c", str(self.config), *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), capture_output=True, text=True,
                              timeout=timeout, env=clean_env(), stdin=subprocess.DEVNULL,
                              cwd=self.root)

    def ok(self, *args: str) -> str:
        """Run a command that must succeed; return its stdout."""
        r = self.run(*args)
        assert r.returncode == 0, \
            f"barman {' '.join(args)} exited with {r.returncode}\n{r.stdout}{r.stderr}" \
            f"{self.context()}"
        assert "ERROR" not in r.stdout + r.stderr, \
            f"barman {' '.join(args)}:\n{r.stdout}{r.stderr}{self.context()}"
        return r.stdout

    def receive_wal(self) -> ReceiveWal:
        rw = ReceiveWal(self.argv("receive-wal", SERVER), self.logs,
                        f"receive-wal-{len(self.started) + 1}")
        self.started.append(rw)
        return rw

    def stop_receive_wal(self, rw: ReceiveWal) -> None:
        """``barman receive-wal --stop SERVER`` (SIGINT to the process that
        holds Barman's lock, which passes it on to pg_receivewal)."""
        stopper = subprocess.Popen(self.argv("receive-wal", "--stop", SERVER),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, env=clean_env(), stdin=subprocess.DEVNULL)
        try:
            # Reap it here: --stop polls the pid until it is gone, and a
            # zombie child of ours would still count as alive.
            rc = rw.wait(30)
            out, _ = stopper.communicate(timeout=60)
        finally:
            if stopper.poll() is None:
                stopper.kill()
                stopper.wait()
        assert stopper.returncode == 0 and f"Stopped process receive-wal({rw.pid})" in out, \
            f"barman receive-wal --stop exited with {stopper.returncode}:\n{out}" \
            f"{self.context()}"
        self.check_stopped(rw, rc)

    def check_stopped(self, rw: ReceiveWal, rc: int, expected_rc: int = 0) -> None:
        """*rw* exited with *expected_rc* and no error, nothing of its
        process group is left (pg_receivewal exited too) within 30 s, and
        the server has released the slot (the next run can take it)."""
        assert rc == expected_rc and "ERROR" not in rw.output(), \
            f"{rw.name} exited with {rc}, not {expected_rc}{self.context()}"
        deadline = time.monotonic() + 30
        while (left := group_members(rw.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not left, f"{rw.name} left processes behind: {left}{self.context()}"
        wait_until(lambda: self.cluster.execute(
            "SELECT NOT active FROM pg_replication_slots WHERE slot_name = %s", (SLOT,))[0][0],
            f"slot {SLOT} released")

    def check(self) -> None:
        """``barman check SERVER`` exits 0 and every check is OK."""
        r = self.run("check", SERVER)
        lines = r.stdout.splitlines()
        failed = [line for line in lines[1:] if not re.match(r"^\t[^:]+: OK\b", line)]
        assert r.returncode == 0 and lines[:1] == [f"Server {SERVER}:"] and not failed, \
            f"barman check exited with {r.returncode}; not OK:\n" + "\n".join(failed) + \
            f"\n--- barman check ---\n{r.stdout}{r.stderr}{self.context()}"
        for name in ("archiver errors", "pg_receivexlog", "pg_receivexlog compatible",
                     "receive-wal running", "replication slot"):
            assert any(line.startswith(f"\t{name}: OK") for line in lines), \
                f"no '{name}: OK' in:\n{r.stdout}"

    def teardown(self) -> None:
        for rw in self.started:
            rw.terminate()

    def context(self) -> str:
        """What to print when something failed: the directories, every
        receive-wal run's output (with pg_receivewal's log), Barman's log."""
        parts = []
        for d in (self.streaming, self.errors, self.wals):
            names = sorted(str(p.relative_to(d)) for p in d.rglob("*")) if d.is_dir() else []
            parts.append(f"--- {d.name}/: {names}")
        for rw in self.started:
            parts.append(f"--- {rw.name} ---\n{rw.output()}")
        try:
            tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-40:])
        except OSError as exc:
            tail = f"<{exc}>"
        parts.append(f"--- tail of {self.log_file} ---\n{tail}")
        return "\n" + "\n".join(parts)


@pytest.fixture
def barman(barman_cli, pg_cluster_factory, tmp_path):
    """A primary with 1 MiB WAL segments and Barman configured for it;
    every ``receive-wal`` started is stopped at teardown (before the
    cluster is)."""
    cluster = pg_cluster_factory(wal_segsize_mb=1)
    b = Barman(barman_cli, tmp_path, cluster, cluster.bindir)
    yield b
    b.teardown()


# --------------------------------------------------------------------------- #
# WAL
# --------------------------------------------------------------------------- #

def make_segments(cluster, n: int) -> int:
    """Write *n* segments' worth of WAL, then switch; return the number of
    the last segment completed."""
    cluster.generate_wal(n * cluster.wal_segment_size)
    return (cluster.switch_wal() - 1) // cluster.wal_segment_size


def wait_completed(b: Barman, rw: ReceiveWal, segno: int) -> None:
    """Wait until pg_receivewal has completed segment *segno* in Barman's
    streaming directory."""
    name = b.cluster.segment_name(segno)
    wait_until(lambda: (b.streaming / name).exists(), f"{name} in {b.streaming}",
               procs=[rw])


def assert_runs_walfast(b: Barman, rw: ReceiveWal) -> None:
    """The pg_receivewal Barman started is walfast: ``walfast status``
    finds a walfast receiver streaming into Barman's directory, and its pid
    is in the process group of this ``barman receive-wal``."""
    argv = [sys.executable, "-m", "walfast.cli", "status", "--json", str(b.streaming)]

    def streaming():
        r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=clean_env())
        if r.returncode != 0:
            return None
        doc = json.loads(r.stdout)
        return doc if doc["status"] == "streaming" and doc["pid"] in group_members(rw.pid) \
            else None

    doc = wait_until(streaming, f"walfast status: a walfast receiver in {b.streaming}",
                     procs=[rw], interval=0.2)
    assert doc["slot_name"] == SLOT, doc


def archived(b: Barman) -> list[str]:
    """Names of the segments in Barman's WAL archive; anything else in it
    fails the test (a .partial, a compressed file, a stray directory)."""
    names, stray = [], []
    for entry in b.wals.iterdir():
        if entry.is_dir() and _HASH_DIR_RE.match(entry.name):
            for f in entry.iterdir():
                wal = parse_wal_file_name(f.name)
                if wal and wal.complete and wal.plain and f.is_file() \
                        and f.name.startswith(entry.name):
                    names.append(f.name)
                else:
                    stray.append(f"{entry.name}/{f.name}")
        elif not (entry.is_file() and entry.name.endswith("xlog.db")):
            stray.append(entry.name)
    assert not stray, f"unexpected files in Barman's WAL archive: {stray}{b.context()}"
    return sorted(names)


def xlogdb_names(b: Barman) -> list[str]:
    """The WAL names Barman recorded in its xlog.db."""
    dbs = list(b.wals.glob("*xlog.db"))
    assert len(dbs) == 1, f"expected one xlog.db in {b.wals}: {dbs}"
    return sorted(line.split("\t", 1)[0] for line in dbs[0].read_text().splitlines() if line)


# --------------------------------------------------------------------------- #
# the test
# --------------------------------------------------------------------------- #

def test_barman_streaming_archiver_with_walfast(barman):
    b = barman
    cluster = b.cluster
    seg = cluster.wal_segment_size

    # As an operator sets a server up: the slot, then receive-wal from cron.
    b.ok("receive-wal", "--create-slot", SERVER)
    slots = cluster.execute("SELECT slot_type FROM pg_replication_slots WHERE slot_name = %s",
                            (SLOT,))
    assert slots == [("physical",)], slots

    # Run 1 starts where the server is (the slot has no WAL reserved yet).
    here = cluster.current_wal_lsn() // seg
    rw = b.receive_wal()
    first = rw.start_lsn() // seg
    assert first == here, f"started in segment {first:X}, the server is in {here:X}" \
        f"{b.context()}"
    assert_runs_walfast(b, rw)
    last = make_segments(cluster, 3)
    wait_completed(b, rw, last)
    # The operator's first check (it also makes Barman's other directories,
    # errors/ among them, and archives what has been streamed).
    b.check()
    b.ok("archive-wal", SERVER)                   # cron, while receiving
    b.stop_receive_wal(rw)

    # Stopped: WAL goes on (the slot keeps it); cron goes on archiving.
    behind = make_segments(cluster, 2)
    b.ok("archive-wal", SERVER)

    # Run 2 resumes right after what run 1 completed and catches up.
    rw = b.receive_wal()
    resumed = rw.start_lsn() // seg
    assert resumed == last + 1, f"run 2 started in segment {resumed:X}, run 1 completed " \
        f"{last:X}{b.context()}"
    assert_runs_walfast(b, rw)
    wait_completed(b, rw, behind)
    last = make_segments(cluster, 2)
    wait_completed(b, rw, last)
    b.ok("archive-wal", SERVER)
    # Stopped with SIGTERM (kill PID): Barman passes it on to pg_receivewal
    # and exits at once with 128 + SIGTERM, closing pg_receivewal's stdout
    # and stderr pipes; pg_receivewal exits on its own.
    rw.popen.send_signal(signal.SIGTERM)
    b.check_stopped(rw, rw.wait(30), expected_rc=128 + signal.SIGTERM)

    # Run 3: running while barman check looks at everything.
    rw = b.receive_wal()
    resumed = rw.start_lsn() // seg
    assert resumed == last + 1, f"run 3 started in segment {resumed:X}, run 2 completed " \
        f"{last:X}{b.context()}"
    assert_runs_walfast(b, rw)
    last = make_segments(cluster, 2)
    wait_completed(b, rw, last)
    b.ok("archive-wal", SERVER)
    b.check()
    b.stop_receive_wal(rw)
    b.ok("archive-wal", SERVER)

    # Nothing in errors/; every segment from the first one streamed to the
    # last one completed is in Barman's archive, but the last one, which
    # Barman leaves in streaming/ (pg_receivewal continues after it), each
    # byte-identical to the primary's pg_wal.
    errors = sorted(p.name for p in b.errors.iterdir())
    assert not errors, f"Barman moved files to {b.errors}: {errors}{b.context()}"
    in_archive = archived(b)
    kept = completed_files(b.streaming)
    expected = [cluster.segment_name(s) for s in range(first, last + 1)]
    assert in_archive + kept == expected, \
        f"archived {in_archive} + left in streaming/ {kept} != {expected}{b.context()}"
    # (the last completed one only when there is no .partial after it)
    assert kept == ([] if partial_files(b.streaming) else expected[-1:]), \
        f"Barman left {kept} in streaming/{b.context()}"
    assert in_archive, f"nothing archived{b.context()}"
    assert xlogdb_names(b) == in_archive
    for name in in_archive + kept:
        path = (b.wals / name[:16] / name) if name in in_archive else (b.streaming / name)
        assert path.read_bytes() == (cluster.pg_wal / name).read_bytes(), \
            f"{path} differs from the primary's pg_wal/{name}"
