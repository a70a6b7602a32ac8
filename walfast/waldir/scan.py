"""Where streaming resumes in a WAL directory: pg_receivewal's ``FindStreamingStart``.

:func:`find_streaming_start` reads the names (and, for completed files, the
sizes) of the segment files already in the directory.  It does not look
inside ``.partial`` files (:mod:`walfast.waldir.resume` refines a ``.partial``
start to its last valid page) and writes nothing.  Files that cannot count
are skipped with a warning, as pg_receivewal does.
"""

from __future__ import annotations

import os
import stat

from walfast.log import get_logger
from walfast.lsn import is_valid_segment_size, parse_wal_file_name
from walfast.waldir.codecs import DecodeError, decoded_length
from walfast.waldir.durable import StrPath

__all__ = ["find_streaming_start"]

logger = get_logger(__name__)

#: Compression suffix -> (method, its name in messages, the Python package).
_METHODS = {".lz4": ("lz4", "LZ4", "lz4"), ".zst": ("zstd", "ZSTD", "zstandard")}


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
            wal = parse_wal_file_name(entry.name)
            if wal is None or wal.temporary:
                continue
            compression, partial = wal.compression, wal.partial
            try:
                timeline, segno = wal.position(segment_size)
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
    path: str, name: str, compression: str, size: int, segment_size: int,
) -> bool:
    """True if a completed (non-partial) file holds exactly one segment."""
    if not compression:
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

    # ".lz4" and ".zst": the frame formats need not record the content size
    # (and files compressed by another tool may not), so decompress and
    # count, stopping as soon as the count exceeds a segment.
    method, label, package = _METHODS[compression]
    try:
        usize = decoded_length(path, method, segment_size)
    except ImportError:
        logger.warning(
            'cannot check compressed segment file "%s": %s support is missing '
            '(the "%s" Python package is not installed), skipping', name, label, package)
        return False
    except DecodeError as exc:
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
