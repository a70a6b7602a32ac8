"""The throwaway primary, the fixed WAL range every run receives, and the
check that a run's output really covers that range.

The range is made once: a base physical slot reserving WAL is created, a
segment switch gives a segment-aligned ``start``, rows are inserted until
about ``size`` bytes of WAL exist, a second switch gives a segment-aligned
``end``, and the base slot is advanced to ``start``.  Each run gets its own
copy of the base slot (``pg_copy_physical_replication_slot`` copies
``restart_lsn``), so walfast and pg_receivewal both find ``start`` with
READ_REPLICATION_SLOT (before 15, which lacks it, in their directory:
:mod:`benchmarks.e2e.receivers`) and both stop at ``--endpos end``: the same
complete segments, byte for byte the ones in ``pg_wal``.
"""

from __future__ import annotations

import gzip
import shutil
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lz4.frame  # type: ignore[import-untyped]
import zstandard

from walfast import majors
from walfast.waldir.layout import STATE_DIR
from walfast.cluster import Cluster, make_tls_files
from walfast.lsn import format_lsn, parse_lsn, segment_file_name

#: walfast's own state directory in its output directory (not WAL: not checked).
WALFAST_FILES = frozenset({STATE_DIR})

#: File-name suffix of a completed segment, per output kind.
SUFFIX = {"": "", "gzip": ".gz", "lz4": ".lz4", "zstd": ".zst"}

BASE_SLOT = "bench_base"
TRANSPORTS = ("tcp", "unix", "tls")


