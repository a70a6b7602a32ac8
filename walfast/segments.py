"""Directory policy for received WAL (the cold path, in Python).

What this module decides, as pg_receivewal's ``FindStreamingStart`` and
walmethods.c do:

* where streaming resumes, from the segment files already in the target
  directory (:func:`find_streaming_start`);
* how files become durable: fsync of a file and of its directory, and
  ``durable_rename`` (:func:`fsync_dir`, :func:`durable_rename`);
* how a timeline history file is written (:func:`write_history_file`);
* whether the target directory is usable at all (:func:`check_directory`).

What it does not own: writing WAL bytes into segments (the compiled engine,
:mod:`walfast._core`), *when* to flush (the stream loop), and talking to the
server (:mod:`walfast.protocol`).  Names come from :mod:`walfast.lsn`.

Errors: operating-system failures are :class:`OSError` subclasses carrying
``errno`` and ``filename``, as the standard library raises them.  Files that
are merely not usable for finding the start position are skipped with a
warning on the ``walfast.segments`` logger, as pg_receivewal does.
"""

from __future__ import annotations

import errno
import importlib
import logging
import os
import re
import stat
from pathlib import Path
from typing import Union

from walfast.errors import ServerMismatchError
from walfast.lsn import history_file_name, is_valid_segment_size, parse_segment_file_name

__all__ = [
    "OWN_FILES",
    "check_directory",
    "durable_rename",
    "write_file_durably",
    "find_streaming_start",
    "fsync_dir",
    "write_history_file",
]

logger = logging.getLogger("walfast.segments")

StrPath = Union[str, "os.PathLike[str]"]

#: A name pg_receivewal's ``is_xlogfilename`` accepts: 24 uppercase hex
#: digits, then nothing, ``.gz``, ``.lz4``, ``.partial``, ``.gz.partial`` or
#: ``.lz4.partial``; and walfast's own ``.zst`` / ``.zst.partial``.
#: walfast's own files in an output directory, next to the WAL: the
#: directory identity (walfast.identity), the boot record (walfast.resume)
#: and the progress state (walfast.progress).  pg_receivewal ignores them,
#: as it ignores every name that is not a segment file.
OWN_FILES = frozenset({"walfast.identity", "walfast.boot", "walfast.progress"})

_WAL_FILE_RE = re.compile(r"([0-9A-F]{24})(\.gz|\.lz4|\.zst)?(\.partial)?")

#: Compressed bytes read per step, and uncompressed bytes produced per step,
#: when measuring an ``.lz4`` file (pg_receivewal uses 64 kB for both).
_LZ4_READ_CHUNK = 64 * 1024
_LZ4_OUT_CHUNK = 1 << 20


# --------------------------------------------------------------------------- #
# where to resume
# --------------------------------------------------------------------------- #

def find_streaming_start(directory: StrPath, segment_size: int) -> tuple[int, int] | None:
    """Where to resume streaming into ``directory``: ``(start_lsn, timeline)``.

    pg_receivewal's ``FindStreamingStart``:

    1. Files named like WAL segments (24 uppercase hex digits, optionally
       ``.gz``/``.lz4``/``.zst``, optionally then ``.partial``) are considered; every
       other name (history files, ``.tmp`` files, lowercase names) is ignored.
    2. A *completed* file must hold exactly one segment, else it is skipped
       with a warning: a plain file by its size, a ``.gz`` file by its gzip
       trailer (ISIZE, the uncompressed size mod 2**32), an ``.lz4`` file by
       decompressing it (only if the ``lz4`` module is installed; without it
       ``.lz4`` files are skipped with a warning, where pg_receivewal built
       without lz4 exits), a ``.zst`` file (walfast's own; pg_receivewal
       ignores the name) by decompressing it too.  ``.partial`` files are
       not size-checked here.
    3. The file with the highest segment number wins; on a tie the higher
       timeline; on a further tie a completed file beats a ``.partial``.
    4. The result is the start of the *next* segment when the winner is
       complete, the start of its own segment when it is partial, and the
       winner's timeline.

    ``None`` means no usable file: the caller falls back to the slot's
    restart point or the server's current position.  Test the result with
    ``is None``: a ``.partial`` of segment 0 gives start LSN 0.

    One deliberate difference: pg_receivewal treats a directory whose best
    file is segment 0 as empty (its ``high_segno > 0`` test), walfast returns
    that file's position like any other.  (Real clusters start at segment 1,
    so this only matters for hand-made directories.)

    Besides pg_receivewal's rules, walfast also skips, with a warning, entries
    that are not regular files (a directory with a segment-like name) and
    names whose "seg" part cannot exist with this segment size.

    Raises ``ValueError`` for an invalid ``segment_size`` and ``OSError`` if
    the directory cannot be read.
    """
    if not is_valid_segment_size(segment_size):
        raise ValueError(
            f"invalid WAL segment size {segment_size} bytes: must be a power of "
            "two between 1 MB and 1 GB")
    directory = os.fspath(directory)

    best: tuple[int, int, bool] | None = None  # (segno, timeline, complete)
    with os.scandir(directory) as entries:
        for entry in entries:
            m = _WAL_FILE_RE.fullmatch(entry.name)
            if m is None:
                continue
            base, compression, partial = m.group(1), m.group(2), m.group(3) is not None
            try:
                timeline, segno = parse_segment_file_name(base, segment_size)
            except ValueError:
                logger.warning(
                    'file "%s" is not a WAL segment name for %d MB segments, skipping',
                    entry.name, segment_size >> 20)
                continue
            try:
                st = entry.stat()  # follows symlinks, like pg_receivewal's stat()
            except FileNotFoundError:
                continue  # removed while we were scanning
            if not stat.S_ISREG(st.st_mode):
                logger.warning('"%s" is not a regular file, skipping', entry.name)
                continue
            if not partial and not _completed_file_ok(
                entry.path, entry.name, compression, st.st_size, segment_size
            ):
                continue
            candidate = (segno, timeline, not partial)
            if best is None or candidate > best:
                best = candidate

    if best is None:
        return None
    segno, timeline, complete = best
    if complete:
        segno += 1
    return segno * segment_size, timeline


