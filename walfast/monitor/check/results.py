"""What an item of ``walfast check`` is, and the limits it is judged by.

:class:`CheckResult` (one item: status, one line, the measured values),
:class:`Status` (the Nagios exit codes), :class:`Thresholds` and the
formatting every item shares.  No I/O.
"""

from __future__ import annotations

import datetime
import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from walfast.cli.usage import parse_size
from walfast.errors import libpq_error_text

class Status(enum.IntEnum):
    """An item's status; its value is the Nagios exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class CheckResult:
    """One item: its status, one line saying what is wrong and what to do,
    and the values measured (JSON-ready).  *checked* is False for an item
    that could not be evaluated (its status is then WARNING: "not checked"
    is never OK)."""

    name: str
    status: Status
    detail: str
    values: dict[str, Any] = field(default_factory=dict)
    checked: bool = True

    def line(self) -> str:
        """The human form, as ``barman check`` prints an item."""
        return f"\t{self.name}: {self.status.name} ({self.detail})"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.name, "checked": self.checked,
                "detail": self.detail, "values": self.values}


def overall(results: Sequence[CheckResult]) -> Status:
    """The worst status of *results* (OK for none)."""
    return max((r.status for r in results), default=Status.OK)


def not_checked(name: str, why: str) -> CheckResult:
    return CheckResult(name, Status.WARNING, f"not checked: {why}", checked=False)


# --------------------------------------------------------------------------- #
# thresholds
# --------------------------------------------------------------------------- #

_PERCENT_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*%\s*")


@dataclass(frozen=True)
class SizeLimit:
    """A free-space threshold: bytes, or a percentage of the file system."""

    amount: float
    percent: bool = False

    @classmethod
    def parse(cls, text: str) -> SizeLimit:
        m = _PERCENT_RE.fullmatch(text)
        if m is not None:
            pct = float(m.group(1))
            if pct > 100:
                raise ValueError(f'invalid percentage "{text}": at most 100 %')
            return cls(pct, percent=True)
        return cls(parse_size(text))

    def bytes_of(self, total: int) -> int:
        """The limit in bytes on a file system of *total* bytes."""
        return int(total * self.amount / 100) if self.percent else int(self.amount)


@dataclass(frozen=True)
class Thresholds:
    """The limits the items are judged by.  Sizes left None default to
    multiples of the WAL segment size, known only once the server (or the
    directory) has told it: see the three methods."""

    warning_free: SizeLimit | None = None
    critical_free: SizeLimit | None = None
    warning_silent: float = 60.0
    critical_silent: float = 300.0
    warning_behind: int | None = None
    critical_behind: int | None = None
    warning_safe_wal: int | None = None

    def free_limits(self, segment_size: int, total: int) -> tuple[int, int]:
        """(warning, critical) free bytes on a file system of *total* bytes.

        Defaults: CRITICAL below one segment plus 1 MB (the receiver
        preallocates each new segment file whole, and writes small state
        and history files besides), WARNING below 5 % of the file system
        but at least 10 segments."""
        critical = (self.critical_free.bytes_of(total) if self.critical_free is not None
                    else segment_size + (1 << 20))
        warning = (self.warning_free.bytes_of(total) if self.warning_free is not None
                   else max(10 * segment_size, total * 5 // 100))
        return warning, critical

    def behind_limits(self, segment_size: int) -> tuple[int, int]:
        """(warning, critical) bytes behind.  Defaults 2 and 8 segments: a
        receiver without --synchronous flushes at segment ends, so up to one
        segment behind is normal."""
        return (self.warning_behind if self.warning_behind is not None else 2 * segment_size,
                self.critical_behind if self.critical_behind is not None
                else 8 * segment_size)

    def safe_wal_limit(self, segment_size: int) -> int:
        """WARNING when a slot's safe_wal_size is below this (default 4 segments)."""
        return self.warning_safe_wal if self.warning_safe_wal is not None else 4 * segment_size


# --------------------------------------------------------------------------- #
# formatting helpers
# --------------------------------------------------------------------------- #

def one_line(text: str) -> str:
    """A (libpq) message on one line: its lines joined with "; ", runs of
    blanks (``FATAL:  msg``) made one."""
    lines = [" ".join(line.split()) for line in str(text).splitlines()]
    return "; ".join(line for line in lines if line)


def libpq_message(exc: BaseException) -> str:
    """libpq's words for a failed connection, on one line."""
    return one_line(libpq_error_text(exc)) or type(exc).__name__


def seconds_text(s: float) -> str:
    if s < 100:
        return f"{s:.1f} s"
    if s < 2 * 3600:
        return f"{s:.0f} s"
    if s < 2 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def segments_text(n: int, segment_size: int) -> str:
    k = n / segment_size
    return "1 segment" if k == 1 else f"{k:.0f} segments" if k == int(k) else f"{k:.1f} segments"


def utc_text(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


