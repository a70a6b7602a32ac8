"""Directory identity: which cluster's WAL a target directory holds.

The first time walfast writes into a directory it records, in
``.walfast/identity`` (JSON, :mod:`walfast.waldir.layout`), the server's system identifier, WAL segment size
and WAL block size, plus when and by which walfast version.  Every later run
compares the server it is connected to with that record *before writing
anything* and refuses, with a message naming both sides, when they differ:
WAL of two clusters (or of two segment sizes) in one directory would make
every file in it suspect.

A directory that holds WAL but no identity file (written by pg_receivewal,
or by a walfast from before this file existed) is checked through its WAL
instead: the long page header at the start of the newest uncompressed
segment file records ``xlp_sysid``, ``xlp_seg_size`` and ``xlp_xlog_blcksz``.

The file is written as a history file is: a temporary name, fsync, rename,
fsync of the directory (with ``sync=False``, ``--no-sync``, just the write and
the rename).
"""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass
from pathlib import Path

from walfast import _core
from walfast._version import __version__
from walfast.errors import ServerMismatchError
from walfast.lsn import parse_wal_file_name
from walfast.waldir import layout
from walfast.waldir.durable import StrPath, write_file_durably

__all__ = [
    "DirectoryIdentity",
    "check_and_record",
    "find_identity",
    "read_identity",
    "write_identity",
]

#: Version of the file's layout; a reader refuses a layout it does not know.
_FORMAT = 1

#: Bytes of a segment's first page that hold its long header.
_LONG_HEADER_SIZE = 40


@dataclass(frozen=True)
class DirectoryIdentity:
    """What makes WAL of one cluster fit together: the cluster's system
    identifier, the WAL segment size and the WAL block (page) size."""

    system_identifier: int
    wal_segment_size: int
    wal_block_size: int

    def differences(self, other: DirectoryIdentity) -> list[tuple[str, str, str]]:
        """``(what, self's value, other's value)`` for each field that differs."""
        out = []
        if self.system_identifier != other.system_identifier:
            out.append(("system identifier", str(self.system_identifier),
                        str(other.system_identifier)))
        if self.wal_segment_size != other.wal_segment_size:
            out.append(("WAL segment size", _size_text(self.wal_segment_size),
                        _size_text(other.wal_segment_size)))
        if self.wal_block_size != other.wal_block_size:
            out.append(("WAL block size", _size_text(self.wal_block_size),
                        _size_text(other.wal_block_size)))
        return out


def _size_text(n: int) -> str:
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MB"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10} kB"
    return f"{n} bytes"


def read_identity(directory: StrPath) -> DirectoryIdentity | None:
    """The identity recorded in *directory*, or None when there is no
    identity file.  An identity file that cannot be understood raises
    :class:`ServerMismatchError` naming it: it must not be overwritten on a
    guess."""
    path = layout.state_file(directory, layout.IDENTITY)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ServerMismatchError(
            f'could not read the directory identity file "{path}": {exc}') from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("format") != _FORMAT:
            raise ValueError(f"unknown format {data.get('format')!r}")
        ident = DirectoryIdentity(
            system_identifier=int(data["system_identifier"]),
            wal_segment_size=int(data["wal_segment_size"]),
            wal_block_size=int(data["wal_block_size"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ServerMismatchError(
            f'directory identity file "{path}" is damaged or was written by another program '
            f"({exc}); walfast will not guess which cluster this directory belongs to. If the "
            f"directory holds only WAL of the server you are streaming from, remove the file "
            f"and start again") from None
    return ident


def write_identity(directory: StrPath, ident: DirectoryIdentity, *, sync: bool = True,
                   mode: int = 0o600) -> Path:
    """Write *ident* as *directory*'s identity file (replacing one), durably
    unless ``sync`` is false; return its path."""
    record = {
        "format": _FORMAT,
        # A string: JSON readers that use doubles would round a uint64.
        "system_identifier": str(ident.system_identifier),
        "wal_segment_size": ident.wal_segment_size,
        "wal_block_size": ident.wal_block_size,
        "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "walfast_version": __version__,
    }
    data = (json.dumps(record, indent=2) + "\n").encode()
    target = layout.ensure_state_dir(directory, file_mode=mode, sync=sync)
    return write_file_durably(target, layout.IDENTITY, data, sync=sync, mode=mode)


def _newest_segment_header(directory: Path) -> tuple[str, DirectoryIdentity] | None:
    """The identity the newest readable uncompressed segment file in
    *directory* records in its first page's long header, with its name.

    Newest by segment number, then timeline, compared on the names' hex
    digits (which order the same way whatever the segment size).  Files
    whose first page holds no valid long header by the engine's rules
    (:func:`walfast._core.long_page_header`: a ``.partial`` nothing was
    written into yet, a damaged file) are passed over for the next newest.
    """
    names = []
    for entry in os.scandir(directory):
        wal = parse_wal_file_name(entry.name)
        if wal is not None and wal.plain and entry.is_file():
            names.append(entry.name)
    names.sort(key=lambda n: (n[8:24], n[:8], not n.endswith(".partial")), reverse=True)
    for name in names:
        try:
            with open(directory / name, "rb") as f:
                head = f.read(_LONG_HEADER_SIZE)
        except OSError:
            continue
        found = _core.long_page_header(head)
        if found is not None:
            return name, DirectoryIdentity(*found)
    return None


def check_and_record(directory: StrPath, server: DirectoryIdentity, *, sync: bool = True,
                     mode: int = 0o600) -> None:
    """Refuse a directory that holds WAL of another cluster or segment size;
    record *server*'s identity in it the first time.

    Raises :class:`ServerMismatchError` (nothing written) when the identity
    file, or the newest segment file of a directory without one, disagrees
    with *server*.
    """
    directory = Path(directory)
    recorded = read_identity(directory)
    if recorded is not None:
        diff = recorded.differences(server)
        if diff:
            raise _mismatch(
                directory, f'"{layout.state_file(directory, layout.IDENTITY)}" records', diff)
        return
    found = _newest_segment_header(directory)
    if found is not None:
        name, seen = found
        diff = seen.differences(server)
        if diff:
            raise _mismatch(directory, f'"{directory / name}" (its first page header) has',
                            diff)
    write_identity(directory, server, sync=sync, mode=mode)


def _mismatch(directory: Path, source: str, diff: list[tuple[str, str, str]]) -> ServerMismatchError:
    ours = ", ".join(f"{what} {mine}" for what, mine, _ in diff)
    theirs = ", ".join(f"{what} {other}" for what, _, other in diff)
    return ServerMismatchError(
        f'directory "{directory}" holds WAL that does not fit this server: {source} {ours}, but '
        f"the server has {theirs}. walfast will not mix WAL of two clusters or segment sizes "
        f"in one directory; use an empty directory for this server, or connect to the server "
        f"this directory belongs to")


def find_identity(directory: StrPath) -> tuple[str, DirectoryIdentity] | None:
    """Whose WAL *directory* holds, as :func:`check_and_record` finds out,
    without recording anything: ``(where it is written, identity)`` from the
    identity file, else from the newest segment file's first page header (a
    directory pg_receivewal wrote), else None (no WAL yet).  Errors as
    :func:`read_identity`."""
    directory = Path(directory)
    recorded = read_identity(directory)
    if recorded is not None:
        return f'"{layout.state_file(directory, layout.IDENTITY)}" records', recorded
    found = _newest_segment_header(directory)
    if found is not None:
        name, seen = found
        return f'"{directory / name}" (its first page header) has', seen
    return None