def _completed_file_ok(
    path: str, name: str, compression: str | None, size: int, segment_size: int,
) -> bool:
    """True if a completed (non-partial) file holds exactly one segment."""
    if compression is None:
        if size != segment_size:
            logger.warning('segment file "%s" has incorrect size %d, skipping', name, size)
            return False
        return True

    if compression == ".gz":
        # RFC 1952: the last 4 bytes are ISIZE, the uncompressed size mod
        # 2**32, little-endian.  Exact for segments (at most 1 GiB).
        if size < 4:
            logger.warning(
                'compressed segment file "%s" is too short (%d bytes) to hold a '
                "gzip trailer, skipping", name, size)
            return False
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            isize = int.from_bytes(f.read(4), "little")
        return _uncompressed_size_ok(name, isize, segment_size)

    if compression == ".zst":
        # walfast's own: like ".lz4", decompress and count (a zstd frame
        # written by a stream compressor does not record the content size).
        try:
            usize = _zstd_uncompressed_size(path, segment_size)
        except (EOFError, ValueError) as exc:
            logger.warning('could not decompress file "%s": %s, skipping', name, exc)
            return False
        return _uncompressed_size_ok(name, usize, segment_size)

    # ".lz4": the frame format need not record the content size (and files
    # compressed by another tool may not), so decompress and count, stopping
    # as soon as the count exceeds a segment.
    try:
        lz4_frame = importlib.import_module("lz4.frame")
    except ImportError:
        logger.warning(
            'cannot check compressed segment file "%s": LZ4 support is missing '
            '(the "lz4" Python package is not installed), skipping', name)
        return False
    try:
        usize = _lz4_uncompressed_size(lz4_frame, path, segment_size)
    except (RuntimeError, EOFError, ValueError) as exc:  # lz4's decoding errors
        logger.warning('could not decompress file "%s": %s, skipping', name, exc)
        return False
    return _uncompressed_size_ok(name, usize, segment_size)


def _uncompressed_size_ok(name: str, usize: int, segment_size: int) -> bool:
    """pg_receivewal's check of a completed compressed segment's size."""
    if usize != segment_size:
        logger.warning(
            'compressed segment file "%s" has incorrect uncompressed size %d, skipping',
            name, usize)
        return False
    return True


def _lz4_uncompressed_size(lz4_frame: object, path: str, limit: int) -> int:
    """Uncompressed size of the LZ4 frames in ``path``, or some value above
    ``limit`` once it is known to exceed it.  Memory use stays bounded."""
    decompressor_type = getattr(lz4_frame, "LZ4FrameDecompressor")
    dec = decompressor_type()
    total = 0
    with open(path, "rb") as f:
        data = b""
        while total <= limit:
            if not data:
                data = f.read(_LZ4_READ_CHUNK)
                if not data:
                    break
            total += len(dec.decompress(data, max_length=_LZ4_OUT_CHUNK))
            data = b""
            while not dec.eof and not dec.needs_input and total <= limit:
                total += len(dec.decompress(b"", max_length=_LZ4_OUT_CHUNK))
            if dec.eof:
                # Concatenated frames: continue with a fresh decompressor.
                data = dec.unused_data
                dec = decompressor_type()
    return total


def _zstd_uncompressed_size(path: str, limit: int) -> int:
    """Uncompressed size of the zstd frames in ``path``, or some value above
    ``limit`` once it is known to exceed it.  Raises ``ValueError`` for
    damaged data.  As pg_receivewal's ``.lz4`` check, only the size counts:
    a frame cut short just decodes to fewer bytes."""
    import zstandard

    total = 0
    dec = zstandard.ZstdDecompressor().decompressobj()
    try:
        with open(path, "rb") as f:
            while total <= limit:
                data = f.read(_LZ4_READ_CHUNK)
                if not data:
                    break
                while data:
                    total += len(dec.decompress(data))
                    if not dec.eof:
                        break
                    data = dec.unused_data  # concatenated frames
                    dec = zstandard.ZstdDecompressor().decompressobj()
    except zstandard.ZstdError as exc:
        raise ValueError(str(exc)) from None
    return total


# --------------------------------------------------------------------------- #
# durability
# --------------------------------------------------------------------------- #

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
            raise OSError(exc.errno, exc.strerror, os.fspath(path)) from None
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
    os.replace(src, dst)
    if sync:
        fsync_dir(directory)


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
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, os.fspath(tmp)) from None
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
