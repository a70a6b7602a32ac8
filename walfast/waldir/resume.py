"""Resuming inside a ``.partial`` segment after walfast stopped or was killed.

pg_receivewal streams a ``.partial`` segment again from its first byte.
walfast resumes at the start of the last WAL page the file provably holds,
when that can be proven; otherwise it does what pg_receivewal does.
:func:`resume_position` refines the start position that
:func:`walfast.waldir.scan.find_streaming_start` chose; :func:`note_boot`
keeps the record that makes the refinement safe.

Why it is safe
--------------

1. **What a writer leaves in the file.**  A segment file is created full
   of zeros (posix_fallocate; pg_receivewal writes zeros) and filled strictly
   in LSN order, each page header checked before any byte of its page is
   written (:class:`walfast._core.SegmentWriter`).  A later run that resumes
   at some page rewrites the same bytes: the WAL of a timeline at a given LSN
   never changes once the server has sent it.  So, as the kernel's page
   cache shows the file, it holds the server's WAL from the segment start up
   to where writing stopped, then zeros.

2. **A process crash loses nothing written.**  After SIGKILL, OOM-kill or
   a segfault, every byte a completed ``pwrite()`` handed to the kernel is
   in the page cache and every later reader sees it, synced or not (a
   ``pwrite`` cut short by the kill copies a prefix of its bytes, in order).
   Hence the first page whose header is not valid (zeros, or a header only
   partly written) marks where writing stopped: every page before it is
   complete, and the last valid page may be incomplete.  Resuming at the
   start of that last valid page receives it again and loses nothing.  (A
   header cut short can still read as valid, the missing bytes being zeros
   where the value has zeros too; that is fine: a page whose first byte was
   written has every byte before it written.)

3. **An operating-system crash or power loss breaks rule 2.**  Pages not
   yet written back may read back as zeros, as older content or torn, so a
   valid header no longer proves that its page, or the pages before it,
   reached the disk.  So bytes are trusted only if they were written during
   the current boot: the boot record (``.walfast/boot``) records the kernel's boot id
   (``/proc/sys/kernel/random/boot_id``, a fresh random value at every
   boot) and the highest segment number of any WAL file that was in the
   directory when walfast first ran in that boot.  Files up to that number
   may hold bytes of an earlier boot and are streamed again from their
   start, exactly as pg_receivewal does; files above it did not exist then,
   so every byte in them went through this boot's page cache.  The record
   is written before anything else is, so a file can never be created in
   this boot before the record that bounds it.  No boot id (not Linux),
   another boot's id, or an unreadable record: nothing is trusted (then the
   record is rewritten for this boot, which only ever distrusts more).

4. **Durability before reporting.**  The reopened file is fsynced before
   any position in it is reported flushed (the SegmentWriter does that when
   it opens an existing file), so the flush position the server learns only
   ever covers bytes on disk; a write-back error of the killed run surfaces
   in that fsync instead of being acknowledged.

Out of scope: files that something other than a WAL receiver put into the
directory during the current boot (a copy of a damaged file, say) are
trusted like the receiver's own, up to their last valid page header.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from walfast import _core
from walfast.errors import partial_size_error
from walfast.log import get_logger
from walfast.lsn import format_lsn, parse_segment_file_name, segment_file_name
from walfast.waldir import layout
from walfast.waldir.durable import StrPath, write_file_durably

__all__ = [
    "current_boot_id",
    "last_valid_page",
    "note_boot",
    "resume_position",
]

log = get_logger(__name__)

_BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"

_READ_CHUNK = 1 << 20


# --------------------------------------------------------------------------- #
# the boot record
# --------------------------------------------------------------------------- #

def current_boot_id() -> str | None:
    """The kernel's boot id, or None where there is none (not Linux)."""
    try:
        with open(_BOOT_ID_PATH, encoding="ascii") as f:
            value = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return value or None


def _highest_segno(directory: StrPath, segment_size: int) -> int:
    """The highest segment number among names that start like a WAL segment
    file (completed, partial, compressed, temporary, or anything else after
    the 24 characters): all of them count when bounding what an earlier boot
    may have left."""
    highest = -1
    with os.scandir(directory) as entries:
        for entry in entries:
            try:
                _, segno = parse_segment_file_name(entry.name[:24], segment_size)
            except ValueError:
                continue   # a name this segment size cannot produce: never written by us
            highest = max(highest, segno)
    return highest


