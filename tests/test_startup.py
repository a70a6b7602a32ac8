"""What the light commands load: ``walfast --version``, ``walfast status``,
``walfast-receivewal --help`` and ``walfast restore`` from a directory must
start without psycopg, a compression library, the metrics library or boto3
(their cost is in every cron restart, every monitoring probe and every
``restore_command`` call).  Which modules are loaded is checked, not how
long it takes: timing is benchmarks/startup.py's."""

from __future__ import annotations

import subprocess
import sys

import pytest

from walfast.monitor import progress

#: Libraries the light commands must not import.
HEAVY = ("psycopg", "psycopg_binary", "lz4", "zstandard", "prometheus_client", "tqdm",
         "boto3", "botocore")


def imported_modules(argv: list[str]) -> set[str]:
    """The modules a Python command imported, from ``-X importtime``."""
    r = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True,
                       text=True, timeout=60)
    names = set()
    for line in r.stderr.splitlines():
        if line.startswith("import time:") and "cumulative" not in line:
            names.add(line.rsplit("|", 1)[1].strip())
    assert names, r.stderr
    return names


@pytest.mark.parametrize("argv", [
    ["-m", "walfast.cli", "--version"],
    ["-m", "walfast.cli", "status", "{dir}"],
    ["-m", "walfast.cli", "wait", "{dir}", "--lsn", "0/1", "--timeout", "0"],
    ["-m", "walfast.cli.receivewal", "--help"],
    ["-m", "walfast.cli", "receive", "--help"],
    ["-m", "walfast.cli", "restore", "--help"],
    ["-m", "walfast.cli", "bench", "--help"],
    # a segment the directory does not have (restore_command's commonest call)
    ["-m", "walfast.cli", "restore", "000000010000000000000001", "{dir}/RECOVERYXLOG",
     "--from", "{dir}", "--partial"],
], ids=["version", "status", "wait", "receivewal-help", "receive-help", "restore-help",
        "bench-help", "restore-missing-from-directory"])
def test_light_commands_load_no_heavy_library(tmp_path, argv):
    progress.create_state(tmp_path, sync=False).close()
    names = imported_modules([a.format(dir=tmp_path) for a in argv])
    loaded = sorted(n for n in names if n.split(".")[0] in HEAVY)
    assert loaded == [], f"{' '.join(argv)} imported {loaded}"


def test_the_check_can_fail():
    """The same probe sees psycopg where it is imported."""
    names = imported_modules(["-c", "import psycopg"])
    assert "psycopg" in names
