"""walfast's own files live in ``.walfast/`` (walfast.waldir.layout), never
among the WAL: names, modes, migration of the files earlier versions left
next to the WAL, and the progress reader finding either."""

from __future__ import annotations

import fcntl
import os

import pytest

from helpers.wal_synth import SYSID
from walfast.monitor import progress
from walfast.waldir import layout
from walfast.waldir.identity import DirectoryIdentity, check_and_record, read_identity
from walfast.waldir.resume import current_boot_id, note_boot

MB = 1 << 20
SERVER = DirectoryIdentity(SYSID, MB, 8192)


@pytest.mark.parametrize("file_mode, dir_mode", [(0o600, 0o700), (0o640, 0o750)])
def test_state_files_are_in_the_state_directory(tmp_path, file_mode, dir_mode):
    """Everything a receiver writes for itself (identity, boot record,
    progress state) lands in .walfast/, with the WAL files' mode and its
    directory's; the WAL directory gets nothing else."""
    check_and_record(tmp_path, SERVER, mode=file_mode)
    note_boot(tmp_path, MB, mode=file_mode)
    state = progress.create_state(tmp_path, file_mode=file_mode)
    try:
        assert os.listdir(tmp_path) == [layout.STATE_DIR]
        # (the archive's files come with --archive: tests/test_archive.py)
        expected = set(layout.STATE_FILES) - {layout.ARCHIVED, layout.ARCHIVE_STATUS}
        if current_boot_id() is None:
            expected.discard(layout.BOOT)
        assert set(os.listdir(tmp_path / layout.STATE_DIR)) == expected
        assert (tmp_path / layout.STATE_DIR).stat().st_mode & 0o777 == dir_mode
        for name in expected:
            assert layout.state_file(tmp_path, name).stat().st_mode & 0o777 == file_mode, name
    finally:
        state.close()


def test_legacy_files_are_moved(tmp_path):
    """A directory an earlier walfast wrote: its identity and boot record are
    moved into .walfast/ unchanged, its old progress file removed."""
    check_and_record(tmp_path, SERVER)
    ident = layout.state_file(tmp_path, layout.IDENTITY).read_bytes()
    layout.state_file(tmp_path, layout.IDENTITY).rename(tmp_path / "walfast.identity")
    (tmp_path / "walfast.boot").write_text('{"boot_id": "x", "untrusted_through_segno": 3}\n')
    (tmp_path / "walfast.progress").write_bytes(bytes(664))
    (tmp_path / "000000010000000000000003").write_bytes(b"")
    os.rmdir(tmp_path / layout.STATE_DIR)

    moved = layout.migrate_legacy_files(tmp_path)
    assert sorted(moved) == ["walfast.boot", "walfast.identity", "walfast.progress"]
    assert sorted(os.listdir(tmp_path)) == [layout.STATE_DIR, "000000010000000000000003"]
    assert sorted(os.listdir(tmp_path / layout.STATE_DIR)) == [layout.BOOT, layout.IDENTITY]
    assert layout.state_file(tmp_path, layout.IDENTITY).read_bytes() == ident
    assert read_identity(tmp_path) == SERVER
    assert layout.migrate_legacy_files(tmp_path) == []          # once only


def test_newer_record_wins_over_a_legacy_one(tmp_path):
    check_and_record(tmp_path, SERVER)
    (tmp_path / "walfast.identity").write_text("older")
    layout.migrate_legacy_files(tmp_path)
    assert os.listdir(tmp_path) == [layout.STATE_DIR]
    assert read_identity(tmp_path) == SERVER


def test_running_earlier_receiver_is_not_disturbed(tmp_path):
    """An earlier walfast still running holds its walfast.progress lock:
    nothing is moved, and the error says why."""
    (tmp_path / "walfast.identity").write_text("{}")
    fd = os.open(tmp_path / "walfast.progress", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(BlockingIOError, match="an earlier walfast receiver is writing"):
            layout.migrate_legacy_files(tmp_path)
        assert sorted(os.listdir(tmp_path)) == ["walfast.identity", "walfast.progress"]
    finally:
        os.close(fd)


def test_progress_reader_finds_an_earlier_receivers_file(tmp_path):
    """walfast status on a directory an earlier walfast still writes into."""
    state = progress.create_state(tmp_path)
    try:
        state.update(segment_size=MB)
        layout.state_file(tmp_path, layout.PROGRESS).rename(tmp_path / "walfast.progress")
        assert progress.state_path(tmp_path) == tmp_path / "walfast.progress"
        assert progress.read_progress(tmp_path, check_running=False).segment_size == MB
    finally:
        state.close()
