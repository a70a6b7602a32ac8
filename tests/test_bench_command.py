"""``walfast bench`` (walfast/cli/bench.py, the machinery in walfast/bench):
a tiny real run on the throwaway primary through the real command line,
``-d`` against a test cluster (nothing written to it but the test's own
WAL, no slot left behind, also when interrupted), and usage errors.  Only
that figures were measured and hang together is checked, never a speed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from walfast import cli
from walfast.bench import report
from walfast.cluster import Cluster
from walfast.lsn import format_lsn

#: The test's own WAL (a "server's own traffic" to the benchmark):
#: non-transactional logical messages, which leave no table behind for
#: autovacuum to write about later (and then ``pg_switch_wal()`` alone, not
#: Cluster.switch_wal(), which inserts into a table).
_EMIT = "SELECT pg_logical_emit_message(false, 'walfast-bench-test', repeat('x', 1000000)) " \
        "FROM generate_series(1, %s)"


def bench(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
          timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "walfast.cli", "bench", *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def bench_slots(cluster: Cluster) -> list[str]:
    return [name for (name,) in cluster.execute(
        "SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE 'walfast\\_bench\\_%'")]


def wal_records(cluster: Cluster, start: int, end: int) -> dict[str, int]:
    """Record type -> count of the WAL in [start, end) (pg_waldump --stats)."""
    if end <= start:
        return {}
    r = subprocess.run([cluster.tool("pg_waldump"), "--stats=record", "-p", str(cluster.pg_wal),
                        "-s", format_lsn(start), "-e", format_lsn(end)],
                       capture_output=True, text=True, env=cluster.tool_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    return {m.group(1): int(m.group(2)) for m in
            re.finditer(r"^(\w+/\S+)\s+(\d+)\s+\(", r.stdout, re.M)}


# _housekeeping: the -d tests VACUUM the shared cluster first.  Rows that
# earlier tests deleted (their tables dropped) would otherwise be pruned
# from the catalog pages by whichever session reads them next, the
# benchmark's catalog lookups included: a Heap2/PRUNE record that no one
# wrote on purpose.

#: What may appear in the WAL while a -d benchmark runs: the test's own
#: messages, switches and checkpoint, and the server's own
#: running-transactions snapshot (logged after activity and at checkpoints).
_NOT_THE_BENCHMARKS = {"LogicalMessage/MESSAGE", "XLOG/SWITCH", "XLOG/CHECKPOINT_ONLINE",
                       "Standby/RUNNING_XACTS"}
#: What autovacuum writes when it visits a table of the shared cluster
#: meanwhile (pg_class updated in place, and the cache invalidations that
#: go with it): the server's, never the benchmark's.
_AUTOVACUUM = {"Heap/INPLACE", "Standby/INVALIDATIONS"}


# --------------------------------------------------------------------------- #
# usage
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("argv, message", [
    (["-S", "s"], "-S/--slot names a slot of the server given with -d"),
    (["-d", "host=x", "--sync-standby"], "--sync-standby runs pgbench"),
    (["-d", "host=x", "--transports", "unix"], "--transports describes the throwaway primary"),
    (["-d", "host=x", "--wal-segsize", "1"], "--wal-segsize describes the throwaway primary"),
    (["--pgbench-seconds", "5"], "--pgbench-seconds is an option of --sync-standby"),
    (["--synchronous-commit", "on"], "--synchronous-commit is an option of --sync-standby"),
    (["--sync-standby", "--pgbench-seconds", "0"], "--pgbench-seconds must be at least 1"),
    (["--modes", "durable,fast"], "unknown fast; choose from durable,no-sync"),
    (["--receivers", "walfast,barman"], "unknown barman"),
    (["--size", "lots"], "not a size: 'lots'"),
    (["--size", "0MB"], "it must be more than 0"),
    (["--rounds", "0"], "must be at least 1"),
    (["--synchronous-commit", "off", "--sync-standby"], "unknown off"),
    (["extra"], "unrecognized arguments: extra"),
], ids=lambda x: x if isinstance(x, str) else " ".join(x))
def test_usage_errors(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["bench", *argv]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith("walfast bench: error: ") and message in lines[0], err
    assert lines[1] == 'walfast bench: hint: Try "walfast bench --help" for more information.'


def test_help_reads_well() -> None:
    r = subprocess.run([sys.executable, "-m", "walfast.cli", "bench", "--help"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == ""
    for text in ("usage: walfast bench", "a real server (nothing is written to it)",
                 "-d CONNSTR, --dbname CONNSTR", "-S SLOT, --slot SLOT", "--sync-standby",
                 "the throwaway primary (without -d)", "examples:", "Exit status"):
        assert text in r.stdout
    assert max(map(len, r.stdout.splitlines())) <= 100
    top = subprocess.run([sys.executable, "-m", "walfast.cli", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert re.search(r"^\s+bench\s+benchmark WAL throughput", top.stdout, re.M)


def test_chart_needs_matplotlib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    """Without matplotlib, --chart is refused before anything starts."""
    monkeypatch.setattr(report, "matplotlib_missing", lambda: "the chart needs matplotlib")
    assert cli.main(["bench", "--chart", str(tmp_path / "c.png"), "--workdir",
                     str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err == "walfast bench: error: --chart: the chart needs matplotlib\n"
    assert list(tmp_path.iterdir()) == []


def test_unreachable_server_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    from walfast.cluster import free_port

    r = bench("-d", f"host=127.0.0.1 port={free_port()} user=nobody password=sekrit "
              "connect_timeout=5", "--workdir", str(tmp_path), timeout=60)
    assert r.returncode == 1
    assert r.stderr.startswith("walfast bench: error: cannot connect to "), r.stderr
    assert "sekrit" not in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- #
# the throwaway primary
# --------------------------------------------------------------------------- #

@pytest.mark.slow
def test_tiny_run_on_the_throwaway_primary(pg_bindir: Path, tmp_path: Path) -> None:
    results = tmp_path / "out" / "bench.json"
    env = dict(os.environ, PG_BINDIR=str(pg_bindir), WALFAST_BENCH_ALLOW_TMPFS="1")
    r = bench("--size", "32MB", "--rounds", "1", "--modes", "durable", "--workdir", str(tmp_path),
              "--sync-standby", "--pgbench-seconds", "2", "--pgbench-scale", "1",
              "--pgbench-clients", "2", "--pgbench-threads", "1", "--json", str(results),
              env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads(results.read_text())
    meta = doc["meta"]
    rng = meta["range"]
    nbytes = rng["bytes"]
    assert meta["command"] == "walfast bench" and meta["source"]["kind"] == "embedded"
    assert nbytes >= 32 * 10**6 and nbytes % rng["segment_size"] == 0
    assert meta["machine"]["walfast_bytecode_cached"] is True

    runs = {(x["mode"], x["receiver"]): x for x in doc["runs"]}
    assert set(runs) == {("durable", "walfast"), ("durable", "pg_receivewal"),
                         ("discard", "discard")}
    for x in runs.values():
        assert x["status"] == "ok", x
        assert x["start_line"] == f"starting log streaming at {rng['start']} (timeline 1)"
        # measured, and consistent with each other
        assert x["wall_s"] > 0 and x["mb_s"] == pytest.approx(nbytes / 1e6 / x["wall_s"],
                                                              rel=0.01)
        assert 0 < x["start_line_s"] < x["wall_s"]
        assert x["recv_cpu_s"] > 0
        # (recv_cpu_s is rounded to the millisecond, the rate is not)
        assert x["recv_cpu_s_per_gb"] == pytest.approx(x["recv_cpu_s"] / (nbytes / 1e9),
                                                       abs=0.0006 / (nbytes / 1e9) + 0.001)
        # the walsender is in this machine's /proc: its CPU was read
        assert x["walsender_pid"] and x["walsender_cpu_s"] is not None
        assert x["walsender_cpu_s_per_gb"] == pytest.approx(
            x["walsender_cpu_s"] / (nbytes / 1e9), abs=0.001)
        assert x["ssl"] is False
    for rc in ("walfast", "pg_receivewal"):
        x = runs[("durable", rc)]
        assert x["output_bytes"] == nbytes        # the range's segments, checked
        assert x["write_bytes"] >= nbytes
    assert runs[("discard", "discard")]["output_bytes"] == 0

    summary = {(s["mode"], s["receiver"]): s for s in doc["summary"]}
    wf, pg = summary[("durable", "walfast")], summary[("durable", "pg_receivewal")]
    assert wf["ratio_median"] == pytest.approx(wf["mb_s_median"] / pg["mb_s_median"], abs=0.01)
    assert wf["of_ceiling"] > 0 and pg["of_ceiling"] > 0
    assert {x["limit"] for x in doc["limits"]} == {"disk", "memcpy"}
    assert all(x["mb_s"] > 0 for x in doc["limits"])

    sync = doc["syncbench"]
    assert sync["settings"]["synchronous_commit"] == ["on", "remote_write"]
    pairs = {(x["standby"], x["synchronous_commit"]): x for x in sync["runs"]}
    assert set(pairs) == {(s, level) for s in ("none", "walfast", "pg_receivewal", "discard")
                          for level in ("on", "remote_write")}
    for (standby, _), x in pairs.items():
        assert x["status"] == "ok", x
        assert x["tps"] > 0 and x["transactions"] > 0 and x["latency_ms"] > 0
        if standby != "none":
            assert x["recv_cpu_us_per_tx"] > 0 and x["walsender_cpu_us_per_tx"] is not None
    rows = {(x["synchronous_commit"], x["standby"]): x for x in doc["sync_summary"]}
    assert rows[("remote_write", "walfast")]["tps_vs_pg_receivewal"] > 0

    # the table, on the terminal
    out = r.stdout
    assert "× pg_receivewal" in out and "walsender CPU s/GB" in out
    for rc in ("walfast", "pg_receivewal", "discard"):
        assert re.search(rf"^tcp\s+(durable|discard)\s+{rc}\s+1/1\s+[\d,]+", out, re.M), out
    assert re.search(r"^remote_write\s+walfast\s+1/1\s+[\d,]+", out, re.M), out
    assert f"walfast bench: results: {results}" in out
    # nothing left behind in the work directory (every run counted)
    assert [p for p in tmp_path.iterdir() if p.name != "out"] == []


# --------------------------------------------------------------------------- #
# a real server: -d
# --------------------------------------------------------------------------- #

def test_dsn_with_an_existing_slot_writes_nothing(pg_cluster: Cluster, tmp_path: Path) -> None:
    """The WAL an existing slot keeps, received by every receiver; the
    server gets no WAL from the benchmark and keeps no slot of it; the
    slot given is never moved."""
    pg_cluster.execute("VACUUM")            # see _housekeeping
    pg_cluster.execute("SELECT pg_create_physical_replication_slot('bench_test_src', true)")
    (src_before,), = pg_cluster.execute(
        "SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'bench_test_src'")
    pg_cluster.execute(_EMIT, (6,))
    pg_cluster.execute("SELECT pg_switch_wal()")
    before = pg_cluster.current_wal_lsn()
    results = tmp_path / "bench.json"
    r = bench("-d", pg_cluster.conninfo() + " password=sekrit", "-S", "bench_test_src",
              "--size", "4MB", "--rounds", "1", "--modes", "durable,no-sync", "--no-limits",
              "--workdir", str(tmp_path), "--json", str(results), cwd=tmp_path)
    after = pg_cluster.current_wal_lsn()
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert set(wal_records(pg_cluster, before, after)) <= {"Standby/RUNNING_XACTS", *_AUTOVACUUM}
    assert bench_slots(pg_cluster) == []
    assert pg_cluster.execute("SELECT restart_lsn FROM pg_replication_slots "
                              "WHERE slot_name = 'bench_test_src'") == [(src_before,)]

    doc = json.loads(results.read_text())
    source = doc["meta"]["source"]
    assert source["kind"] == "external" and source["slot"] == "bench_test_src"
    assert source["transport"] == "tcp" and source["local"] is True
    assert "sekrit" not in results.read_text() and "sekrit" not in r.stdout
    rng = doc["meta"]["range"]
    assert rng["segment_size"] == 2**20 and rng["bytes"] == 4 * 2**20
    assert doc["limits"] == []
    runs = {(x["mode"], x["receiver"]): x for x in doc["runs"]}
    assert set(runs) == {(m, rc) for m in ("durable", "no-sync")
                         for rc in ("walfast", "pg_receivewal")} | {("discard", "discard")}
    for x in runs.values():
        assert x["status"] == "ok", x
        assert x["transport"] == "tcp"
        assert x["start_line"] == f"starting log streaming at {rng['start']} (timeline 1)"
        assert x["mb_s"] > 0 and x["recv_cpu_s"] > 0
        assert "sekrit" not in " ".join(x["argv"])
        if x["receiver"] != "discard":
            assert x["output_bytes"] == rng["bytes"]
    # the same bytes as pg_wal's (the benchmark itself compared the runs
    # with each other and checked every page header)
    assert doc["meta"]["compressed_fraction"]["lz4"] > 0
    assert "server: PostgreSQL" in r.stdout and "(tcp; the range pinned by a copy of slot" \
        in r.stdout


@contextlib.contextmanager
def bench_running(cwd: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """``walfast bench ARGS`` running, its output piped; killed if it is
    still there at the end."""
    proc = subprocess.Popen([sys.executable, "-m", "walfast.cli", "bench", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def read_until(proc: subprocess.Popen[str], stop: Callable[[str], bool]) -> list[str]:
    """The lines *proc* printed, up to the first for which *stop* is true
    (or its end)."""
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if stop(line):
            break
    return seen


def test_dsn_waits_for_the_servers_own_traffic(pg_cluster: Cluster, tmp_path: Path) -> None:
    """Without -S: a new temporary slot pins WAL from the server's position
    (a physical slot's starts at the last checkpoint's redo point) and the
    benchmark waits for the server to write --size past it."""
    pg_cluster.execute("VACUUM")            # see _housekeeping
    before = pg_cluster.current_wal_lsn()
    pg_cluster.execute("CHECKPOINT")
    with bench_running(tmp_path, "-d", pg_cluster.conninfo(), "--size", "3MB", "--rounds", "1",
                       "--modes", "durable", "--receivers", "walfast,discard", "--no-limits",
                       "--workdir", str(tmp_path), "--max-wait", "120") as proc:
        waiting = "waiting for the server's own traffic"
        seen = read_until(proc, lambda line: waiting in line)
        if not seen or waiting not in seen[-1]:
            pytest.fail("".join(seen))
        assert bench_slots(pg_cluster) == [f"walfast_bench_{proc.pid}_base"]
        pg_cluster.execute(_EMIT, (4,))          # the server's "own" traffic
        pg_cluster.execute("SELECT pg_switch_wal()")
        out, err = proc.communicate(timeout=300)
    after = pg_cluster.current_wal_lsn()
    assert proc.returncode == 0, "".join(seen) + out + err
    assert set(wal_records(pg_cluster, before, after)) <= _NOT_THE_BENCHMARKS | _AUTOVACUUM
    assert bench_slots(pg_cluster) == []
    assert re.search(r"^tcp\s+durable\s+walfast\s+1/1\s+[\d,]+", out, re.M), out


def test_dsn_interrupted_drops_every_slot(pg_cluster: Cluster, tmp_path: Path) -> None:
    """Ctrl-C while receivers run: they are stopped, the run slot and the
    base slot dropped, the work directory removed; exit status 130."""
    pg_cluster.execute("SELECT pg_create_physical_replication_slot('bench_test_src', true)")
    pg_cluster.execute(_EMIT, (6,))
    pg_cluster.execute("SELECT pg_switch_wal()")
    with bench_running(tmp_path, "-d", pg_cluster.conninfo(), "-S", "bench_test_src", "--size",
                       "4MB", "--rounds", "50", "--modes", "durable,no-sync", "--no-limits",
                       "--workdir", str(tmp_path)) as proc:
        seen = read_until(proc, lambda line: line.startswith("  round 2 "))
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(seen) + out + err
    assert "walfast bench: interrupted" in err and "Traceback" not in err
    assert bench_slots(pg_cluster) == []
    deadline = time.monotonic() + 10       # a walsender's exit follows its slot's release
    while pg_cluster.execute("SELECT count(*) FROM pg_stat_replication") != [(0,)]:
        assert time.monotonic() < deadline, "a walsender of the benchmark is still there"
        time.sleep(0.05)
    assert list(tmp_path.iterdir()) == []
