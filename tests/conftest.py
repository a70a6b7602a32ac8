"""pytest wiring for walfast's tests.

Sections:
  * markers
  * PostgreSQL harness fixtures (pg_bindir, pg_cluster_factory, pg_cluster),
    built on walfast.cluster; the fake walsender (fake_walsender)
  * collection / report hooks

Engine fixtures belong in their own section below the harness ones.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from helpers.fakewalsender import FakeWalsender
from helpers.receivers import Procs
from walfast import majors
from walfast.cluster import Cluster, find_bindir

# Fixtures that need a real server; tests using them get the marker.
_PG_FIXTURES = frozenset({"pg_bindir", "pg_cluster", "pg_cluster_factory", "shared_cluster",
                          "standby_factory"})

_NO_PG_REASON = ("PostgreSQL server binaries not found (set PG_BINDIR or "
                 "install postgresql)")


# ---------------------------------------------------------------- markers --

def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "integration: needs a real PostgreSQL server; auto-added to tests "
        "using pg fixtures")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line(
        "markers",
        "majors: version-sensitive; `make test` also runs these on every other "
        "PostgreSQL major walfast is tested against (scripts/test-majors)")


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


@pytest.fixture(scope="session")
def pg_major(pg_bindir) -> majors.MajorFacts:
    """What walfast.majors says of the major of the server binaries (the
    clusters' and their pg_receivewal's: one installation)."""
    return majors.facts(Cluster(pg_bindir).major)


@pytest.fixture(scope="session")
def receivewal_oracle(pg_bindir, pg_major) -> Path:
    """The bin directory of a pg_receivewal whose command line is the one
    walfast-receivewal speaks (15+, ``receivewal_command_line`` in
    walfast.majors): the server's own, else the oldest such tested major
    installed (``make test`` has Debian's 15).  Skip when there is none
    (fail under CI)."""
    if pg_major.receivewal_command_line:
        return pg_bindir
    for number in majors.TESTED_MAJORS:
        bindir = find_bindir(major=number)
        if majors.TABLE[number].receivewal_command_line and bindir is not None \
                and (bindir / "pg_receivewal").exists():
            return bindir
    reason = (f"no pg_receivewal of PostgreSQL {majors.first_major_with('receivewal_command_line')}"
              " or newer installed to compare walfast-receivewal's command line with")
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


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


@pytest.fixture(scope="session")
def _shared_clusters(pg_bindir):
    """The clusters tests share, one per (segment size, settings), started on
    first use and removed at the end of the session."""
    made: dict[tuple, Cluster] = {}

    def get(wal_segsize_mb: int, settings: dict) -> Cluster:
        key = (wal_segsize_mb, tuple(sorted(settings.items())))
        cluster = made.get(key)
        if cluster is None:
            cluster = made[key] = Cluster(pg_bindir, wal_segsize_mb=wal_segsize_mb,
                                          settings=settings)
            cluster.init()
        if not cluster.running:
            cluster.start()       # first use, or a test stopped it
        return cluster

    yield get
    for cluster in made.values():
        cluster.cleanup()  # never raises


@pytest.fixture
def shared_cluster(_shared_clusters):
    """Callable ``get(wal_segsize_mb=1, **settings) -> Cluster``: a started
    cluster shared with other tests, for a test that does not need a fresh
    server.  When the test ends the server is put back as the next test
    expects it (:func:`_reset_shared`): running, no replication connection,
    no slot, no table, no setting changed with ALTER SYSTEM.  WAL it wrote stays (the
    clusters keep 4 GB of WAL, so pg_wal still holds every segment a test
    compares with)."""
    used: list[Cluster] = []

    def get(wal_segsize_mb: int = 1, **settings) -> Cluster:
        cluster = _shared_clusters(wal_segsize_mb, settings)
        used.append(cluster)
        return cluster

    yield get
    for cluster in used:
        _reset_shared(cluster)


def _reset_shared(cluster: Cluster) -> None:
    """End every replication connection and client session a test left,
    drop its slots and tables, undo ALTER SYSTEM; restart the server if it
    was stopped."""
    if not cluster.running:
        cluster.start()
    with cluster.connect() as conn:
        conn.execute("ALTER SYSTEM RESET ALL")
        conn.execute("SELECT pg_reload_conf()")
        # Tables the test made go (a standby's base backup copies them all).
        conn.execute(
            "DO $$ DECLARE t text; BEGIN FOR t IN SELECT tablename FROM pg_tables "
            "WHERE schemaname = 'public' LOOP EXECUTE 'DROP TABLE ' || quote_ident(t) "
            "|| ' CASCADE'; END LOOP; END $$")
        deadline = time.monotonic() + 30
        while True:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() "
                "AND backend_type IN ('walsender', 'client backend')")
            left = conn.execute(
                "SELECT slot_name FROM pg_replication_slots WHERE NOT active").fetchall()
            for (slot,) in left:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            busy = conn.execute(
                "SELECT count(*) FROM pg_replication_slots").fetchone()[0] + conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender'"
            ).fetchone()[0]
            if not busy:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not reset the shared cluster {cluster!r}: "
                                   f"{busy} slots/walsenders left")
            time.sleep(0.05)


@pytest.fixture
def pg_cluster(shared_cluster) -> Cluster:
    """A started cluster with 1 MiB WAL segments, shared with other tests
    (:func:`shared_cluster`); tests that stop, promote or reconfigure the
    server in ways a reset cannot undo use ``pg_cluster_factory``."""
    return shared_cluster(1)


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


@pytest.fixture
def fake_walsender():
    """A started fake walsender (tests/helpers/fakewalsender.py) on a free
    127.0.0.1 port: ``server.add(user, scenario)``, connect with
    ``server.conninfo(user)``, read ``server.wait_records(user)``.  Stopped
    (every connection closed, every thread joined) when the test ends."""
    with FakeWalsender() as server:
        yield server


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


def pytest_terminal_summary(terminalreporter) -> None:
    """What tests measured and recorded (``record_property``), shown without
    ``-s`` too, so that a plain run's figures can be quoted."""
    figures = [f"{r.nodeid}: {name}: {value}"
               for reports in terminalreporter.stats.values() for r in reports
               if getattr(r, "when", None) == "call"
               for name, value in getattr(r, "user_properties", ())]
    if figures:
        terminalreporter.section("recorded figures")
        for line in figures:
            terminalreporter.write_line(line)
