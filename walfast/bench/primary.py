"""Where the benchmarked WAL comes from, the fixed range of it that every
run receives, the slots that pin it, and the check that a run's output is
exactly that range.

Two sources, one interface (:class:`Source`):

* :class:`Primary`: a throwaway primary (:mod:`walfast.cluster`) that
  writes the range itself.  A base physical slot reserving WAL is created, a
  segment switch gives a segment-aligned ``start``, rows are inserted until
  about ``size`` bytes of WAL exist, a second switch gives a segment-aligned
  ``end``, and the base slot is advanced to ``start``.  A run's output is
  compared with the primary's own ``pg_wal``.
* :class:`ExternalPrimary`: a real server (``walfast bench -d CONNSTR``),
  to which nothing is written.  A temporary physical slot reserving WAL is
  created on the benchmark's own connection (or copied from an existing
  slot, ``-S``): its ``restart_lsn``, rounded down to its segment, is
  ``start``; the benchmark waits until the server's own traffic has
  produced ``size`` bytes past it, to a segment boundary ``end``.  Being
  temporary, the base slot goes with that connection, even if the
  benchmark is killed.  A run's output must pass the engine's page-header
  checks (:class:`walfast._core.PageCheck`) and agree with what the first
  run received, byte for byte (SHA-256).

Each run gets its own copy of the base slot
(``pg_copy_physical_replication_slot``, which copies ``restart_lsn``), so
walfast and pg_receivewal both find ``start`` with READ_REPLICATION_SLOT
(before 15, which lacks it, in their directory: :mod:`walfast.bench.receivers`)
and both stop at ``--endpos end - 1``: the same complete segments.  The copy
is dropped after the run, and every copy still there when the benchmark
ends (an interrupted run's) is dropped by :meth:`Source.close`.
Creating, copying and dropping physical slots writes no WAL.
"""

from __future__ import annotations

import gzip
import hashlib
import ipaddress
import os
import re
import shutil
import subprocess
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lz4.frame  # type: ignore[import-untyped]
import psycopg
import zstandard
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from walfast import majors
from walfast.bench.options import TRANSPORTS
from walfast.cluster import Cluster, find_bindir, make_tls_files
from walfast.lsn import format_lsn, parse_lsn, segment_file_name, segment_start
from walfast.waldir.layout import STATE_DIR

__all__ = [
    "BASE_SLOT", "SUFFIX", "TRANSPORTS", "WALFAST_FILES", "ExternalPrimary", "Primary",
    "SetupError", "Source", "WalRange", "find_receivewal", "primary_settings",
    "redact_conninfo",
]

#: walfast's own state directory in its output directory (not WAL: not checked).
WALFAST_FILES = frozenset({STATE_DIR})

#: File-name suffix of a completed segment, per output kind.
SUFFIX = {"": "", "gzip": ".gz", "lz4": ".lz4", "zstd": ".zst"}

#: The throwaway primary's base slot (its run slots are ``bench_run_N``).
BASE_SLOT = "bench_base"

Say = Callable[[str], None]


class SetupError(Exception):
    """The benchmark cannot start (or go on): its message says why and
    what to do.  Nothing of the benchmark is left on the server."""


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


