"""LSNs, segment arithmetic and WAL file names.

Pure functions, no I/O.  LSNs are plain ``int`` everywhere in walfast's API;
this module turns them into and out of PostgreSQL's text forms:

* ``X/X``: two 32-bit hex halves, as ``pg_lsn`` prints them.  PostgreSQL 19
  prints the low half zero-padded (``0/0300A0F8``); both forms are accepted.
* segment file names ``TTTTTTTTXXXXXXXXYYYYYYYY`` (``XLogFileName``): timeline,
  then the segment number split into "log" and "seg" parts, which depend on
  the segment size.  Nothing here assumes 16 MiB.
* timeline history files ``TTTTTTTT.history``.
* the names a WAL directory holds (:func:`parse_wal_file_name`): the one
  place that recognises a WAL file name with its suffixes;
* backup history files ``TTTTTTTTXXXXXXXXYYYYYYYY.OOOOOOOO.backup``
  (:func:`is_backup_history_file_name`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "WalFileName",
    "MAX_SEGMENT_SIZE",
    "MIN_SEGMENT_SIZE",
    "format_lsn",
    "history_file_name",
    "is_backup_history_file_name",
    "is_valid_segment_size",
    "parse_history_file_name",
    "parse_lsn",
    "parse_segment_file_name",
    "parse_wal_file_name",
    "segment_file_name",
    "segment_offset",
    "segment_start",
    "segments_per_xlogid",
    "segno_of",
]

MIN_SEGMENT_SIZE = 1 << 20
MAX_SEGMENT_SIZE = 1 << 30

_LSN_RE = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")
_SEGMENT_RE = re.compile(r"([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})")
#: A segment file name with what may follow it in a WAL directory: a
#: compression suffix (pg_receivewal's .gz and .lz4, walfast's .zst), then
#: .partial, then .tmp.
_WAL_FILE_RE = re.compile(
    r"([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.gz|\.lz4|\.zst)?(\.partial)?(\.tmp)?")
_HISTORY_RE = re.compile(r"([0-9A-F]{8})\.history")
#: ``BackupHistoryFileName``: the segment of the backup's start, its offset.
_BACKUP_HISTORY_RE = re.compile(r"[0-9A-F]{24}\.[0-9A-F]{8}\.backup")


def parse_lsn(text: str) -> int:
    """Parse ``"16/B374D848"`` (or ``"0/0300A0F8"``) into an int.

    Raises :class:`ValueError` naming the text when it is not an LSN.
    """
    m = _LSN_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f'could not parse LSN "{text}": expected two hex numbers like 0/3000000')
    return (int(m.group(1), 16) << 32) | int(m.group(2), 16)


def format_lsn(lsn: int) -> str:
    """Format an LSN as PostgreSQL prints it (``%X/%X``)."""
    if not 0 <= lsn < 1 << 64:
        raise ValueError(f"LSN out of range: {lsn}")
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def is_valid_segment_size(size: int) -> bool:
    """True for a power of two from 1 MiB to 1 GiB (``IsValidWalSegSize``)."""
    return MIN_SEGMENT_SIZE <= size <= MAX_SEGMENT_SIZE and size & (size - 1) == 0


def _check_segment_size(size: int) -> None:
    if not is_valid_segment_size(size):
        raise ValueError(
            f"invalid WAL segment size {size} bytes: must be a power of two between 1 MB and 1 GB"
        )


def segments_per_xlogid(segment_size: int) -> int:
    """How many segments one "log id" (the middle 8 hex digits) holds."""
    _check_segment_size(segment_size)
    return (1 << 32) // segment_size


def segno_of(lsn: int, segment_size: int) -> int:
    """The segment number holding the byte at ``lsn``."""
    _check_segment_size(segment_size)
    return lsn // segment_size


def segment_offset(lsn: int, segment_size: int) -> int:
    """``lsn``'s offset inside its segment."""
    _check_segment_size(segment_size)
    return lsn & (segment_size - 1)


