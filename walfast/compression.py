"""Compressed segment output (``-Z/--compress``): the shared definitions.

pg_receivewal writes ``NAME.gz`` / ``NAME.lz4`` (and ``.gz.partial`` /
``.lz4.partial`` while a segment is incomplete); walfast also writes
``NAME.zst``, which pg_receivewal rejects.  This module holds the
specification the command line produces and the stream consumes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["CompressionSpec", "SUFFIXES"]

Method = Literal["gzip", "lz4", "zstd"]

#: File-name suffix per method, as pg_receivewal names them (zstd: walfast only).
SUFFIXES: dict[str, str] = {"gzip": ".gz", "lz4": ".lz4", "zstd": ".zst"}


@dataclass(frozen=True)
class CompressionSpec:
    """How completed and partial segments are compressed.

    *level* None means the method's default level (as pg_receivewal when no
    level is given).
    """

    method: Method
    level: int | None = None

    @property
    def suffix(self) -> str:
        return SUFFIXES[self.method]
