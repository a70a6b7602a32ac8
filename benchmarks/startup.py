"""Start-up: how long walfast's commands take to start, against a bare
interpreter and against pg_receivewal, measured side by side in one run.

Every process start is in a Barman cron restart and in every reconnect
after a crash, so walfast should start in pg_receivewal's time.  Rows:

* ``python -c pass``: the interpreter alone (the floor for any Python program)
* ``walfast --version``, ``walfast status DIR`` (a real progress state),
  ``walfast-receivewal --help``: commands that must load no psycopg,
  compressor or metrics library
* ``pg_receivewal --version`` / ``--help``: the C program
* with ``--server`` (a throwaway primary is started): exec to the
  "starting log streaming" line (START_REPLICATION sent and answered),
  ``walfast receive`` against ``pg_receivewal``, each streaming from an
  empty directory with ``-E`` just past the server's position (so both
  exit as soon as they streamed a few bytes).

Rounds interleave the commands (the machine is shared and noisy); the
report gives medians and ratios.  Speed is reported here, never asserted
in a test.  ``--major N`` takes the server and pg_receivewal of PostgreSQL N
(Debian's or ``scripts/fetch-postgresql``'s; default: ``PG_BINDIR``,
``PG_MAJOR``, else the one ``walfast.cluster.find_bindir`` finds); each
pg_receivewal runs with its installation's own libpq.

    python -m benchmarks.startup [--runs 30] [--server] [--major N] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
START_RE = re.compile(rb"starting log streaming at")


def _venv_script(name: str) -> str:
    """The console script next to this interpreter (as installed by pip)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"startup: {path} not found: install walfast (make venv) first")
    return str(path)


def _time_exec(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                   check=False)
    return time.perf_counter() - t0


def _time_to_start_line(argv: list[str], env: dict[str, str]) -> float:
    """Seconds from exec to the "starting log streaming" line on stderr."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    assert proc.stderr is not None
    seen = None
    for line in proc.stderr:
        if seen is None and START_RE.search(line):
            seen = time.perf_counter() - t0
    proc.wait(60)
    if seen is None:
        raise SystemExit(f"startup: {argv[0]} printed no start line (exit {proc.returncode})")
    return seen


def _state_dir(tmp: Path) -> Path:
    """A directory with a real progress state, as a receiver leaves it."""
    from walfast.monitor import progress

    d = tmp / "status"
    d.mkdir()
    progress.create_state(d, sync=False).close()
    return d


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=30, help="rounds (default 30)")
    p.add_argument("--server", action="store_true",
                   help="also time exec to START_REPLICATION against a throwaway primary")
    p.add_argument("--major", type=int, metavar="N",
                   help="PostgreSQL major of the server and pg_receivewal")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)

    from walfast.cluster import find_bindir, tool_env

    try:
        bindir = find_bindir(major=args.major)
    except ValueError as exc:
        raise SystemExit(f"startup: {exc}") from None
    if bindir is None and args.major is not None:
        raise SystemExit(f"startup: PostgreSQL {args.major} not found (scripts/fetch-postgresql "
                         f"{args.major} fetches it)")
    env = dict(os.environ)
    pg_env = env if bindir is None else tool_env(bindir, env)
    tmp = Path(tempfile.mkdtemp(prefix="walfast-startup-"))
    try:
        state = _state_dir(tmp)
        commands: dict[str, list[str]] = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "walfast --version": [_venv_script("walfast"), "--version"],
            "walfast status DIR": [_venv_script("walfast"), "status", str(state)],
            "walfast-receivewal --help": [_venv_script("walfast-receivewal"), "--help"],
        }
        if bindir is not None and (bindir / "pg_receivewal").exists():
            commands["pg_receivewal --version"] = [str(bindir / "pg_receivewal"), "--version"]
            commands["pg_receivewal --help"] = [str(bindir / "pg_receivewal"), "--help"]
        times: dict[str, list[float]] = {name: [] for name in commands}
        cluster = None
        if args.server:
            if bindir is None:
                raise SystemExit("startup: --server needs PostgreSQL server binaries")
            from walfast.cluster import Cluster

            cluster = Cluster(bindir, wal_segsize_mb=1)
            cluster.init()
            cluster.start()
            times["walfast receive: exec to start line"] = []
            times["pg_receivewal: exec to start line"] = []
        try:
            for r in range(args.runs):
                names = list(commands)
                if r % 2:
                    names.reverse()          # alternate the order each round
                for name in names:
                    times[name].append(_time_exec(
                        commands[name], pg_env if name.startswith("pg_") else env))
                if cluster is not None:
                    _time_receivers(cluster, bindir, tmp, r, times, env, pg_env)
        finally:
            if cluster is not None:
                cluster.cleanup()
        report = {name: statistics.median(ts) for name, ts in times.items() if ts}
        base = report["python -c pass"]
        if bindir is not None:
            version = subprocess.run([str(bindir / "postgres"), "--version"], env=pg_env,
                                     capture_output=True, text=True).stdout.strip()
            print(f"server and pg_receivewal: {version} ({bindir})")
        print(f"start-up, median of {args.runs} runs (seconds; x = ratio to python -c pass)")
        for name, t in report.items():
            print(f"  {name:<40} {t * 1000:8.1f} ms  {t / base:5.2f}x")
        pairs = [("walfast-receivewal --help", "pg_receivewal --help"),
                 ("walfast receive: exec to start line", "pg_receivewal: exec to start line")]
        for ours, theirs in pairs:
            if ours in report and theirs in report:
                print(f"  {ours} / {theirs}: {report[ours] / report[theirs]:.2f}x")
        if args.json:
            args.json.write_text(json.dumps(
                {"runs": args.runs, "median_s": report, "samples_s": times,
                 "python": sys.version, "bindir": str(bindir)}, indent=2) + "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _time_receivers(cluster, bindir, tmp: Path, r: int, times: dict[str, list[float]],
                    env: dict[str, str], pg_env: dict[str, str]) -> None:
    """One round of exec-to-start-line for both receivers, order turned
    each round; each streams from an empty directory to just past the
    server's position."""
    from walfast.lsn import format_lsn

    cluster.generate_wal(1)
    end = cluster.current_wal_lsn()
    cluster.generate_wal(1)             # WAL past the stop point: no waiting for it
    runs = [("walfast receive: exec to start line", [_venv_script("walfast"), "receive"]),
            ("pg_receivewal: exec to start line", [str(bindir / "pg_receivewal")])]
    if r % 2:
        runs.reverse()
    for name, prog in runs:
        out = tmp / f"r{r}-{name.split(':')[0].replace(' ', '-')}"
        out.mkdir()
        argv = [*prog, "-D", str(out), "-d", cluster.conninfo(), "-E", format_lsn(end),
                "-n", "-v", "--no-sync"]
        times[name].append(_time_to_start_line(argv, pg_env if name.startswith("pg_") else env))
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
