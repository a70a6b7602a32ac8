"""pytest wiring for walfast's microbenchmarks (``benchmarks/``).

These files are never collected by the test run (``testpaths = ["tests"]``);
run them by path, see benchmarks/README.md.

Sections:
  * constants and the synthetic stream (session fixture ``stream``)
  * output directories on the real disk (``out_dirs``)
  * ``engine_bench``: a wrapper around pytest-benchmark's ``benchmark``
    fixture that runs ``benchmark.pedantic`` and records MB/s, messages/s and
    CPU seconds per GB in ``extra_info``
  * report hooks: machine facts in the header and in the JSON's machine_info,
    a summary table (with the ratio to the same run's memcpy) at the end
"""

from __future__ import annotations

import dataclasses
import os
import platform
import resource
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

import walfast
# The synthetic-data helpers live with the tests; import them, don't copy them.
from tests.helpers import wal_synth

# ------------------------------------------------------------- constants --

MiB = 1 << 20
KiB = 1 << 10
MB = 1_000_000                      # MB/s in the reports are 10**6 bytes/s
GB = 1_000_000_000

SEGMENT_SIZE = 16 * MiB
# Total WAL per round.  WALFAST_BENCH_WAL_MIB shrinks it for a quick smoke run
# (must be a multiple of the 16 MiB segment size).
WAL_BYTES = int(os.environ.get("WALFAST_BENCH_WAL_MIB", "256")) * MiB
START_LSN = 0x1_0000_0000           # segment 000000010000000100000000
MSG_SIZE = wal_synth.MAX_SEND_SIZE  # 128 KiB: walsender's MAX_SEND_SIZE
KEEPALIVE_EVERY = 64                # one keepalive after every 64 XLogData
COPY_CHUNK = 16 * MiB               # np.copyto granularity in the memcpy group
SEED = 20240501

assert WAL_BYTES % SEGMENT_SIZE == 0 and WAL_BYTES > 0


# ---------------------------------------------------- the synthetic stream --

@dataclasses.dataclass(frozen=True)
class WalStream:
    """Deterministic WAL and the replication stream carrying it."""

    start_lsn: int
    end_lsn: int
    segment_size: int
    wal: bytes                  # the WAL bytes, valid page headers
    wal_array: np.ndarray       # the same bytes as a read-only uint8 array
    payloads: list[bytes]       # CopyData payloads ('w' XLogData, 'k' keepalive)
    n_xlogdata: int
    n_keepalive: int

    @property
    def wal_bytes(self) -> int:
        return len(self.wal)

    @property
    def n_messages(self) -> int:
        return self.n_xlogdata + self.n_keepalive

    @property
    def n_segments(self) -> int:
        return len(self.wal) // self.segment_size

    def writer(self, directory, **kw) -> walfast.SegmentWriter:
        return walfast.SegmentWriter(
            directory, timeline=1, start_lsn=self.start_lsn,
            segment_size=self.segment_size, **kw)


def build_stream(wal_bytes: int = WAL_BYTES, seed: int = SEED) -> WalStream:
    wal = wal_synth.make_wal(START_LSN, wal_bytes, segment_size=SEGMENT_SIZE, seed=seed)
    payloads: list[bytes] = []
    n_x = n_k = 0
    for off in range(0, wal_bytes, MSG_SIZE):
        chunk = wal[off:off + MSG_SIZE]
        payloads.append(wal_synth.xlogdata(START_LSN + off, chunk))
        n_x += 1
        if n_x % KEEPALIVE_EVERY == 0:
            payloads.append(wal_synth.keepalive(START_LSN + off + len(chunk)))
            n_k += 1
    arr = np.frombuffer(wal, dtype=np.uint8)
    return WalStream(START_LSN, START_LSN + wal_bytes, SEGMENT_SIZE, wal, arr,
                     payloads, n_x, n_k)


@pytest.fixture(scope="session")
def stream() -> WalStream:
    """256 MiB of WAL (16 MiB segments, fixed seed) as 128 KiB XLogData
    messages with a keepalive after every 64; built once per session."""
    return build_stream()


# ------------------------------------------------------ output directories --

def fs_type(path: str) -> str:
    """Filesystem type of *path* (longest mount point prefix in mountinfo)."""
    path = os.path.realpath(path)
    best, best_type = "", "unknown"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                mnt = left.split()[4].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, best_type = mnt, f"{right.split()[0]} ({right.split()[1]} on {mnt})"
    except OSError:
        pass
    return best_type


def bench_base_dir() -> str:
    """Where output directories go: $WALFAST_BENCH_DIR, else /var/tmp (which,
    unlike /tmp on many systems, is on disk, not tmpfs)."""
    return os.environ.get("WALFAST_BENCH_DIR") or "/var/tmp"


