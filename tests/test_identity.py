"""Directory identity (walfast/identity.py): a directory records which
cluster's WAL it holds, and walfast refuses to mix in another cluster's.

The unit tests use synthetic WAL (tests/wal_synth.py); the integration test
runs ``walfast receive`` against two real clusters with different system
identifiers and segment sizes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers.receivers import holds_wal, small_commit, wait_streaming, wait_until, wal_files
from helpers.wal_synth import SYSID, make_wal
from walfast import ServerMismatchError
from walfast.waldir.identity import DirectoryIdentity, check_and_record, read_identity
from walfast.waldir.layout import IDENTITY, PROGRESS, STATE_DIR, state_file

MB = 1 << 20
P = 8192
SERVER = DirectoryIdentity(SYSID, MB, P)


def _snapshot(d: Path) -> dict[str, bytes]:
    """Every file's content (walfast's state directory included), but the
    progress state: each run (even a refused one) takes the directory's
    lock and state file first, so that two receivers never check and write
    one directory at once."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*"))
            if p.is_file() and p != state_file(d, PROGRESS)}


# --------------------------------------------------------------------------- #
# unit
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("sync", [True, False])
def test_first_run_records_identity(tmp_path, sync):
    check_and_record(tmp_path, SERVER, sync=sync, mode=0o640)
    assert os.listdir(tmp_path) == [STATE_DIR]
    assert os.listdir(tmp_path / STATE_DIR) == [IDENTITY]
    assert (tmp_path / STATE_DIR).stat().st_mode & 0o777 == 0o750
    path = state_file(tmp_path, IDENTITY)
    assert path.stat().st_mode & 0o777 == 0o640
    data = json.loads(path.read_text())
    assert data["system_identifier"] == str(SYSID)
    assert (data["wal_segment_size"], data["wal_block_size"]) == (MB, P)
    assert data["walfast_version"] and data["created_at"]
    assert read_identity(tmp_path) == SERVER
    # The same server again: accepted, the record is not rewritten.
    before = path.read_bytes()
    check_and_record(tmp_path, SERVER)
    assert path.read_bytes() == before


@pytest.mark.parametrize("other, words", [
    (DirectoryIdentity(SYSID + 1, MB, P),
     [f"system identifier {SYSID},", f"system identifier {SYSID + 1}."]),
    (DirectoryIdentity(SYSID, 16 * MB, P), ["WAL segment size 1 MB,", "WAL segment size 16 MB."]),
    (DirectoryIdentity(SYSID, MB, 16384), ["WAL block size 8 kB,", "WAL block size 16 kB."]),
])
def test_recorded_identity_mismatch_refused(tmp_path, other, words):
    check_and_record(tmp_path, SERVER)
    before = _snapshot(tmp_path)
    with pytest.raises(ServerMismatchError) as ei:
        check_and_record(tmp_path, other)
    msg = str(ei.value)
    assert f'"{state_file(tmp_path, IDENTITY)}" records' in msg
    for w in words:
        assert w in msg
    assert "use an empty directory for this server" in msg
    assert _snapshot(tmp_path) == before


def test_damaged_identity_file_is_not_overwritten(tmp_path):
    (tmp_path / STATE_DIR).mkdir()
    state_file(tmp_path, IDENTITY).write_text("{not json")
    with pytest.raises(ServerMismatchError, match="is damaged or was written by another program"):
        check_and_record(tmp_path, SERVER)
    assert state_file(tmp_path, IDENTITY).read_text() == "{not json"


