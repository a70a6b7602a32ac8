"""pytest wiring for walfast's tests.

Sections:
  * markers
  * PostgreSQL harness fixtures (pg_bindir, pg_cluster_factory, pg_cluster),
    built on walfast.cluster
  * collection / report hooks

Engine fixtures belong in their own section below the harness ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

# Make the helpers in tests/ (wal_synth, refimpl) importable however pytest
# was invoked.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from receivers import Procs  # noqa: E402
from walfast.cluster import Cluster, find_bindir  # noqa: E402

# Fixtures that need a real server; tests using them get the marker.
_PG_FIXTURES = frozenset({"pg_bindir", "pg_cluster", "pg_cluster_factory", "standby_factory"})

_NO_PG_REASON = ("PostgreSQL server binaries not found (set PG_BINDIR or "
                 "install postgresql)")


# ---------------------------------------------------------------- markers --

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "integration: needs a real PostgreSQL server; auto-added to tests "
        "using pg fixtures")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


# ------------------------------------------- PostgreSQL harness fixtures --

@pytest.fixture(scope="session")
def pg_bindir() -> Path:
    """Directory of the PostgreSQL server binaries; skip (fail under CI)."""
    bindir = find_bindir()
    if bindir is None:
        reason = _NO_PG_REASON
        if os.environ.get("PG_BINDIR"):
            reason += (f" [PG_BINDIR={os.environ['PG_BINDIR']!r} does not "
                       "contain initdb and pg_ctl]")
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; under CI this is a failure, not a skip",
                        pytrace=False)
        pytest.skip(reason)
    return bindir


@pytest.fixture
def pg_cluster_factory(pg_bindir):
    """Callable ``make(wal_segsize_mb=1, **settings) -> Cluster`` (started).

    Every cluster made is stopped and deleted when the test ends, pass or
    fail.
    """
    clusters: list[Cluster] = []

    def make(wal_segsize_mb: int = 1, **settings) -> Cluster:
        cluster = Cluster(pg_bindir, wal_segsize_mb=wal_segsize_mb,
                          settings=settings)
        clusters.append(cluster)
        cluster.init()
        cluster.start()
        return cluster

    yield make
    for cluster in clusters:
        cluster.cleanup()  # never raises


@pytest.fixture
def pg_cluster(pg_cluster_factory) -> Cluster:
    """One started cluster with 1 MiB WAL segments."""
    return pg_cluster_factory(wal_segsize_mb=1)


@pytest.fixture
def standby_factory(pg_bindir):
    """``make(primary) -> Cluster``: a started streaming standby of the
    running *primary* (``pg_basebackup -R``), stopped and deleted when the
    test ends."""
    made: list[Cluster] = []

    def make(primary: Cluster) -> Cluster:
        standby = Cluster(pg_bindir, wal_segsize_mb=primary.wal_segsize_mb,
                          settings=primary.extra_settings)
        made.append(standby)
        standby.init_standby(primary)
        standby.start()
        return standby

    yield make
    for standby in made:
        standby.cleanup()  # never raises


@pytest.fixture
def sync_standby_reset():
    """Reset synchronous_standby_names on the clusters given, at teardown
    (once it is set, every commit waits for the standby)."""
    clusters = []
    yield clusters.append
    for c in clusters:
        if c.running:
            try:
                with c.connect() as conn:
                    conn.execute("ALTER SYSTEM RESET synchronous_standby_names")
                    conn.execute("SELECT pg_reload_conf()")
            except psycopg.Error:
                pass


@pytest.fixture
def procs(tmp_path):
    """Starts walfast / pg_receivewal subprocesses (tests/receivers.py) and
    kills every one still running when the test ends."""
    logdir = tmp_path / "logs"
    logdir.mkdir()
    p = Procs(logdir)
    yield p
    p.kill_all()


# --------------------------------------------------------------- hooks --

def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if _PG_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def pytest_report_header(config) -> list[str]:
    bindir = find_bindir()
    if bindir is None:
        return [f"postgresql: not found ({_NO_PG_REASON})"]
    try:
        version = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True,
            text=True, timeout=30,
        ).stdout.strip() or "unknown version"
    except (OSError, subprocess.SubprocessError) as exc:
        version = f"unknown version ({exc})"
    return [f"postgresql: {bindir} ({version})"]
