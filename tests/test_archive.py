"""``walfast receive --archive s3://...``: the archive beyond one machine.

Against a real S3 API server on loopback (moto's server mode, in its own
process, tests/helpers/s3server.py) and a real primary.  The bucket is
versioned, so "uploaded exactly once" is checked by the store itself: every
PUT of a key makes a version.  A store that is down is a loopback proxy in
front of it that refuses every connection (helpers.faultproxy).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from helpers.faultproxy import FaultProxy
from helpers.receivers import (
    clean_env, completed_files, make_dirs, run_cli, wait_streaming, wait_until, walfast_argv,
)
from helpers.s3server import S3Server
from walfast.lsn import format_lsn, parse_lsn, parse_wal_file_name
from walfast.monitor.metrics import ProgressCollector
from walfast.waldir import layout

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with S3Server(log=tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


_buckets = iter(range(1, 1000))


@pytest.fixture
def bucket(s3):
    """A new versioned bucket."""
    name = f"walfast-test-{next(_buckets)}"
    c = s3.client()
    c.create_bucket(Bucket=name)
    c.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


def versions(s3, bucket: str, prefix: str) -> dict[str, int]:
    """How many versions each key under *prefix* has (PUTs made)."""
    out: dict[str, int] = {}
    c = s3.client()
    for page in c.get_paginator("list_object_versions").paginate(Bucket=bucket,
                                                                  Prefix=prefix + "/"):
        for v in page.get("Versions", ()):
            name = v["Key"][len(prefix) + 1:]
            out[name] = out.get(name, 0) + 1
    return out


def start_archiving(procs, s3, directory: Path, cluster, url: str, *args: str,
                    endpoint: str | None = None, name: str = "walfast"):
    env = {**clean_env(), **s3.env}
    if endpoint is not None:
        env["AWS_ENDPOINT_URL"] = endpoint
    return procs.program(name, walfast_argv("-D", str(directory), "-d", cluster.conninfo(),
                                            "--archive", url, "-v", *args), env=env)


def make_wal(cluster, segments: int) -> int:
    """Write about *segments* segments of WAL, end with a switch; return the
    position after it."""
    segsize = cluster.wal_segment_size
    with cluster.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS archive_fill (id bigint, payload text)")
        rows = max(1, segsize * segments // 1100)
        conn.execute("INSERT INTO archive_fill SELECT g, repeat('x', 1000) "
                     "FROM generate_series(1, %s) g", (rows,))
        conn.execute("SELECT pg_switch_wal()")
        conn.execute("INSERT INTO archive_fill VALUES (0, 'after the switch')")
        return parse_lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])


def slot_restart_lsn(cluster, slot: str) -> int:
    (row,) = cluster.execute("SELECT restart_lsn::text FROM pg_replication_slots "
                             "WHERE slot_name = %s", (slot,))
    return parse_lsn(row[0]) if row[0] else 0


def archive_status(directory: Path) -> dict:
    try:
        return json.loads(layout.state_file(directory, layout.ARCHIVE_STATUS).read_text())
    except (FileNotFoundError, ValueError):
        return {}


def test_completed_files_reach_the_bucket_byte_identical_once(pg_cluster, procs, s3, bucket,
                                                              tmp_path):
    """Every completed segment, as the object PREFIX/<name>, byte-identical
    to the local file and to the server's pg_wal; each PUT once; the record
    in .walfast/archived lists them; the directory holds only WAL."""
    cluster = pg_cluster
    cluster.execute("SELECT pg_create_physical_replication_slot('arch', true)")
    (d,) = make_dirs(tmp_path, "wal")
    end = make_wal(cluster, 6)
    wf = start_archiving(procs, s3, d, cluster, f"s3://{bucket}/cluster/wal", "-S", "arch",
                         "--endpos", format_lsn(end))
    assert wf.wait(120) == 0, wf.stderr()
    local = completed_files(d)
    assert len(local) >= 5
    objects = s3.objects(bucket, "cluster/wal")
    assert sorted(objects) == local, wf.stderr()
    for name in local:
        assert objects[name] == (d / name).read_bytes() == (cluster.pg_wal / name).read_bytes()
    assert versions(s3, bucket, "cluster/wal") == {n: 1 for n in local}
    recorded = layout.state_file(d, layout.ARCHIVED).read_text().split()
    assert sorted(recorded) == local
    assert all(parse_wal_file_name(n) for n in os.listdir(d) if n != layout.STATE_DIR)
    for state_file in (layout.ARCHIVED, layout.ARCHIVE_STATUS):
        assert layout.state_file(d, state_file).stat().st_mode & 0o777 == 0o600
    assert "archiving to s3://" in wf.stderr()


def test_the_slot_never_passes_the_bucket_while_the_store_is_down(pg_cluster, procs, s3, bucket,
                                                                  tmp_path, record_property):
    """The store goes away (every connection refused): receiving goes on,
    a warning names the failure, status shows the backlog, and the slot's
    restart_lsn stays at or below the first segment the bucket lacks.  When
    the store is back the backlog drains and the slot moves on."""
    cluster = pg_cluster
    cluster.execute("SELECT pg_create_physical_replication_slot('gate', true)")
    segsize = cluster.wal_segment_size
    (d,) = make_dirs(tmp_path, "wal")
    url = f"s3://{bucket}/gated"
    with FaultProxy(s3.port) as proxy:
        wf = start_archiving(procs, s3, d, cluster, url, "-S", "gate", "-s", "1",
                             endpoint=f"http://127.0.0.1:{proxy.port}")
        wait_streaming(cluster, ["walfast"], [wf])
        start, _ = wf.start_position()
        make_wal(cluster, 2)
        wait_until(lambda: versions(s3, bucket, "gated"), "a first upload", 60, [wf])
        proxy.refuse()
        t_down = time.monotonic()
        before = slot_restart_lsn(cluster, "gate")
        end = make_wal(cluster, 5)
        wait_until(lambda: len(completed_files(d)) >= 6, "segments received locally", 60, [wf])
        wait_until(lambda: archive_status(d).get("failures", 0) > 0, "a failure in the status",
                   60, [wf])
        held = set(versions(s3, bucket, "gated"))
        missing = [n for n in completed_files(d) if n not in held]
        assert missing, "every segment reached the bucket although it was down"
        first_missing = min(parse_wal_file_name(n).position(segsize)[1] for n in missing)
        time.sleep(3)      # several status intervals (-s 1)
        restart = slot_restart_lsn(cluster, "gate")
        assert restart <= first_missing * segsize, (
            f"slot at {format_lsn(restart)} passed {format_lsn(first_missing * segsize)}, the "
            f"first segment not in the bucket")
        assert restart >= before
        status = archive_status(d)
        assert status["pending_segments"] >= len(missing) - 1, status
        assert status["pending_bytes"] > 0 and status["last_error"], status
        assert "retrying in" in wf.stderr() and url in wf.stderr()
        shown = run_cli([sys.executable, "-m", "walfast.cli", "status", str(d)])
        assert shown.returncode == 0, shown.stderr
        (line,) = [x for x in shown.stdout.splitlines() if x.strip().startswith("archive")]
        assert "files waiting" in line and "failing since" in line, line
        metrics = {m.name: m.samples[0].value for m in ProgressCollector(d).collect()}
        assert metrics["walfast_wal_receiver_archive_pending_segments"] >= len(missing) - 1
        assert metrics["walfast_wal_receiver_archive_failing"] == 1
        assert wf.alive()
        # The store is back: the backlog drains, the slot moves on.
        proxy.forward()
        t_up = time.monotonic()
        local = completed_files(d)
        wait_until(lambda: set(local) <= set(versions(s3, bucket, "gated")),
                   "the backlog to drain", 120, [wf])
        drained = time.monotonic() - t_up
        last_end = (max(parse_wal_file_name(n).position(segsize)[1] for n in local) + 1) * segsize
        wait_until(lambda: slot_restart_lsn(cluster, "gate") >= last_end,
                   "the slot to move past the drained backlog", 30, [wf])
        assert wf.interrupt() == 0
    objects = s3.objects(bucket, "gated")
    for name in local:
        assert objects[name] == (d / name).read_bytes()
    record_property("recovery", f"store down {t_up - t_down:.1f} s; backlog of {len(missing)} segments drained in "
          f"{drained:.1f} s; end {format_lsn(end)}")


def test_sigkill_during_uploads_loses_and_repeats_nothing(pg_cluster, procs, s3, bucket,
                                                          tmp_path, record_property):
    """walfast is killed (SIGKILL) again and again while uploads are in
    flight, and restarted: in the end every completed segment is in the
    bucket, byte-identical, and was PUT exactly once (the bucket's versions
    say so): an upload a kill kept from being recorded is found in the store
    on the next start instead of being made again."""
    cluster = pg_cluster
    cluster.execute("SELECT pg_create_physical_replication_slot('killed', true)")
    (d,) = make_dirs(tmp_path, "wal")
    url = f"s3://{bucket}/killed"
    kills = 0
    for round_ in range(4):
        make_wal(cluster, 4)
        wf = start_archiving(procs, s3, d, cluster, url, "-S", "killed", name=f"walfast-{round_}")
        wait_until(lambda: "archiving to" in wf.stderr(), "the uploader to start", 60, [wf])
        time.sleep(0.2 + 0.3 * round_)
        wf.popen.send_signal(signal.SIGKILL)
        wf.wait()
        kills += 1
    end = make_wal(cluster, 1)
    wf = start_archiving(procs, s3, d, cluster, url, "-S", "killed", "--endpos", format_lsn(end),
                         name="walfast-last")
    assert wf.wait(120) == 0, wf.stderr()
    local = completed_files(d)
    counts = versions(s3, bucket, "killed")
    assert sorted(counts) == local
    assert counts == {n: 1 for n in local}, {n: c for n, c in counts.items() if c != 1}
    objects = s3.objects(bucket, "killed")
    for name in local:
        assert objects[name] == (cluster.pg_wal / name).read_bytes()
    found = sum(p.stderr().count("is already in") for p in procs.started)
    record_property("sigkill", f"{kills} kills, {len(local)} segments, each PUT once; "
                               f"{found} uploads a kill kept from being recorded were found "
                               f"in the bucket instead of made again")


def test_open_segment_is_uploaded_at_the_interval(pg_cluster, procs, s3, bucket, tmp_path):
    """--archive-partial-interval: the open segment goes to the bucket as
    NAME.partial, again as it grows, covering what was flushed; once the
    segment is completed its object replaces the .partial one."""
    cluster = pg_cluster
    (d,) = make_dirs(tmp_path, "wal")
    wf = start_archiving(procs, s3, d, cluster, f"s3://{bucket}/open",
                         "--archive-partial-interval", "1")
    wait_streaming(cluster, ["walfast"], [wf])
    with cluster.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS partial_fill (id int, t text)")
        for k in range(3):
            conn.execute("INSERT INTO partial_fill VALUES (%s, repeat('p', 500))", (k,))
            lsn = parse_lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
    name = next(n for n in os.listdir(d) if n.endswith(".partial"))
    segsize = cluster.wal_segment_size
    offset = lsn % segsize

    def uploaded_up_to_lsn():
        objects = s3.objects(bucket, "open")
        body = objects.get(name)
        return body is not None and body[:offset] == (cluster.pg_wal / name[:24]).read_bytes()[
            :offset] and body

    body = wait_until(uploaded_up_to_lsn, f"{name} in the bucket up to {format_lsn(lsn)}", 30,
                      [wf])
    assert len(body) == segsize
    with cluster.connect() as conn:
        conn.execute("SELECT pg_switch_wal()")
        conn.execute("INSERT INTO partial_fill VALUES (99, 'next')")
    complete = name[:24]

    def replaced():
        objects = s3.objects(bucket, "open")
        return complete in objects and name not in objects and objects
    objects = wait_until(replaced, f"{complete} to replace {name}", 30, [wf])
    assert objects[complete] == (cluster.pg_wal / complete).read_bytes()
    assert wf.interrupt() == 0


def test_a_bucket_that_does_not_exist_is_refused_before_streaming(pg_cluster, procs, s3,
                                                                   tmp_path):
    (d,) = make_dirs(tmp_path, "wal")
    wf = start_archiving(procs, s3, d, pg_cluster, "s3://no-such-bucket-here/wal")
    assert wf.wait(60) == 1
    err = wf.stderr()
    assert "NoSuchBucket" in err and "s3://no-such-bucket-here/wal" in err, err
    assert "Traceback" not in err
    assert "starting log streaming" not in err


def test_compressed_files_and_history_files_as_written(pg_cluster, standby_factory, procs, s3,
                                                       bucket, tmp_path):
    """With -Z the objects are the compressed files exactly as written
    (NAME.lz4); a timeline switch ships the history file and the old
    timeline's last .partial as it was left; everything goes as the local
    directory holds it; the open segment's snapshot is a prefix of its
    compressed .partial."""
    primary = pg_cluster
    standby = standby_factory(primary)
    (d,) = make_dirs(tmp_path, "wal")
    wf = start_archiving(procs, s3, d, standby, f"s3://{bucket}/z", "-Z", "lz4",
                         "--archive-partial-interval", "1")
    wait_streaming(standby, ["walfast"], [wf])
    make_wal(primary, 2)
    assert standby.promote() == 2
    make_wal(standby, 2)
    wait_until(lambda: "00000002.history" in set(versions(s3, bucket, "z"))
               and any(n.startswith("00000002") and n.endswith(".lz4")
                       for n in versions(s3, bucket, "z")),
               "the history file and a timeline 2 segment in the bucket", 60, [wf])
    open_partial = [n for n in os.listdir(d) if n.startswith("00000002")
                    and n.endswith(".lz4.partial")]
    # Timeline 1 ended mid-segment: its last file stays .partial for good.
    ended = [n for n in os.listdir(d) if n.startswith("00000001") and n.endswith(".lz4.partial")]
    assert ended, sorted(os.listdir(d))
    wait_until(lambda: set(open_partial + ended) <= set(versions(s3, bucket, "z")),
               "the open segment's snapshot and timeline 1's last .partial", 30, [wf])
    assert wf.interrupt() == 0
    local = sorted(n for n in os.listdir(d) if n.endswith((".lz4", ".history")))
    objects = s3.objects(bucket, "z")
    snapshots = {n: b for n, b in objects.items() if n.endswith(".partial")}
    assert set(snapshots) == set(open_partial + ended), sorted(objects)
    for name, body in snapshots.items():
        assert body and (d / name).read_bytes().startswith(body), name
    for name in ended:      # shipped as the timeline left it, not an older snapshot
        assert snapshots[name] == (d / name).read_bytes(), name
    objects = {n: b for n, b in objects.items() if n not in snapshots}
    assert all(n.endswith((".lz4", ".history")) for n in objects), sorted(objects)
    assert set(objects) <= set(local)
    for name in objects:
        assert objects[name] == (d / name).read_bytes(), name
    assert objects["00000002.history"] == (standby.pg_wal / "00000002.history").read_bytes()