def redact_conninfo(conninfo: str) -> str:
    """*conninfo* without its password, for results files and messages."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "(a connection string that does not parse)"
    if "password" not in params:
        return conninfo
    params["password"] = "********"
    return make_conninfo("", **params)


_VERSION_RE = re.compile(r"\(PostgreSQL\) (\d+)")


def _receivewal_major(path: Path, env: dict[str, str] | None = None) -> int | None:
    try:
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True,
                             timeout=30, env=env).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = _VERSION_RE.search(out)
    return int(m.group(1)) if m else None


def find_receivewal(major: int) -> Path | None:
    """pg_receivewal of PostgreSQL *major* (the server's own): the server
    binaries of that major (:func:`walfast.cluster.find_bindir`: Debian's
    or ``scripts/fetch-postgresql``'s; ``PG_BINDIR`` when it is of that
    major), else ``pg_receivewal`` on the PATH if it is of that major."""
    from walfast.cluster import tool_env

    candidates = [find_bindir(major=major)]
    try:
        candidates.append(find_bindir())
    except ValueError:              # PG_MAJOR that is not a major
        pass
    for bindir in candidates:
        if bindir is None:
            continue
        path = bindir / "pg_receivewal"
        if os.access(path, os.X_OK) and _receivewal_major(path, tool_env(bindir)) == major:
            return path
    which = shutil.which("pg_receivewal")
    if which and _receivewal_major(Path(which)) == major:
        return Path(which)
    return None


def primary_settings(size: int, crt: Path, key: Path) -> dict[str, Any]:
    """postgresql.conf for the throwaway primary (on top of walfast.cluster's)."""
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


def _decompress(data: bytes, method: str) -> bytes:
    if method == "gzip":
        return gzip.decompress(data)
    if method == "lz4":
        return bytes(lz4.frame.decompress(data))
    if method == "zstd":
        out: bytes = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        return out
    return data


def compressed_fractions(data: bytes) -> dict[str, float]:
    """Compressed/original size of *data* with lz4 (default level), gzip
    level 1 and zstd (default level)."""
    return {
        "lz4": round(len(lz4.frame.compress(data)) / len(data), 3),
        "gzip1": round(len(zlib.compress(data, 1)) / len(data), 3),
        "zstd": round(len(zstandard.ZstdCompressor().compress(data)) / len(data), 3),
    }


class Source:
    """What the runs need of the server the WAL comes from: connections,
    the run slots, where pg_receivewal is, whose walsender CPU can be read,
    and the check of a run's output.  :class:`Primary` and
    :class:`ExternalPrimary` fill in the rest."""

    #: ``embedded`` (a throwaway primary) or ``external`` (``-d``)
    kind = ""
    #: What walfast.majors says of the server's (and pg_receivewal's) major.
    major: majors.MajorFacts
    #: The server's pg_receivewal; None when none of its major was found.
    receivewal: Path | None = None
    #: Why there is no pg_receivewal (when there is none).
    receivewal_missing = ""

    def __init__(self, slot_prefix: str) -> None:
        self.slot_prefix = slot_prefix
        self.base_slot = f"{slot_prefix}base"
        self._slot_seq = 0
        #: run slots made and not dropped yet
        self._run_slots: set[str] = set()
        #: the middle segment of the first run that passed its checks
        self._middle: bytes | None = None

    # ---- to be filled in -------------------------------------------------- #

    def connect(self) -> psycopg.Connection[Any]:
        """A new SQL connection (autocommit) to the server."""
        raise NotImplementedError

    def conninfo(self, transport: str, **extra: Any) -> str:
        """The connection string a receiver gets with ``-d``."""
        raise NotImplementedError

    def transports(self) -> tuple[str, ...]:
        """The transports the runs can use."""
        raise NotImplementedError

    def receiver_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment receivers run with."""
        raise NotImplementedError

    def compare_segment(self, rng: WalRange, name: str, data: bytes) -> str | None:
        """None if *data* (a segment's whole content, decompressed) is
        segment *name* of the range, else what is wrong."""
        raise NotImplementedError

    def walsender_is_local(self, pid: int) -> bool:
        """Whether this machine's /proc shows the walsender *pid* (its CPU
        time can then be read)."""
        raise NotImplementedError

    def compressibility(self, rng: WalRange) -> dict[str, float]:
        """:func:`compressed_fractions` of the range's middle segment ({}
        when unknown)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What the results file records of the source (no password)."""
        raise NotImplementedError

    def close(self) -> None:
        """Drop every slot of the benchmark still there; release the server."""
        raise NotImplementedError

    # ---- common ------------------------------------------------------------ #

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement on a fresh connection; return all rows."""
        with self.connect() as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description is not None else []

    def redact(self, argv: list[str]) -> list[str]:
        """*argv* as the results file records it: no password."""
        return argv

    def new_run_slot(self) -> str:
        """A persistent copy of the base slot (restart_lsn = the range's start)."""
        self._slot_seq += 1
        name = f"{self.slot_prefix}run_{self._slot_seq}"
        self.execute("SELECT pg_copy_physical_replication_slot(%s, %s, false)",
                     (self.base_slot, name))
        self._run_slots.add(name)
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
        self.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                     "WHERE slot_name = %s", (slot,))
        self._run_slots.discard(slot)

    def _drop_run_slots(self) -> list[str]:
        """Drop the run slots still there (an interrupted run's): their
        walsender is asked to stop first.  Returns what could not be dropped."""
        left = []
        for slot in sorted(self._run_slots):
            try:
                self.execute("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                             "WHERE slot_name = %s AND active_pid IS NOT NULL", (slot,))
                self.drop_slot(slot, timeout=10)
            except (psycopg.Error, RuntimeError) as exc:
                left.append(f"{slot} ({exc})")
        return left

    def check_output(self, directory: Path, rng: WalRange, method: str) -> tuple[int, str | None]:
        """(bytes of the files, None) if *directory* holds exactly the
        range's segments as completed files of kind *method* ('' for plain
        segments), else (bytes, what is wrong).  Plain segments must have the
        segment size; the first, middle and last are checked with
        :meth:`compare_segment` (decompressed first when compressed)."""
        suffix = SUFFIX[method]
        names = rng.segment_names()
        expected = [n + suffix for n in names]
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
        middle = len(expected) // 2
        for i in sorted({0, middle, len(expected) - 1}):
            data = _decompress((directory / expected[i]).read_bytes(), method)
            problem = self.compare_segment(rng, names[i], data)
            if problem is not None:
                return total, f"{expected[i]}: {problem}"
            if i == middle and self._middle is None:
                self._middle = data
        return total, None


# --------------------------------------------------------------------------- #
# the throwaway primary
# --------------------------------------------------------------------------- #

class Primary(Source):
    """A started :class:`walfast.cluster.Cluster` tuned for the benchmark
    (:func:`primary_settings`): it writes the range itself
    (:meth:`make_range`)."""

    kind = "embedded"

    def __init__(self, bindir: Path, size: int, wal_segsize_mb: int) -> None:
        super().__init__("bench_")
        self.bindir = bindir
        self.tls_dir, crt, key = make_tls_files(prefix="walfast-bench-tls-")
        self.cluster = Cluster(bindir, wal_segsize_mb=wal_segsize_mb,
                               settings=primary_settings(size, crt, key))
        try:
            self.major = majors.facts(self.cluster.major)
            receivewal = bindir / "pg_receivewal"
            if os.access(receivewal, os.X_OK):
                self.receivewal = receivewal
            else:
                self.receivewal_missing = f"no pg_receivewal in {bindir}"
            self.cluster.init()
            self.cluster.start()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.cluster.cleanup()
        shutil.rmtree(self.tls_dir, ignore_errors=True)

    def connect(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] = self.cluster.connect()
        return conn

    def transports(self) -> tuple[str, ...]:
        return TRANSPORTS

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

    def receiver_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """The caller's environment without the PG* variables that could
        make a receiver talk to some other server."""
        from walfast.bench.receivers import clean_env

        return clean_env() if base is None else dict(base)

    def walsender_is_local(self, pid: int) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        return dict(kind=self.kind, server=f"throwaway primary on 127.0.0.1:{self.cluster.port}",
                    major=self.major.major)

    def settings(self) -> dict[str, str]:
        """The primary's postgresql.conf settings (TLS files left out)."""
        return {k: ({True: "on", False: "off"}[v] if isinstance(v, bool) else str(v))
                for k, v in self.cluster.settings().items() if not k.startswith("ssl_")}

    # ---- the WAL range ---------------------------------------------------- #

    def make_range(self, size: int, progress: Say = print) -> WalRange:
        """Generate about ``size`` bytes of WAL between two segment switches;
        the base slot keeps it (see the module docstring)."""
        seg = self.cluster.wal_segment_size
        with self.cluster.connect() as conn:
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true)",
                         (self.base_slot,))
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
                    "INSERT INTO bench_fill SELECT g, g %% 1000, (g * 7) %% 99991, "
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
                         (self.base_slot, format_lsn(start)))
            (restart,), = [conn.execute(
                "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
                (self.base_slot,)).fetchone()]
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
        return compressed_fractions((self.cluster.pg_wal / names[len(names) // 2]).read_bytes())

    def compare_segment(self, rng: WalRange, name: str, data: bytes) -> str | None:
        if data != (self.cluster.pg_wal / name).read_bytes():
            return f"differs from pg_wal/{name}"
        return None

    def drop_base_slot(self) -> None:
        self.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                     "WHERE slot_name = %s", (self.base_slot,))


# --------------------------------------------------------------------------- #
# a real server
# --------------------------------------------------------------------------- #

#: Settings of a real server recorded in the results file.
_RECORDED_SETTINGS = (
    "server_version", "wal_segment_size", "wal_block_size", "wal_level", "wal_compression",
    "max_wal_senders", "max_replication_slots", "max_slot_wal_keep_size", "wal_sender_timeout",
    "ssl", "synchronous_commit", "synchronous_standby_names", "shared_buffers",
)


class ExternalPrimary(Source):
    """A real server, ``walfast bench -d CONNSTR``: nothing is written to it
    (see the module docstring).  *conninfo* is given to the receivers as
    it is, with the caller's environment (``PGPASSWORD``, ``.pgpass``,
    ``PGSSLMODE``...); the benchmark's own SQL connection goes to the
    database it names, else ``postgres``.  It needs a role with REPLICATION
    that may also connect to that database (the slot functions are SQL),
    and one free replication slot and walsender besides the base slot."""

    kind = "external"

    def __init__(self, conninfo: str, say: Say = print) -> None:
        super().__init__(f"walfast_bench_{os.getpid()}_")
        self.dsn = conninfo
        self._say = say
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            raise SetupError(f"invalid connection string: {exc}") from None
        extra = {}
        if "dbname" not in params and not os.environ.get("PGDATABASE"):
            extra["dbname"] = "postgres"
        self._sql_dsn = make_conninfo(conninfo, **extra)
        self._conn: psycopg.Connection[Any] | None = None
        self._pinned_from: str | None = None
        self._digests: dict[str, str] = {}
        self.waited_s = 0.0
        try:
            self._conn = psycopg.connect(self._sql_dsn, autocommit=True,
                                         fallback_application_name="walfast bench")
        except psycopg.Error as exc:
            raise SetupError(f"cannot connect to {redact_conninfo(self._sql_dsn)}: "
                             f"{str(exc).strip()}") from None
        try:
            row = self._conn.execute(
                "SELECT current_setting('server_version_num')::int, "
                "(SELECT setting::bigint * CASE unit WHEN '8kB' THEN 8192 ELSE 1 END "
                "FROM pg_settings WHERE name = 'wal_segment_size'), "
                "current_setting('wal_block_size')::int, "
                "inet_server_addr()::text, pg_is_in_recovery(), "
                "(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), "
                "(SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user)"
            ).fetchone()
            assert row is not None
            version, self.segment_size, self.block_size, addr, self.in_recovery, ssl, can = row
            self.major = majors.facts(majors.major_of(version))
            if not can:
                raise SetupError("the role has no REPLICATION attribute: the receivers need it "
                                 "(ALTER ROLE ... REPLICATION)")
            #: unix socket or loopback: the walsender may be in this machine's /proc
            self.local = addr is None or ipaddress.ip_address(addr.split("/")[0]).is_loopback
            self.transport = "unix" if addr is None else ("tls" if ssl else "tcp")
            (version_text,), = self._conn.execute("SHOW server_version").fetchall()
            self.server_version = str(version_text)
            self._settings = {name: (setting if unit is None else f"{setting} {unit}")
                              for name, setting, unit in self._conn.execute(
                                  "SELECT name, setting, unit FROM pg_settings "
                                  "WHERE name = ANY(%s)", (list(_RECORDED_SETTINGS),))}
            self.system_identifier, self.timeline = self._identify()
            self.receivewal = find_receivewal(self.major.major)
            if self.receivewal is None:
                self.receivewal_missing = (
                    f"no pg_receivewal of PostgreSQL {self.major.major} found (install that "
                    f"major's client programs, put its pg_receivewal on PATH or set PG_BINDIR, "
                    f"or scripts/fetch-postgresql {self.major.major})")
        except BaseException:
            self.close()
            raise
        self._local_pids: dict[int, bool] = {}

    def _identify(self) -> tuple[int, int]:
        """IDENTIFY_SYSTEM over a replication connection, as a receiver
        makes it: the system identifier and the timeline."""
        try:
            with psycopg.connect(make_conninfo(self.dsn, replication="true"), autocommit=True,
                                 fallback_application_name="walfast bench") as rconn:
                row = rconn.execute("IDENTIFY_SYSTEM").fetchone()
        except psycopg.Error as exc:
            raise SetupError(f"cannot open a replication connection: {str(exc).strip()} "
                             "(pg_hba.conf needs a 'replication' line for this role and host)"
                             ) from None
        assert row is not None

        def text(v: Any) -> str:
            return v.decode() if isinstance(v, bytes) else str(v)
        return int(text(row[0])), int(text(row[1]))

    # ---- Source ----------------------------------------------------------- #

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self._sql_dsn, autocommit=True,
                               fallback_application_name="walfast bench")

    def transports(self) -> tuple[str, ...]:
        return (self.transport,)

    def conninfo(self, transport: str, **extra: Any) -> str:
        return make_conninfo(self.dsn, **extra) if extra else self.dsn

    def receiver_env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        env["PG_COLOR"] = "never"
        return env

    def redact(self, argv: list[str]) -> list[str]:
        """The connection string (also inside ``--dbname=...``) without its
        password."""
        hidden = redact_conninfo(self.dsn)
        return [a.replace(self.dsn, hidden) if self.dsn else a for a in argv]

    def walsender_is_local(self, pid: int) -> bool:
        """A server reached over a unix socket or loopback whose walsender
        *pid* this machine's /proc shows as a walsender (not some process
        of another pid namespace, a container's)."""
        if not self.local:
            return False
        known = self._local_pids.get(pid)
        if known is None:
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                return False         # not (yet) visible: ask again later
            known = self._local_pids[pid] = b"walsender" in cmdline
        return known

    def compare_segment(self, rng: WalRange, name: str, data: bytes) -> str | None:
        """The engine's page-header checks over the whole segment (its own
        LSN in every header, the timeline, this server's system identifier
        and page magic), then the same bytes as every earlier run got."""
        from walfast import _core

        segno = rng.start // rng.segment_size + rng.segment_names().index(name)
        check = _core.PageCheck(lsn=segno * rng.segment_size, timeline=rng.timeline,
                                segment_size=rng.segment_size, page_size=self.block_size,
                                system_identifier=self.system_identifier,
                                page_magic=self.major.page_magic)
        if check.check(data) != len(data):
            return f"not WAL of this server: {check.error}"
        digest = hashlib.sha256(data).hexdigest()
        first = self._digests.setdefault(name, digest)
        if digest != first:
            return "differs from what the first run received (SHA-256)"
        return None

    def compressibility(self, rng: WalRange) -> dict[str, float]:
        return {} if self._middle is None else compressed_fractions(self._middle)

    def describe(self) -> dict[str, Any]:
        return dict(kind=self.kind, conninfo=redact_conninfo(self.dsn),
                    server=self.server_version, major=self.major.major,
                    system_identifier=str(self.system_identifier), in_recovery=self.in_recovery,
                    transport=self.transport, local=self.local,
                    slot=self._pinned_from, base_slot=self.base_slot,
                    waited_s=round(self.waited_s, 1))

    def settings(self) -> dict[str, str]:
        return dict(self._settings)

    def close(self) -> None:
        left = self._drop_run_slots() if self._conn is not None else []
        if self._conn is not None:
            try:
                self._conn.execute("SELECT pg_drop_replication_slot(slot_name) "
                                   "FROM pg_replication_slots WHERE slot_name = %s",
                                   (self.base_slot,))
            except psycopg.Error:
                pass            # temporary: it goes with the connection anyway
            self._conn.close()
            self._conn = None
        if left:
            self._say("could not drop the replication slot(s) " + ", ".join(left)
                      + ": drop them with pg_drop_replication_slot()")

    # ---- the WAL range ---------------------------------------------------- #

    def _position(self) -> int:
        """How far the server can stream: its flushed WAL (on a standby,
        what it received or replayed)."""
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT CASE WHEN pg_is_in_recovery() THEN greatest(pg_last_wal_receive_lsn(), "
            "pg_last_wal_replay_lsn()) ELSE pg_current_wal_flush_lsn() END::text").fetchone()
        assert row is not None
        return parse_lsn(row[0] or "0/0")

    def pin_range(self, size: int, slot: str | None, max_wait: float,
                  progress: Say = print) -> WalRange:
        """Pin the range (the module docstring): a temporary slot reserving
        WAL, or a copy of *slot*; then wait (at most *max_wait* seconds)
        until the server has ``size`` bytes past its start, rounded up to a
        whole segment."""
        assert self._conn is not None
        seg = self.segment_size
        try:
            if slot is not None:
                row = self._conn.execute(
                    "SELECT slot_type, restart_lsn::text FROM pg_replication_slots "
                    "WHERE slot_name = %s", (slot,)).fetchone()
                if row is None:
                    raise SetupError(f'replication slot "{slot}" does not exist')
                if row[0] != "physical":
                    raise SetupError(f'replication slot "{slot}" is a {row[0]} slot, '
                                     "not a physical one")
                if row[1] is None:
                    raise SetupError(f'replication slot "{slot}" reserves no WAL (restart_lsn '
                                     "is NULL: made without reserving WAL and never used)")
                self._conn.execute("SELECT pg_copy_physical_replication_slot(%s, %s, true)",
                                   (slot, self.base_slot))
                self._pinned_from = slot
            else:
                self._conn.execute("SELECT pg_create_physical_replication_slot(%s, true, true)",
                                   (self.base_slot,))
        except psycopg.Error as exc:
            raise SetupError(f"cannot make the benchmark's slot: {str(exc).strip()}") from None
        row = self._conn.execute("SELECT restart_lsn::text FROM pg_replication_slots "
                                 "WHERE slot_name = %s", (self.base_slot,)).fetchone()
        assert row is not None and row[0] is not None
        start = segment_start(parse_lsn(row[0]), seg)
        end = start + -(-size // seg) * seg
        where = f'copy of slot "{slot}"' if slot else "new slot"
        progress(f"pinned WAL from {format_lsn(start)} with a temporary {where} "
                 f"({self.base_slot}); the range ends at {format_lsn(end)} "
                 f"({(end - start) / 1e6:,.0f} MB, {(end - start) // seg} segments)")
        t0 = next_report = time.monotonic()
        pos0 = pos = self._position()
        while pos < end:
            now = time.monotonic()
            if now - t0 > max_wait:
                raise SetupError(
                    f"the server wrote only {max(0, pos - start) / 1e6:,.0f} MB past "
                    f"{format_lsn(start)} in {max_wait:.0f} s, not the "
                    f"{(end - start) / 1e6:,.0f} MB asked: use a smaller --size, a longer "
                    "--max-wait, or an existing slot further behind (-S)")
            if now >= next_report:
                rate = (pos - pos0) / (now - t0) if now > t0 else 0.0
                eta = f", about {(end - pos) / rate:,.0f} s to go" if rate > 0 else ""
                progress(f"waiting for the server's own traffic: {max(0, pos - start) / 1e6:,.0f}"
                         f" of {(end - start) / 1e6:,.0f} MB ({rate / 1e6:,.2f} MB/s{eta})")
                next_report = now + 10
            time.sleep(0.5)
            pos = self._position()
        self.waited_s = time.monotonic() - t0
        return WalRange(start, end, self.timeline, seg)
