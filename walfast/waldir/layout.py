"""Where walfast keeps its own files: ``.walfast/`` inside the WAL directory.

The ``-D`` directory belongs to the tools that read it (pg_receivewal,
Barman's streaming archiver, a ``restore_command``): it holds only what
pg_receivewal would write there, segment files and history files.  walfast's
own state lives in one hidden subdirectory, which pg_receivewal ignores (its
scan only looks at WAL file names) and Barman skips (it lists the directory
with ``glob("*")``, which leaves out dot-entries):

=================  ==========================================================
``.walfast/``      mode 0700 (0750 when the server's files are group-readable)
``identity``       whose WAL the directory holds (:mod:`.identity`)
``boot``           which files may hold bytes of an earlier boot (:mod:`.resume`)
``progress``       the shared progress state (:mod:`walfast.monitor.progress`)
``archived``       the files the archive holds, one name per line
                   (:mod:`walfast.archive.uploader`, with ``--archive``)
``archive-status`` the uploads' lag and failures, JSON, for ``walfast status``
=================  ==========================================================

Files in it get the same mode as the WAL files (0600, or 0640).  While the
compressing worker rewrites a segment over an older decodable ``.partial``,
its new stream is written here too (``NAME.gz.partial.tmp``,
:mod:`.compressor`).  Earlier walfast builds kept the state files next to
the WAL as ``walfast.identity``, ``walfast.boot`` and ``walfast.progress``;
:func:`migrate_legacy_files` moves them on the first start.

This module only names and creates the place; the files' contents belong
to the modules named above.  It is imported by readers such as ``walfast
status``, so it stays free of heavy imports.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Union

__all__ = [
    "ARCHIVED", "ARCHIVE_STATUS", "BOOT", "IDENTITY", "LEGACY_FILES", "PROGRESS", "STATE_DIR",
    "STATE_FILES",
    "dir_mode_for", "ensure_state_dir", "migrate_legacy_files", "state_dir", "state_file",
]

StrPath = Union[str, "os.PathLike[str]"]

#: The hidden subdirectory of the WAL directory that holds walfast's state.
STATE_DIR = ".walfast"
IDENTITY = "identity"
BOOT = "boot"
PROGRESS = "progress"
ARCHIVED = "archived"
ARCHIVE_STATUS = "archive-status"
#: Every name walfast keeps in :data:`STATE_DIR` (besides ``NAME.tmp`` while
#: one is being replaced).
STATE_FILES = frozenset({IDENTITY, BOOT, PROGRESS, ARCHIVED, ARCHIVE_STATUS})
#: Names earlier walfast versions used next to the WAL -> their names now.
LEGACY_FILES = {"walfast.identity": IDENTITY, "walfast.boot": BOOT,
                "walfast.progress": PROGRESS}


def state_dir(directory: StrPath) -> Path:
    """The state directory of WAL directory *directory*."""
    return Path(directory) / STATE_DIR


def state_file(directory: StrPath, name: str) -> Path:
    """The path of state file *name* (:data:`IDENTITY`, ...) of *directory*."""
    return Path(directory) / STATE_DIR / name


def dir_mode_for(file_mode: int) -> int:
    """The directory mode that goes with files of *file_mode*: search
    permission wherever read permission is given (0600 -> 0700, 0640 -> 0750),
    as PostgreSQL's PG_DIR_MODE_OWNER / PG_DIR_MODE_GROUP."""
    return file_mode | ((file_mode & 0o444) >> 2)


def ensure_state_dir(directory: StrPath, *, file_mode: int = 0o600, sync: bool = True) -> Path:
    """Create *directory*'s state directory if it is missing (mode from
    :func:`dir_mode_for`, the WAL directory fsynced so the new entry
    survives a crash); return its path."""
    path = state_dir(directory)
    try:
        os.mkdir(path, dir_mode_for(file_mode))
    except FileExistsError:
        if not path.is_dir():
            raise NotADirectoryError(
                errno.ENOTDIR, "could not create walfast's state directory: it exists and is "
                "not a directory (walfast keeps its state there; move it away)",
                str(path)) from None
        return path
    except OSError as exc:
        from walfast.waldir.durable import os_error

        raise os_error(exc, "could not create directory", path) from None
    os.chmod(path, dir_mode_for(file_mode))      # mkdir's mode is masked by the umask
    if sync:
        from walfast.waldir.durable import fsync_dir

        fsync_dir(directory)
    return path


def _held_by_a_receiver(path: Path) -> bool:
    """Whether a receiver holds *path*'s exclusive lock (a progress file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def migrate_legacy_files(directory: StrPath, *, file_mode: int = 0o600,
                         sync: bool = True) -> list[str]:
    """Move the state files an earlier walfast left next to the WAL into the
    state directory; return the names moved or removed.

    The identity and boot records are renamed (an existing newer record
    wins and the old one is removed); an old progress file is removed, as a
    receiver recreates its state at start.  If an earlier walfast is still
    running in *directory* (it holds the old progress file's lock),
    :class:`BlockingIOError` says so and nothing is moved: two receivers
    must not write into one directory.
    """
    directory = Path(directory)
    present = [name for name in LEGACY_FILES if (directory / name).is_file()]
    if not present:
        return []
    old_progress = directory / "walfast.progress"
    if _held_by_a_receiver(old_progress):
        raise BlockingIOError(
            errno.EWOULDBLOCK, f'an earlier walfast receiver is writing into "{directory}" (it '
            f'holds "{old_progress}"); stop it or use another directory', str(old_progress))
    from walfast.log import get_logger
    from walfast.waldir.durable import durable_rename, fsync_dir

    target = ensure_state_dir(directory, file_mode=file_mode, sync=sync)
    for name in present:
        new = target / LEGACY_FILES[name]
        if name == "walfast.progress" or new.exists():
            os.unlink(directory / name)
        else:
            durable_rename(directory / name, new, target, sync=sync)
        get_logger(__name__).info(
            'moved walfast\'s own "%s" out of the WAL directory into "%s"', name, target)
    if sync:
        fsync_dir(directory)        # the old names are gone for good
    return present
