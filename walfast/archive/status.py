"""The uploader's status file, ``.walfast/archive-status``: one JSON object
the uploader rewrites (about once a second while something changes) and
``walfast status`` and the metrics read.  Not a record of what is archived
(that is ``.walfast/archived``, fsynced): only what an operator watches --
upload lag (bytes, segments, the oldest waiting file) and failures.

Kept free of heavy imports: ``walfast status`` reads it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from walfast.waldir import layout

__all__ = ["read_archive_status", "write_archive_status"]


def write_archive_status(directory: Path, status: dict[str, Any], *, mode: int) -> None:
    from walfast.waldir.durable import write_file_durably

    # Not fsynced: a status, rewritten all the time, lost in a crash at no cost.
    write_file_durably(layout.state_dir(directory), layout.ARCHIVE_STATUS,
                       json.dumps(status).encode(), sync=False, mode=mode)


def read_archive_status(directory: str | Path) -> dict[str, Any] | None:
    """The status the uploader of *directory* wrote last, None when it does
    not archive (or never did)."""
    try:
        status = json.loads(layout.state_file(directory, layout.ARCHIVE_STATUS).read_text())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def describe_archive(status: dict[str, Any], now: float | None = None) -> str:
    """One line for ``walfast status``."""
    now = time.time() if now is None else now
    text = f"{status.get('archive')}: holds everything up to {status.get('archived_lsn')}"
    pending = int(status.get("pending_files", 0))
    if pending:
        oldest = float(status.get("oldest_pending_since") or now)
        text += (f"; {pending} files waiting ({int(status.get('pending_bytes', 0))} bytes, "
                 f"{int(status.get('pending_segments', 0))} segments, the oldest for "
                 f"{max(0.0, now - oldest):.0f} s)")
    else:
        text += "; nothing waiting"
    if status.get("failing_since"):
        text += f"; failing since {max(0.0, now - float(status['failing_since'])):.0f} s ago: " \
                f"{status.get('last_error')}"
    return text
