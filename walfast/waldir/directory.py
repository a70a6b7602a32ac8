"""The WAL directory (``-D``): its owner.

Work in progress of the consolidation: this module grows into
:class:`WalDirectory`.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from walfast.errors import ServerMismatchError
from walfast.lsn import history_file_name
from walfast.waldir.durable import StrPath, write_file_durably

__all__ = ["check_directory", "write_history_file"]


def write_history_file(
    directory: StrPath, timeline: int, content: bytes, sync: bool = True, *,
    mode: int = 0o600,
) -> Path:
    """Write timeline ``timeline``'s history file into ``directory``; return its path.

    As pg_receivewal: ``TTTTTTTT.history.tmp`` is written (replacing a stale
    one), fsynced, renamed to ``TTTTTTTT.history`` and the directory fsynced
    (no fsyncs when ``sync`` is false).  ``mode`` is the new file's permission
    (see :func:`walfast.protocol.file_mode_for`).

    If the history file already exists with the same content nothing is done.
    With different content :class:`~walfast.errors.ServerMismatchError` is
    raised naming the file: the directory holds another history for that
    timeline (WAL from another cluster, or a re-created one), and walfast
    will not overwrite it.
    """
    name = history_file_name(timeline)
    final = Path(directory) / name
    content = bytes(content)
    try:
        existing = final.read_bytes()
    except FileNotFoundError:
        existing = None
    if existing is not None:
        if existing == content:
            return final
        raise ServerMismatchError(
            f'timeline history file "{final}" already exists with different content '
            f"({len(existing)} bytes on disk, {len(content)} bytes from the server); "
            "the directory holds WAL of another timeline history, refusing to overwrite it")

    return write_file_durably(directory, name, content, sync=sync, mode=mode)


# --------------------------------------------------------------------------- #
# the target directory
# --------------------------------------------------------------------------- #

def _directory_error(err: int, path: str) -> OSError:
    # OSError(errno, ...) returns the matching subclass (FileNotFoundError,
    # NotADirectoryError, PermissionError, ...), exactly what the standard
    # library would raise for the same failure.
    return OSError(err, os.strerror(err), path)


def check_directory(path: StrPath) -> None:
    """Check that ``path`` is an existing directory walfast can use.

    It must be a directory we can list, create files in and rename files in
    (read, write and search permission).  pg_receivewal only opens it; like
    pg_receivewal, walfast never creates it.

    Raises an ``OSError`` subclass (``FileNotFoundError``,
    ``NotADirectoryError``, ``PermissionError``...) with ``errno``,
    ``strerror`` (the operating system's text) and ``filename`` set, so a
    caller can print pg_receivewal's message as
    ``f'could not open directory "{e.filename}": {e.strerror}'``.
    """
    p = os.fspath(path)
    try:
        with os.scandir(p):
            pass
    except OSError as exc:
        raise _directory_error(exc.errno or errno.EIO, p) from None
    if not os.access(p, os.R_OK | os.W_OK | os.X_OK):
        raise _directory_error(errno.EACCES, p)