@dataclass(frozen=True)
class WalRange:
    """[start, end) of WAL, both segment boundaries, on ``timeline``."""

    start: int
    end: int
    timeline: int
    segment_size: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    def segment_names(self) -> list[str]:
        first, stop = self.start // self.segment_size, self.end // self.segment_size
        return [segment_file_name(self.timeline, s, self.segment_size) for s in range(first, stop)]

    def as_dict(self) -> dict[str, Any]:
        return dict(start=format_lsn(self.start), end=format_lsn(self.end), timeline=self.timeline,
                    bytes=self.nbytes, segment_size=self.segment_size,
                    segments=self.nbytes // self.segment_size)


def primary_settings(size: int, crt: Path, key: Path) -> dict[str, Any]:
    """postgresql.conf for the benchmark primary (on top of walfast.cluster's)."""
    max_wal_mb = max(4096, 3 * size // 2**20 + 1024)
    return {
        "shared_buffers": "1GB",
        # no checkpoint may be requested while the range is generated or read
        "max_wal_size": f"{max_wal_mb}MB",
        "checkpoint_timeout": "1h",
        "wal_keep_size": 0,  # the slots keep the range, nothing else
        "autovacuum": False,  # no background WAL or I/O during runs
        "synchronous_commit": "on",
        "ssl": True,
        "ssl_cert_file": str(crt),
        "ssl_key_file": str(key),
        "wal_sender_timeout": "60s",
    }


class Primary:
    """A started :class:`walfast.cluster.Cluster` tuned for the benchmark."""

    def __init__(self, bindir: Path, size: int, wal_segsize_mb: int) -> None:
        self.bindir = bindir
        self.tls_dir, crt, key = make_tls_files(prefix="walfast-e2e-tls-")
        self.cluster = Cluster(bindir, wal_segsize_mb=wal_segsize_mb,
                               settings=primary_settings(size, crt, key))
        #: What walfast.majors says of the server's (and pg_receivewal's) major.
        self.major = majors.facts(self.cluster.major)
        try:
            self.cluster.init()
            self.cluster.start()
        except BaseException:
            self.close()
            raise
        self._slot_seq = 0

    def close(self) -> None:
        self.cluster.cleanup()
        shutil.rmtree(self.tls_dir, ignore_errors=True)

    # ---- connections ------------------------------------------------------ #

    def conninfo(self, transport: str, **extra: Any) -> str:
        """conninfo for a receiver over ``transport`` (tcp, unix or tls).
        Plain TCP says sslmode=disable: libpq's default (prefer) would use
        TLS, since the server has it on."""
        if transport == "tcp":
            return self.cluster.conninfo(via="tcp", sslmode="disable", **extra)
        if transport == "unix":
            return self.cluster.conninfo(via="unix", **extra)
        if transport == "tls":
            return self.cluster.conninfo(via="tcp", sslmode="require", **extra)
        raise ValueError(f"unknown transport {transport!r}")

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        return self.cluster.execute(sql, params)

    # ---- the WAL range ---------------------------------------------------- #

    def make_range(self, size: int, progress: Any = print) -> WalRange:
        """Generate about ``size`` bytes of WAL between two segment switches;
        the base slot keeps it (see the module docstring)."""
        seg = self.cluster.wal_segment_size
        with self.cluster.connect() as conn:
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (BASE_SLOT,))
            conn.execute(
                "CREATE TABLE bench_fill (id bigint, a int, b int, ts timestamptz, payload text)")
            # the switch only happens if something was written since the last one
            conn.execute("INSERT INTO bench_fill VALUES (0, 0, 0, now(), 'start')")
            switch = parse_lsn(conn.execute("SELECT pg_switch_wal()::text").fetchone()[0])
            start = (switch - 1) // seg * seg + seg
            t0 = time.monotonic()
            pos, next_id = start, 1
            # Heap inserts of rows that compress like ordinary data (hex text
            # of different md5s, ~0.5 with lz4), not a repeated constant that
            # any compressor would make vanish.  About 300 bytes of WAL a row.
            while pos - start < size:
                rows = max(1000, min(200_000, (size - (pos - start)) // 300))
                conn.execute(
                    "INSERT INTO bench_fill SELECT g, g %% 1000, (g * 7) %% 100000, "
                    "'2024-01-01'::timestamptz + g * interval '1 second', "
                    "md5(g::text) || md5((g + 1)::text) || md5((g * 3)::text) || md5((g * 5)::text) "
                    "|| md5((g * 11)::text) || md5((g * 13)::text) "
                    "FROM generate_series(%s::bigint, %s::bigint) g",
                    (next_id, next_id + rows - 1))
                next_id += rows
                pos = parse_lsn(conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0])
            switch = parse_lsn(conn.execute("SELECT pg_switch_wal()::text").fetchone()[0])
            end = (switch - 1) // seg * seg + seg
            elapsed = time.monotonic() - t0
            (walfile,), = [conn.execute("SELECT pg_walfile_name(%s::text::pg_lsn)",
                                        (format_lsn(start),)).fetchone()]
            timeline = int(walfile[:8], 16)
            # The table is not needed any more (its WAL stays in pg_wal);
            # dropping it discards its dirty buffers, and the checkpoint
            # writes the rest now rather than during the runs.
            conn.execute("DROP TABLE bench_fill")
            conn.execute("CHECKPOINT")
            conn.execute("SELECT pg_replication_slot_advance(%s, %s::text::pg_lsn)",
                         (BASE_SLOT, format_lsn(start)))
            (restart,), = [conn.execute(
                "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                (BASE_SLOT,)).fetchone()]
            if parse_lsn(restart) != start:
                raise RuntimeError(f"base slot restart_lsn is {restart}, not {format_lsn(start)}")
        rng = WalRange(start, end, timeline, seg)
        progress(f"WAL range {format_lsn(start)} .. {format_lsn(end)}: "
                 f"{rng.nbytes / 1e6:,.0f} MB, {rng.nbytes // seg} segments, "
                 f"generated in {elapsed:.1f} s")
        missing = [n for n in rng.segment_names() if not (self.cluster.pg_wal / n).is_file()]
        if missing:
            raise RuntimeError(f"pg_wal lacks {len(missing)} segment(s) of the range, e.g. {missing[0]}")
        return rng

    def compressibility(self, rng: WalRange) -> dict[str, float]:
        """Compressed/original size of the range's middle segment with lz4
        (default level), gzip level 1 and zstd (default level)."""
        names = rng.segment_names()
        data = (self.cluster.pg_wal / names[len(names) // 2]).read_bytes()
        return {
            "lz4": round(len(lz4.frame.compress(data)) / len(data), 3),
            "gzip1": round(len(zlib.compress(data, 1)) / len(data), 3),
            "zstd": round(len(zstandard.ZstdCompressor().compress(data)) / len(data), 3),
        }

    # ---- per-run slots ---------------------------------------------------- #

    def new_run_slot(self) -> str:
        """A copy of the base slot (restart_lsn = the range's start)."""
        self._slot_seq += 1
        name = f"bench_run_{self._slot_seq}"
        self.execute("SELECT pg_copy_physical_replication_slot(%s, %s)", (BASE_SLOT, name))
        return name

    def slot_active_pid(self, slot: str) -> int | None:
        rows = self.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                            (slot,))
        return rows[0][0] if rows else None

    def drop_slot(self, slot: str, timeout: float = 30) -> None:
        """Drop a run slot once its walsender has gone."""
        deadline = time.monotonic() + timeout
        while self.slot_active_pid(slot) is not None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"slot {slot} still active after {timeout} s")
            time.sleep(0.05)
        self.execute("SELECT pg_drop_replication_slot(%s)", (slot,))

    def drop_base_slot(self) -> None:
        self.execute("SELECT pg_drop_replication_slot(%s) FROM pg_replication_slots "
                     "WHERE slot_name = %s", (BASE_SLOT, BASE_SLOT))

    # ---- checking a run's output ------------------------------------------ #

    def check_output(self, directory: Path, rng: WalRange, method: str) -> tuple[int, str | None]:
        """(bytes of the files, None) if ``directory`` holds exactly the
        range's segments as completed files of kind ``method`` ('' for plain
        segments), else (bytes, what is wrong).  Plain segments must have the
        segment size; the first, middle and last are compared with pg_wal
        byte for byte (decompressed first when compressed)."""
        suffix = SUFFIX[method]
        expected = [n + suffix for n in rng.segment_names()]
        present = sorted(p.name for p in directory.iterdir() if p.name not in WALFAST_FILES)
        total = sum((directory / n).stat().st_size for n in present)
        if present != expected:
            extra = sorted(set(present) - set(expected))
            lacking = sorted(set(expected) - set(present))
            return total, (f"{len(present)} files instead of the {len(expected)} segments of the "
                           f"range; missing {lacking[:3]}, unexpected {extra[:3]}")
        if not method:
            wrong = [n for n in present if (directory / n).stat().st_size != rng.segment_size]
            if wrong:
                return total, f"{wrong[0]} is not {rng.segment_size} bytes"
        for i in sorted({0, len(expected) // 2, len(expected) - 1}):
            name = rng.segment_names()[i]
            mine = _decompress((directory / expected[i]).read_bytes(), method)
            if mine != (self.cluster.pg_wal / name).read_bytes():
                return total, f"{expected[i]} differs from pg_wal/{name}"
        return total, None


def _decompress(data: bytes, method: str) -> bytes:
    if method == "gzip":
        return gzip.decompress(data)
    if method == "lz4":
        return bytes(lz4.frame.decompress(data))
    if method == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data