class OutDirs:
    """Fresh output directories on the real disk, one per benchmark round."""

    def __init__(self, base: str):
        os.makedirs(base, exist_ok=True)
        self.root = tempfile.mkdtemp(prefix="walfast-bench-", dir=base)
        self._n = 0

    def new(self) -> str:
        self._n += 1
        path = os.path.join(self.root, f"round-{self._n:04d}")
        os.mkdir(path)
        return path

    @staticmethod
    def remove(path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def out_dirs():
    """Factory of fresh per-round directories (``new()``, ``remove(path)``)
    under one session directory on disk; everything is removed at the end."""
    base = bench_base_dir()
    if fs_type(base).split()[0] in ("tmpfs", "ramfs") and not os.environ.get("WALFAST_BENCH_ALLOW_TMPFS"):
        pytest.exit(f"{base} is on {fs_type(base)}: set WALFAST_BENCH_DIR to a directory on "
                    "disk (or WALFAST_BENCH_ALLOW_TMPFS=1 to measure tmpfs on purpose)",
                    returncode=2)
    dirs = OutDirs(base)
    yield dirs
    dirs.cleanup()


# --------------------------------------------------- the benchmark wrapper --

_RESULTS: list[dict] = []


def _cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class EngineBench:
    """Wraps pytest-benchmark's fixture: one ``pedantic`` run with per-round
    setup/teardown (iterations=1) and throughput figures in extra_info.

    CPU time (user+sys of this process, from getrusage) is taken right after
    setup and right before teardown, so it covers the timed call only.  Work
    the kernel does in its own threads (writeback of msync'ed pages) is not
    in it.
    """

    def __init__(self, benchmark, name: str):
        self.benchmark = benchmark
        self.name = name

    def __call__(self, target, *, setup=None, teardown=None, rounds: int, warmup_rounds: int = 1,
                 nbytes: int, nmsgs: int | None = None, **info):
        cpu: list[float] = []
        t0 = [0.0]

        def _setup():
            r = setup() if setup is not None else None
            t0[0] = _cpu_seconds()
            return r if r is not None else ((), {})

        def _teardown(*args, **kwargs):
            cpu.append(_cpu_seconds() - t0[0])
            if teardown is not None:
                teardown(*args, **kwargs)

        result = self.benchmark.pedantic(target, setup=_setup, teardown=_teardown, rounds=rounds,
                                         warmup_rounds=warmup_rounds, iterations=1)
        extra = self.benchmark.extra_info
        extra.update(info)
        extra["bytes"] = nbytes
        meta = getattr(self.benchmark, "stats", None)
        if not meta:                        # --benchmark-disable: ran once, untimed
            return result
        st = meta.stats
        extra["MBps"] = round(nbytes / st.median / MB, 1)
        extra["MBps_best"] = round(nbytes / st.min / MB, 1)
        if nmsgs:
            extra["messages"] = nmsgs
            extra["msgs_per_s"] = round(nmsgs / st.median)
        timed_cpu = cpu[warmup_rounds:] or cpu
        extra["cpu_s_per_GB"] = round(statistics.median(timed_cpu) / (nbytes / GB), 3)
        _RESULTS.append({"name": self.name, "group": self.benchmark.group, **extra})
        return result


@pytest.fixture
def engine_bench(benchmark, request):
    return EngineBench(benchmark, request.node.name)


# ------------------------------------------------------------------ hooks --

def _git_describe(path: Path) -> str:
    """Commit of the walfast source tree that was imported (``-dirty`` when
    its working tree has changes: the build may not be the commit's)."""
    try:
        out = subprocess.run(["git", "-C", str(path), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _machine_facts() -> dict:
    facts = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    facts["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    facts["cpus"] = os.cpu_count()
    facts["kernel"] = platform.release()
    base = bench_base_dir()
    facts["output_dir"] = base
    facts["output_fs"] = fs_type(base)
    for name in ("enabled", "shmem_enabled"):
        try:
            with open(f"/sys/kernel/mm/transparent_hugepage/{name}") as f:
                facts[f"thp_{name}"] = f.read().strip()
        except OSError:
            pass
    facts["python"] = platform.python_version()
    try:
        import Cython
        facts["cython"] = Cython.__version__
    except ImportError:
        facts["cython"] = "not installed"
    facts["numpy"] = np.__version__
    facts["walfast"] = walfast.__version__
    facts["walfast_core"] = walfast._core.__file__
    facts["walfast_git"] = _git_describe(Path(walfast.__file__).resolve().parent.parent)
    facts["postgresql"] = "n/a (synthetic stream, no server)"
    exp = os.environ.get("WALFAST_EXP_MMAP")
    if exp:
        facts["walfast_exp_mmap"] = exp
    return facts


def pytest_report_header(config):
    f = _machine_facts()
    return [
        f"cpu: {f.get('cpu_model')} x{f['cpus']}, kernel {f['kernel']}, THP {f.get('thp_enabled')}",
        f"output dir: {f['output_dir']} on {f['output_fs']}",
        f"python {f['python']}, cython {f['cython']}, numpy {f['numpy']}, "
        f"walfast {f['walfast']} ({f['walfast_git']}) from {f['walfast_core']}",
        f"stream: {WAL_BYTES // MiB} MiB WAL, {SEGMENT_SIZE // MiB} MiB segments, "
        f"{MSG_SIZE // KiB} KiB XLogData, keepalive every {KEEPALIVE_EVERY}",
    ]


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["walfast_bench"] = _machine_facts()


def summary_lines(results: list[dict]) -> list[str]:
    """Markdown table: median MB/s, msgs/s, CPU s/GB, ratio to memcpy."""
    ref = next((r["MBps"] for r in results if r["name"].startswith("test_memcpy_numpy")), None)
    lines = ["| group | benchmark | MB/s (median) | msgs/s | CPU s/GB | / memcpy |",
             "|---|---|---:|---:|---:|---:|"]
    for r in results:
        ratio = f"{r['MBps'] / ref:.0%}" if ref else "-"
        msgs = f"{r['msgs_per_s']:,}" if "msgs_per_s" in r else "-"
        lines.append(f"| {r['group']} | {r['name']} | {r['MBps']:,.0f} | {msgs} | "
                     f"{r['cpu_s_per_GB']:.3f} | {ratio} |")
    return lines


def pytest_terminal_summary(terminalreporter):
    if not _RESULTS:
        return
    terminalreporter.write_sep("-", "walfast throughput (MB = 10^6 bytes; medians of rounds)")
    for line in summary_lines(_RESULTS):
        terminalreporter.write_line(line)
