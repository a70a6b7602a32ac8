"""What differs between PostgreSQL majors, for a WAL receiver: one table.

Everything walfast needs to know about a server's major version is here and
nowhere else: the page magic its WAL carries, which replication commands,
settings and slot columns it has, how that major's own pg_receivewal
behaves (what walfast-receivewal is compared with), and which majors walfast
is tested against.  The product (:mod:`walfast.replication.commands`, the
stream, the writer, ``walfast check``, ``walfast-receivewal --version``), the
tests, ``scripts/test-majors`` and the benchmarks read it; nothing else names
a version.  It imports nothing, so any module may use it.

:data:`TABLE` has one row per major walfast is tested against
(:data:`TESTED_MAJORS`, oldest first).  A server of another major still
works, with no upper bound (:func:`facts`): a newer major has every feature
of the newest row (PostgreSQL adds replication commands and settings; the
ones here were never removed) and a page magic of 0, which the writer reads
as "learn it from the first page"; an older one (down to
:data:`OLDEST_SERVER_MAJOR`) has none of the features that came after it.

Sources: ``XLOG_PAGE_MAGIC`` in ``src/include/access/xlog_internal.h`` of
each branch, checked against the first page of a segment each major's
server wrote (``tests/test_pgcluster.py``); the replication commands in
``src/backend/replication/repl_gram.y``; the settings and views in each
major's documentation.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "MajorFacts",
    "NEWEST_TESTED_MAJOR",
    "OLDEST_SERVER_MAJOR",
    "OLDEST_TESTED_MAJOR",
    "TABLE",
    "TESTED_MAJORS",
    "facts",
    "first_major_with",
    "major_of",
]

#: The oldest server walfast streams from: it needs ``SHOW wal_segment_size``
#: on a replication connection, which PostgreSQL 10 added.
OLDEST_SERVER_MAJOR = 10


@dataclass(frozen=True)
class MajorFacts:
    """What a receiver needs to know about one PostgreSQL major."""

    #: The major version (``18``).
    major: int
    #: ``XLOG_PAGE_MAGIC``: the ``xlp_magic`` of every WAL page the server
    #: writes; 0 when not known here (the writer then learns it from the
    #: first page it receives).
    page_magic: int
    #: ``READ_REPLICATION_SLOT`` exists (15+): where a physical slot stands,
    #: pg_receivewal's start position for an empty directory and a slot.
    #: Before 15 both programs start at the server's position instead.
    read_replication_slot: bool
    #: ``CREATE_REPLICATION_SLOT "s" PHYSICAL (RESERVE_WAL)``, the
    #: parenthesised option list (15+); before it, ``... PHYSICAL RESERVE_WAL``.
    parenthesised_slot_options: bool
    #: ``SHOW data_directory_mode`` exists (11+: group access to the data
    #: directory, hence group-readable WAL files).
    data_directory_mode: bool
    #: ``pg_replication_slots.wal_status`` and ``safe_wal_size`` exist (13+).
    slot_wal_status: bool
    #: ``pg_replication_slots.inactive_since`` exists (17+).
    slot_inactive_since: bool
    #: The ``idle_replication_slot_timeout`` setting exists (18+): an idle
    #: slot can be invalidated.
    idle_replication_slot_timeout: bool

    # The major's own pg_receivewal, which walfast-receivewal is compared
    # with; walfast-receivewal always behaves as the newest (README, "Drop-in").

    #: Its command line is the one walfast-receivewal speaks (15+):
    #: ``-Z METHOD[:DETAIL]`` with lz4, ``-s`` and levels checked whole
    #: (option_parse_int), hints prefixed ``hint:``.  Before it: ``-Z 0-9``
    #: (gzip levels) and ``-s`` read with atoi (``-Z lz4`` is level 0: no
    #: compression), hints without the prefix, no ``.lz4`` in its
    #: directory scan.
    receivewal_command_line: bool
    #: Its ``-Z`` knows the ``long`` option (16+), worded as walfast words it.
    receivewal_compress_long: bool
    #: SIGTERM stops it like SIGINT: "received interrupt signal, exiting",
    #: exit 0 (16+).  Before it the signal kills it.
    receivewal_sigterm_exits_0: bool


def _row(major: int, page_magic: int) -> MajorFacts:
    """A row of the table: *major*'s features follow from the first major
    that had each (:data:`_FIRST_MAJOR_WITH`)."""
    has = {name: major >= first for name, first in _FIRST_MAJOR_WITH.items()}
    return MajorFacts(major=major, page_magic=page_magic, **has)


#: The first major that has each feature of :class:`MajorFacts`.
_FIRST_MAJOR_WITH = {
    "read_replication_slot": 15,
    "parenthesised_slot_options": 15,
    "data_directory_mode": 11,
    "slot_wal_status": 13,
    "slot_inactive_since": 17,
    "idle_replication_slot_timeout": 18,
    "receivewal_command_line": 15,
    "receivewal_compress_long": 16,
    "receivewal_sigterm_exits_0": 16,
}

#: One row per major walfast is tested against, oldest first.
TABLE: dict[int, MajorFacts] = {
    14: _row(14, page_magic=0xD10D),
    15: _row(15, page_magic=0xD110),
    16: _row(16, page_magic=0xD113),
    17: _row(17, page_magic=0xD116),
    18: _row(18, page_magic=0xD118),
}

#: The majors walfast is tested against (``make test``, ``make test-matrix``).
TESTED_MAJORS: tuple[int, ...] = tuple(sorted(TABLE))
OLDEST_TESTED_MAJOR = TESTED_MAJORS[0]
#: The newest: what ``walfast-receivewal --version`` reports, since tools
#: such as Barman require a pg_receivewal at least as new as the server.
NEWEST_TESTED_MAJOR = TESTED_MAJORS[-1]


def major_of(server_version: int) -> int:
    """The major of a ``server_version_num`` (libpq's number): 18 for
    180001 (majors 10 and later count in units of 10000)."""
    return server_version // 10000


def facts(major: int) -> MajorFacts:
    """The row for *major*; for a major not in :data:`TABLE`, what walfast
    assumes of it: features by the first major that had each (so a newer
    major has all of the newest row's), and page magic 0 (learned)."""
    row = TABLE.get(major)
    if row is not None:
        return row
    return _row(major, page_magic=0)


def first_major_with(feature: str) -> int:
    """The first major that has *feature* (a boolean field of
    :class:`MajorFacts`, e.g. ``"read_replication_slot"``): for messages."""
    return _FIRST_MAJOR_WITH[feature]