def test_directory_without_identity_checked_through_its_wal(tmp_path):
    """A pg_receivewal directory: the newest segment's long page header
    decides; a .partial whose first page was never written is passed over."""
    (tmp_path / "000000010000000000000003").write_bytes(
        make_wal(3 * MB, MB, segment_size=MB, sysid=SYSID + 7))
    (tmp_path / "000000010000000000000004.partial").write_bytes(bytes(MB))
    before = _snapshot(tmp_path)
    with pytest.raises(ServerMismatchError) as ei:
        check_and_record(tmp_path, SERVER)
    msg = str(ei.value)
    assert f'"{tmp_path / "000000010000000000000003"}" (its first page header) has' in msg
    assert f"system identifier {SYSID + 7}, but the server has system identifier {SYSID}" in msg
    assert _snapshot(tmp_path) == before, "something was written"

    # The same directory, the right server: accepted and recorded.
    check_and_record(tmp_path, DirectoryIdentity(SYSID + 7, MB, P))
    assert read_identity(tmp_path) == DirectoryIdentity(SYSID + 7, MB, P)


def test_segment_size_seen_in_wal(tmp_path):
    (tmp_path / "000000010000000000000001.partial").write_bytes(
        make_wal(16 * MB, 2 * P, segment_size=16 * MB) + bytes(MB - 2 * P))
    with pytest.raises(ServerMismatchError, match="WAL segment size 16 MB, but the server has "
                                                  "WAL segment size 1 MB"):
        check_and_record(tmp_path, SERVER)
    assert not state_file(tmp_path, IDENTITY).exists()


# --------------------------------------------------------------------------- #
# real clusters
# --------------------------------------------------------------------------- #

def test_other_clusters_directory_refused(shared_cluster, procs, tmp_path):
    a = shared_cluster(wal_segsize_mb=1, autovacuum=False)
    b = shared_cluster(wal_segsize_mb=2, autovacuum=False)
    sysid_a, sysid_b = a.system_identifier(), b.system_identifier()
    assert sysid_a != sysid_b
    seg = a.wal_segment_size

    # A directory walfast filled from cluster a.
    d = tmp_path / "a"
    d.mkdir()
    wf = procs.walfast("-D", str(d), "-d", a.conninfo(), "-v")
    wait_streaming(a, ["walfast"], [wf])
    start, _ = wf.start_position()
    a.generate_wal(seg)
    end = small_commit(a)
    wait_until(lambda: holds_wal(d, a, start, end), "walfast to receive a's WAL", 60, [wf])
    assert wf.interrupt() == 0
    assert read_identity(d) == DirectoryIdentity(sysid_a, seg, 8192)

    before = _snapshot(d)
    wrong = procs.walfast("-D", str(d), "-d", b.conninfo(), "-v", name="walfast-b")
    assert wrong.wait(30) == 1
    err = wrong.stderr()
    assert "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith(f'walfast: error: directory "{d}" holds WAL that does not fit this '
                          f'server: "{state_file(d, IDENTITY)}" records system identifier {sysid_a}, '
                          f"WAL segment size 1 MB, but the server has system identifier "
                          f"{sysid_b}, WAL segment size 2 MB.")
    assert _snapshot(d) == before, "the directory was changed"

    # A directory with cluster a's WAL but no identity file (as
    # pg_receivewal leaves it): b is refused by the segment's page header.
    d2 = tmp_path / "a-plain"
    d2.mkdir()
    for name in wal_files(d):
        (d2 / name).write_bytes((d / name).read_bytes())
    before = _snapshot(d2)
    wrong = procs.walfast("-D", str(d2), "-d", b.conninfo(), name="walfast-b2")
    assert wrong.wait(30) == 1
    err = wrong.stderr()
    assert "(its first page header) has system identifier" in err
    assert f"{sysid_a}, WAL segment size 1 MB, but the server has" in err
    assert _snapshot(d2) == before
    # Cluster a's walfast takes it over and records it, --no-sync too.
    ok = procs.walfast("-D", str(d2), "-d", a.conninfo(), "--no-sync", "-v", name="walfast-a2")
    wait_streaming(a, ["walfast"], [ok])
    assert ok.interrupt() == 0
    assert read_identity(d2) == DirectoryIdentity(sysid_a, seg, 8192)