def segment_start(lsn: int, segment_size: int) -> int:
    """``lsn`` rounded down to the start of its segment."""
    _check_segment_size(segment_size)
    return lsn - (lsn & (segment_size - 1))


def segment_file_name(timeline: int, segno: int, segment_size: int) -> str:
    """``XLogFileName``: the 24-character name of segment ``segno``."""
    per_id = segments_per_xlogid(segment_size)
    if not 1 <= timeline <= 0xFFFFFFFF:
        raise ValueError(f"invalid timeline {timeline}")
    if not 0 <= segno < (1 << 64) // segment_size:
        raise ValueError(f"invalid segment number {segno}")
    return f"{timeline:08X}{segno // per_id:08X}{segno % per_id:08X}"


def parse_segment_file_name(name: str, segment_size: int) -> tuple[int, int]:
    """``XLogFromFileName``: ``(timeline, segno)`` of a 24-character name.

    Suffixes such as ``.partial`` or ``.gz`` must be removed by the caller.
    Raises :class:`ValueError` for anything else, including a "seg" part that
    cannot exist with this segment size.
    """
    m = _SEGMENT_RE.fullmatch(name)
    if m is None:
        raise ValueError(f'"{name}" is not a WAL segment file name')
    per_id = segments_per_xlogid(segment_size)
    timeline, log, seg = (int(g, 16) for g in m.groups())
    if timeline == 0 or seg >= per_id:
        raise ValueError(
            f'"{name}" is not a WAL segment file name for {segment_size // (1 << 20)} MB segments'
        )
    return timeline, log * per_id + seg


def history_file_name(timeline: int) -> str:
    """``TLHistoryFileName``: ``00000002.history``."""
    if not 1 <= timeline <= 0xFFFFFFFF:
        raise ValueError(f"invalid timeline {timeline}")
    return f"{timeline:08X}.history"


def parse_history_file_name(name: str) -> int:
    """The timeline of a ``TTTTTTTT.history`` file name."""
    m = _HISTORY_RE.fullmatch(name)
    if m is None or int(m.group(1), 16) == 0:
        raise ValueError(f'"{name}" is not a timeline history file name')
    return int(m.group(1), 16)


def is_backup_history_file_name(name: str) -> bool:
    """True for a backup history file name
    (``000000010000000000000002.00000028.backup``, ``IsBackupHistoryFileName``)."""
    return _BACKUP_HISTORY_RE.fullmatch(name) is not None


@dataclass(frozen=True)
class WalFileName:
    """A name of a WAL segment file as it stands in a WAL directory.

    ``base`` is the 24-character segment name; ``compression`` the suffix
    (``""``, ``".gz"``, ``".lz4"``, ``".zst"``); ``partial`` and ``temporary``
    tell whether ``.partial`` and ``.tmp`` follow.  pg_receivewal's
    ``IsXLogFileName``/``IsPartialXLogFileName``/``IsCompressXLogFileName``
    accept the names without ``.tmp`` (and ``.zst`` is walfast's own).
    """

    base: str
    compression: str
    partial: bool
    temporary: bool

    @property
    def plain(self) -> bool:
        """Uncompressed, not temporary: a file whose bytes are the segment's."""
        return not self.compression and not self.temporary

    @property
    def complete(self) -> bool:
        """A completed segment: neither ``.partial`` nor ``.tmp``."""
        return not self.partial and not self.temporary

    def position(self, segment_size: int) -> tuple[int, int]:
        """``(timeline, segno)`` (:func:`parse_segment_file_name`)."""
        return parse_segment_file_name(self.base, segment_size)


def parse_wal_file_name(name: str) -> WalFileName | None:
    """The parts of a WAL segment file name (completed, ``.partial``,
    compressed, ``.tmp``), or None for any other name."""
    m = _WAL_FILE_RE.fullmatch(name)
    if m is None:
        return None
    return WalFileName(base=name[:24], compression=m.group(4) or "",
                       partial=m.group(5) is not None, temporary=m.group(6) is not None)
