"""Durable small writes and renames in a WAL directory (walmethods.c's part
that is not segment data).

* :func:`fsync_dir`: a directory, so creations and renames in it survive a
  crash;
* :func:`durable_rename`: fsync the file, rename, fsync the directory;
* :func:`write_file_durably`: a whole small file replaced atomically
  (``NAME.tmp``, fsync, rename, directory fsync), for history files and
  walfast's own state records.

Errors are :class:`OSError` subclasses carrying ``errno`` and ``filename``,
as the standard library raises them; their ``strerror`` says what failed
(``could not write file: No space left on device``), which
:func:`walfast.errors.describe` words as PostgreSQL does.  With ``sync=False`` (``--no-sync``)
the same steps run without any fsync.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Union

__all__ = ["StrPath", "durable_rename", "fsync_dir", "os_error", "write_file_durably"]

StrPath = Union[str, "os.PathLike[str]"]



def os_error(exc: OSError, what: str, path: StrPath) -> OSError:
    """*exc* again, saying what failed on which file (the standard
    library's OSError subclass for its errno)."""
    return OSError(exc.errno, f"{what}: {exc.strerror}", os.fspath(path))


def _fsync_path(path: StrPath, *, is_dir: bool) -> None:
    """fsync ``path`` (a file or a directory), errors naming the path."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if is_dir else 0))
    try:
        try:
            os.fsync(fd)
        except OSError as exc:
            # Like PostgreSQL's fsync_fname_ext: some file systems cannot
            # fsync a directory; that is not an error.
            if is_dir and exc.errno in (errno.EBADF, errno.EINVAL):
                return
            raise os_error(exc, f"could not fsync {'directory' if is_dir else 'file'}",
                           path) from None
    finally:
        os.close(fd)


def fsync_dir(path: StrPath) -> None:
    """fsync a directory, so that file creations and renames in it survive
    a crash.  Raises ``OSError`` (with ``filename``) on failure."""
    _fsync_path(path, is_dir=True)


def durable_rename(
    src: StrPath, dst: StrPath, directory: StrPath | None = None, sync: bool = True,
) -> None:
    """Rename ``src`` to ``dst`` so that, after a crash, ``dst`` exists with
    all of its content.

    With ``sync``: fsync ``src`` (its data must be on disk before the new name
    can be), rename (replacing ``dst`` atomically), then fsync ``directory``
    (default: ``dst``'s parent) so the rename itself is durable.  Without
    ``sync`` (``--no-sync``) just the rename.  Both names must be in the same
    directory, or at least on the same file system.
    """
    if directory is None:
        directory = Path(dst).parent
    if sync:
        _fsync_path(src, is_dir=False)
    try:
        os.replace(src, dst)
    except OSError as exc:
        raise os_error(exc, "could not rename file", src) from None
    if sync:
        fsync_dir(directory)


def write_file_durably(
    directory: StrPath, name: str, content: bytes, *, sync: bool = True, mode: int = 0o600,
) -> Path:
    """Write *content* as *directory*/*name*, replacing any file of that name
    atomically: ``NAME.tmp`` is written (replacing a stale one), fsynced,
    renamed and the directory fsynced (no fsyncs when ``sync`` is false).
    After a crash the file is either the old one or has all of *content*.
    Returns its path; an ``OSError`` names the file that failed."""
    final = Path(directory) / name
    tmp = Path(directory) / (name + ".tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    except OSError as exc:
        raise os_error(exc, "could not create file", tmp) from None
    try:
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            raise os_error(exc, "could not write file", tmp) from None
        finally:
            os.close(fd)
        durable_rename(tmp, final, directory, sync=sync)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return final