def _read_boot_record(path: Path) -> tuple[str, int] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return str(data["boot_id"]), int(data["untrusted_through_segno"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning('ignoring unreadable boot record "%s" (%s); resuming .partial segments '
                    "from their start", path, exc)
        return None


def note_boot(directory: StrPath, segment_size: int, *, sync: bool = True,
              mode: int = 0o600) -> int | None:
    """Make sure *directory*'s boot record is this boot's; return the
    highest segment number whose files may hold bytes of an earlier boot
    (-1: none), or None when no boot id is available (then no file is
    trusted).

    Call it before anything is written into the directory in this run.
    """
    boot_id = current_boot_id()
    if boot_id is None:
        return None
    path = layout.state_file(directory, layout.BOOT)
    recorded = _read_boot_record(path)
    if recorded is not None and recorded[0] == boot_id:
        return recorded[1]
    untrusted = _highest_segno(directory, segment_size)
    data = json.dumps({"boot_id": boot_id, "untrusted_through_segno": untrusted}) + "\n"
    target = layout.ensure_state_dir(directory, file_mode=mode, sync=sync)
    write_file_durably(target, layout.BOOT, data.encode(), sync=sync, mode=mode)
    return untrusted


# --------------------------------------------------------------------------- #
# the page scan
# --------------------------------------------------------------------------- #

def last_valid_page(path: StrPath, *, segment_start: int, timeline: int, segment_size: int,
                    page_size: int, system_identifier: int) -> int | None:
    """LSN of the start of the last page of the file's valid prefix, or None
    when its first page is not valid.

    Valid, page by page from the first, by the rules the SegmentWriter
    checks a page with before writing it (:class:`walfast._core.PageCheck`):
    the first page has a long header with *system_identifier*,
    *segment_size* and *page_size*; every page has the first page's
    non-zero ``xlp_magic``, no unknown ``xlp_info`` flag, ``xlp_pageaddr``
    equal to its own LSN and ``1 <= xlp_tli <= timeline``; later pages have
    short headers.  The prefix ends at the first page that fails (a zeroed
    page, after an XLOG_SWITCH, ends it too).
    """
    check = _core.PageCheck(lsn=segment_start, timeline=timeline, segment_size=segment_size,
                            page_size=page_size, system_identifier=system_identifier,
                            zeroed_tail=False)
    with open(path, "rb") as f:  # buffered: read(n) returns n bytes unless at EOF
        offset = 0
        while offset < segment_size:
            chunk = f.read(min(_READ_CHUNK, segment_size - offset))
            if not chunk or check.check(chunk) < len(chunk):
                break
            offset += len(chunk)
    last: int = check.next_check - page_size     # every page before next_check passed
    return last if last >= segment_start else None


def resume_position(
    directory: StrPath, start_lsn: int, timeline: int, *, segment_size: int, page_size: int,
    system_identifier: int, untrusted_through: int | None,
) -> int:
    """Where to resume, given :func:`~walfast.waldir.scan.find_streaming_start`'s
    *start_lsn* and *timeline*.

    When *start_lsn* is the start of a segment whose full-size ``.partial``
    file is in *directory*, and that file was created in this boot (its
    segment number is above *untrusted_through*, see :func:`note_boot`): the
    start of the last page of the file's valid prefix
    (:func:`last_valid_page`).  Otherwise *start_lsn* unchanged.

    A ``.partial`` whose size is neither 0 nor the segment size raises
    :class:`~walfast.errors.SegmentError` saying what to do, before anything
    is streamed.
    """
    if start_lsn % segment_size:
        return start_lsn
    segno = start_lsn // segment_size
    path = Path(directory) / (segment_file_name(timeline, segno, segment_size) + ".partial")
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return start_lsn
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        return start_lsn
    if st.st_size != segment_size:
        raise partial_size_error(str(path), st.st_size, segment_size)
    if untrusted_through is None or segno <= untrusted_through:
        log.debug('"%s" may hold bytes written before this boot: streaming it from its start',
                  path.name)
        return start_lsn
    page = last_valid_page(path, segment_start=start_lsn, timeline=timeline,
                           segment_size=segment_size, page_size=page_size,
                           system_identifier=system_identifier)
    if page is None:
        return start_lsn
    log.debug('"%s" holds valid WAL pages up to %s: resuming at the start of the last one',
              path.name, format_lsn(page))
    return page
