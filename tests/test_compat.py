"""The compatibility suite: pg_receivewal and walfast-receivewal side by side.

A user must be able to replace ``pg_receivewal ARGS`` with
``walfast-receivewal ARGS`` and notice only that it is faster.  Every
scenario here runs both programs with the same arguments and compares what
the user sees: the exit status, stderr after the program name (and the hint
line), stdout, and for streaming scenarios the directory listing and every
file's content.  pg_receivewal is the oracle (PostgreSQL 15 here; where
PostgreSQL 16-18 word something differently walfast follows the newest and
the test says so).

Sections:

1. usage errors: a data-driven table of bad (and barely good) command lines,
   every option and every check, run concurrently (nothing listens where
   they would connect, so no case can stream or hang);
2. -Z/--compress parsing and validation (streaming compressed output is the
   compression engine's suite);
3. --help, --version and the deliberate differences;
4. streaming: --endpos with each option that changes how WAL is written or
   reported, the connection options, slots (--create-slot, --if-not-exists,
   --drop-slot, READ_REPLICATION_SLOT), -n and the reconnect loop;
5. a directory written by one program and continued by the other.

Timing: one cluster (1 MiB segments) for the whole module; each streaming
scenario writes a few segments of fresh WAL.
"""

from __future__ import annotations

import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers.compat import (
    Program,
    Result,
    directory_difference,
    listing,
    read_segment,
    pg_receivewal,
    run,
    stream_lines,
    walfast_receive,
    walfast_receivewal,
    write_entry_script,
)
from helpers.receivers import assert_completed_like_pg_wal, mismatch, wait_streaming, wait_until
from walfast.cluster import Cluster, free_port
from walfast.lsn import format_lsn, parse_lsn
from walfast.cli.receivewal import NEWEST_SERVER_MAJOR


@pytest.fixture(scope="module")
def bindir(pg_bindir: Path) -> Path:
    if not (pg_bindir / "pg_receivewal").exists():
        pytest.skip(f"no pg_receivewal in {pg_bindir}")
    return pg_bindir


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("compat")


@pytest.fixture(scope="module")
def pg(bindir) -> Program:
    return pg_receivewal(bindir)


@pytest.fixture(scope="module")
def wf(scratch) -> Program:
    bin_dir = scratch / "bin"
    bin_dir.mkdir()
    return walfast_receivewal(write_entry_script(bin_dir))


# --------------------------------------------------------------------------- #
# 1. usage errors
# --------------------------------------------------------------------------- #

#: id -> arguments.  {d}: an existing empty directory; {missing}: a path
#: that does not exist; {file}: a regular file; {dead}: a conninfo where
#: nothing listens; {deadport}: that port.  Every case must make
#: pg_receivewal exit 1 (checked), so each one tests a refusal.
USAGE_CASES: dict[str, list[str]] = {
    # getopt_long: unknown, malformed, ambiguous and abbreviated options
    "unknown long option": ["-D", "{d}", "--no-such-option"],
    "unknown long option with value": ["--bogus=3"],
    "unknown short option": ["-x"],
    "missing value, short, last": ["-D"],
    "missing value, -Z": ["-Z"],
    "missing value, -s after others": ["-D{missing}", "-s"],
    "missing value, long": ["--directory"],
    "missing value, abbreviated long": ["--dir"],
    "value for a flag": ["--no-loop=1"],
    "value for --help": ["--help=3"],
    "value for --version": ["--version=3"],
    "ambiguous --no": ["--no"],
    "ambiguous --no=1": ["--no=1"],
    "ambiguous --s": ["--s"],
    "ambiguous --s=5": ["--s=5"],
    "ambiguous --h": ["--h"],
    "ambiguous --ver": ["--ver"],
    "abbreviated --dir=": ["--dir={missing}"],
    "abbreviated --e=": ["--e=x"],
    "abbreviated --sl --st": ["--sl=x", "--st=5"],
    "abbreviated --if": ["--if"],
    "abbreviated --cr": ["--cr"],
    "abbreviated --he (help, not first)": ["-D", "{d}", "--he"],
    "clustered short options": ["-nvD{missing}"],
    "attached value": ["-D{missing}", "-s5", "-Z1"],
    "-V not first": ["-D", "{d}", "-V"],
    "-? not first": ["-D", "{d}", "-?"],
    "--help not first": ["-D", "{d}", "--help"],
    "--help after a flag": ["-n", "--help"],
    "--version not first": ["-D", "{d}", "--version"],
    # operands (GNU getopt moves them to the end)
    "operand": ["-D", "{d}", "-d", "{dead}", "extra"],
    "operand first": ["extra", "-D", "{d}"],
    "dash operand": ["-D", "{d}", "-"],
    "-- then option-like operand": ["-D", "{d}", "--", "-n"],
    "-- then -V": ["--", "-V"],
    "-- alone": ["--"],
    "operand before a bad -s": ["-D", "{d}", "extra", "-s", "ten"],
    # -E (sscanf "%X/%X"), checked while parsing
    "-E not an LSN": ["-D", "{d}", "-d", "{dead}", "-E", "xyz"],
    "-E half an LSN": ["-D", "{d}", "-E", "0/"],
    "-E no high part": ["-E", "/1"],
    "-E not hex": ["-E", "G/0"],
    "-E blank around slash": ["-E", "1 / 2"],
    "-E empty": ["-E", "", "-D", "{d}"],
    "-E trailing text ok": ["-E", "1/2/3"],
    "-E 0x and signs ok": ["-E", "+0x1/-0X2", "-D", "{missing}"],
    "-E bare 0x ok": ["-E", "0x/1", "-D", "{missing}"],
    "-E blanks ok": ["-E", " 1/ 2", "-D", "{missing}"],
    "-E more than 32 bits ok": ["-E", "123456789/1", "-D", "{missing}"],
    # -s (option_parse_int), checked while parsing
    "-s not a number": ["-D", "{d}", "-d", "{dead}", "-s", "ten"],
    "-s trailing text": ["-s", "5x"],
    "-s sign only": ["-s", "+"],
    "-s hex": ["-s", "0x5"],
    "-s negative": ["-D", "{d}", "-d", "{dead}", "-s", "-1"],
    "-s out of range": ["-D", "{d}", "-d", "{dead}", "-s", "99999999"],
    "-s just out of range": ["-s", "2147484"],
    "-s beyond long": ["-s", "99999999999999999999"],
    "-s largest ok": ["-s", "2147483"],
    "-s blanks ok": ["-s", " 5 ", "-D", "{missing}"],
    "-s empty is 0": ["-s", "", "-D", "{missing}"],
    "order: -s before -E": ["-s", "ten", "-E", "bad"],
    "order: -E before -s": ["-E", "bad", "-s", "ten"],
    "order: unknown before -s": ["--bogus", "-s", "ten"],
    "order: -s before unknown": ["-s", "ten", "--bogus"],
    # interplay, in pg_receivewal's order of checks
    "--create-slot with --drop-slot": ["-S", "s", "--create-slot", "--drop-slot"],
    "--create-slot without --slot": ["--create-slot"],
    "--drop-slot without --slot": ["--drop-slot"],
    "both slot actions, no slot": ["--drop-slot", "--create-slot"],
    "operand before slot checks": ["--create-slot", "--drop-slot", "--synchronous",
                                   "--no-sync", "extra"],
    "--synchronous --no-sync": ["-D", "{d}", "-d", "{dead}", "--synchronous", "--no-sync"],
    "--synchronous --no-sync, no -D": ["-d", "{dead}", "--synchronous", "--no-sync"],
    "--synchronous --no-sync with a slot action": ["-S", "s", "--create-slot",
                                                   "--synchronous", "--no-sync"],
    "no -D": ["-d", "{dead}"],
    "no -D, -v twice": ["-v", "-v"],
    "--if-not-exists alone is no action": ["--if-not-exists"],
    "no -D before -Z": ["-Z", "brotli"],
    "-Z checked for --drop-slot": ["-S", "s", "--drop-slot", "-Z", "brotli"],
    "-Z checked before the directory": ["-D", "{missing}", "-Z", "brotli"],
    "--synchronous --no-sync before -Z": ["-D", "x", "-Z", "brotli", "--synchronous",
                                          "--no-sync"],
    # the directory
    "nonexistent directory": ["-D", "{missing}", "-d", "{dead}"],
    "empty directory name": ["-D", ""],
    "directory is a file": ["-D", "{file}"],
    # connecting
    "nothing listening": ["-D", "{d}", "-d", "{dead}"],
    "nothing listening, -h -p -U -w": ["-D", "{d}", "-h", "127.0.0.1", "-p", "{deadport}",
                                       "-U", "postgres", "-w"],
    "-h -p override -d": ["-D", "{d}", "-d", "host=/nonexistent port=5", "-h", "127.0.0.1",
                          "-p", "{deadport}"],
    "no socket directory": ["-D", "{d}", "-d", "host={missing} port=5"],
    "malformed connection string": ["-D", "{d}", "-d", "nonsense"],
    "unknown connection option": ["-D", "{d}", "-d", "{dead} nosuchoption=1"],
    "--create-slot, nothing listening": ["-S", "s", "--create-slot", "-d", "{dead}", "-v"],
    "--drop-slot, nothing listening": ["-S", "s", "--drop-slot", "-d", "{dead}"],
    "--create-slot ignores a bad -D": ["-S", "s", "--create-slot", "-D", "{missing}",
                                       "-d", "{dead}"],
    "-W prompts (stdin, no terminal)": ["-W", "-D", "{d}", "-d", "{dead}"],
    "-w then -W prompts": ["-w", "-W", "-D", "{d}", "-d", "{dead}"],
    "-W then -w does not": ["-W", "-w", "-D", "{d}", "-d", "{dead}"],
}

#: -Z values (METHOD[:DETAIL] and the bare-integer form), each run as
#: ``-Z VALUE -D {missing}``: an accepted value gets as far as the
#: directory check, a refused one stops at its own message.
COMPRESS_VALUES = [
    "", "0", "1", "9", "10", "-1", " 5", "5 ", "+3", "-0", "0x5", "4294967296", "4294967297",
    "99999999999999999999",
    "none", "none:0", "none:level=0", "none:1", "none:level=-1", "none:workers=1",
    "gzip", "gzip:5", "gzip:level=5", "gzip:-1", "gzip:0", "gzip:10", "gzip:level",
    "gzip:level=", "gzip:level=x", "gzip:level=4294967297", "gzip:", "gzip:,",
    "gzip:level=5,", "gzip:level=5,,x", "gzip:foo", "gzip:1:2", "gzip:workers=2",
    "gzip:level=5=6",
    "lz4", "lz4:0", "lz4:1", "lz4:12", "lz4:13", "lz4:-1", "lz4:level=3,level=20",
    "zstd:level=30", "zstd:level=-131073", "zstd:level=x",
    "brotli", "GZIP", "gzip ", " ",
]
for _z in COMPRESS_VALUES:
    USAGE_CASES[f"-Z [{_z}]"] = ["-Z", _z, "-D", "{missing}"]

#: What stdin holds for a case (a password prompt reads it).
STDIN = {"-W prompts (stdin, no terminal)": "secret\n", "-w then -W prompts": "secret\n"}

#: The cases also run through ``walfast receive`` (the same code under
#: walfast's name): one of each kind, to show the front end is wired.
RECEIVE_CASES = [
    "unknown long option", "unknown short option", "missing value, long",
    "--help not first", "operand", "-E not an LSN", "-s out of range",
    "--create-slot without --slot", "--synchronous --no-sync", "no -D", "-Z [brotli]",
    "-Z [gzip:10]", "nonexistent directory", "nothing listening",
    "--create-slot, nothing listening",
]


def _expand(args: list[str], scratch: Path, dead_port: int) -> list[str]:
    values = {
        "d": str(scratch / "empty"), "missing": str(scratch / "missing"),
        "file": str(scratch / "file"), "deadport": str(dead_port),
        "dead": f"host=127.0.0.1 port={dead_port} user=postgres connect_timeout=5",
    }
    return [a.format(**values) for a in args]


@pytest.fixture(scope="module")
def usage_results(scratch, pg, wf) -> dict[tuple[str, str], Result]:
    """Every usage case run by every program, four at a time."""
    (scratch / "empty").mkdir()
    (scratch / "file").write_text("not a directory\n")
    dead_port = free_port()
    jobs = [(pg, case) for case in USAGE_CASES] + [(wf, case) for case in USAGE_CASES]
    jobs += [(walfast_receive(), case) for case in RECEIVE_CASES]

    def one(job: tuple[Program, str]) -> Result:
        program, case = job
        return run(program, _expand(USAGE_CASES[case], scratch, dead_port),
                   stdin=STDIN.get(case, ""))

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, jobs))
    assert listing(scratch / "empty") == [], "a usage case wrote into the directory"
    return {(program.name, case): r for (program, case), r in zip(jobs, results)}


def _assert_same(theirs: Result, ours: Result) -> None:
    assert not any("Traceback" in line for line in ours.stderr), "\n".join(ours.stderr)
    assert theirs.returncode == 1, f"not a refusal for pg_receivewal: {theirs}"
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout), ours
    assert ours.stderr == theirs.stderr


@pytest.mark.parametrize("case", list(USAGE_CASES))
def test_usage_like_pg_receivewal(usage_results, case):
    _assert_same(usage_results["pg_receivewal", case],
                 usage_results["walfast-receivewal", case])


@pytest.mark.parametrize("case", RECEIVE_CASES)
def test_usage_walfast_receive_like_pg_receivewal(usage_results, case):
    _assert_same(usage_results["pg_receivewal", case], usage_results["walfast receive", case])


def test_walfast_receive_own_options(wf, scratch):
    """walfast receive adds --metrics-address and --no-progress (so "--no"
    names one more possibility); walfast-receivewal keeps pg_receivewal's
    table and refuses them."""
    d = scratch / "own-options"
    d.mkdir()
    ours = run(walfast_receive(), ["-D", str(d), "--no"])
    assert ours.returncode == 1
    assert ours.stderr[0] == ("PROG: option '--no' is ambiguous; possibilities: '--no-loop' "
                              "'--no-password' '--no-sync' '--no-progress'")
    bad = run(walfast_receive(), ["-D", str(d), "--metrics-address", "127.0.0.1:notaport",
                                  "-d", "host=127.0.0.1 port=1 connect_timeout=2"])
    assert bad.returncode == 1
    assert len(bad.stderr) == 1 and "notaport" in bad.stderr[0], bad.stderr
    assert "--metrics-address" in run(walfast_receive(), ["--help"]).stdout
    refused = run(wf, ["-D", str(d), "--no-progress"])
    assert refused.returncode == 1
    assert refused.stderr[0] == "PROG: unrecognized option '--no-progress'"
    assert "--metrics-address" not in run(wf, ["--help"]).stdout
    assert listing(d) == []


# --------------------------------------------------------------------------- #
# 2. -Z: the deliberate differences
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("value", ["zstd", "zstd:5", "zstd:level=-5", "zstd:22"])
def test_zstd_accepted_where_pg_receivewal_refuses(pg, wf, scratch, value):
    args = ["-Z", value, "-D", str(scratch / "missing")]
    theirs, ours = run(pg, args), run(wf, args)
    assert theirs.stderr == ["PROG: error: compression with ZSTD is not yet supported"]
    # walfast took the value and went on to the next check.
    assert ours.stderr == [f'PROG: error: could not open directory "{args[-1]}": '
                           "No such file or directory"]
    assert ours.returncode == theirs.returncode == 1


@pytest.mark.parametrize("value", ["zstd:workers=2", "zstd:long"])
def test_zstd_options_walfast_cannot_honour_are_refused(wf, scratch, value):
    ours = run(wf, ["-Z", value, "-D", str(scratch / "missing")])
    assert ours.returncode == 1
    assert len(ours.stderr) == 1
    assert ours.stderr[0].startswith("PROG: error: invalid compression specification: ")
    assert value.split(":")[1].split("=")[0] in ours.stderr[0]


@pytest.mark.parametrize("value, pg16", [
    ("gzip:long", 'compression algorithm "gzip" does not support long-distance mode'),
    ("lz4:long=yes", 'compression algorithm "lz4" does not support long-distance mode'),
    ("gzip:long=maybe", 'value for compression option "long" must be a Boolean value'),
])
def test_long_keyword_worded_as_postgresql_16(pg, wf, scratch, value, pg16):
    """PostgreSQL 16 added the ``long`` keyword; pg_receivewal 15 calls it
    unrecognized.  walfast words it as 16-18 do."""
    args = ["-Z", value, "-D", str(scratch / "missing")]
    theirs, ours = run(pg, args), run(wf, args)
    assert ours.returncode == theirs.returncode == 1
    assert ours.stderr == [f"PROG: error: invalid compression specification: {pg16}"]
    if run(pg, ["--version"]).stdout.split()[2].startswith("15."):
        assert theirs.stderr == ['PROG: error: invalid compression specification: '
                                 'unrecognized compression option: "long"']
    else:
        assert theirs.stderr == ours.stderr


# --------------------------------------------------------------------------- #
# 3. --help and --version
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("flag", ["--help", "-?"])
def test_help_like_pg_receivewal(pg, wf, flag):
    theirs, ours = run(pg, [flag, "--bogus"]), run(wf, [flag, "--bogus"])
    assert ours.returncode == theirs.returncode == 0
    assert ours.stderr == theirs.stderr == []
    # Everything but PostgreSQL's bug-report and home-page lines, program
    # name aside; walfast ends with its own lines instead.
    pg_body = theirs.stdout.replace("pg_receivewal", "PROG").splitlines()
    ours_lines = ours.stdout.replace(wf.progname, "PROG").splitlines()
    assert pg_body[-2].startswith("Report bugs to ")
    assert ours_lines[:len(pg_body) - 2] == pg_body[:-2]
    walfast_lines = "\n".join(ours_lines[len(pg_body) - 2:])
    assert "walfast" in walfast_lines and "zstd" in walfast_lines
    assert "--receive-timeout=SECS" in walfast_lines


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_line_parses_as_pg_receivewal(pg, wf, flag):
    theirs, ours = run(pg, [flag, "-x"]), run(wf, [flag, "-x"])
    assert ours.returncode == theirs.returncode == 0
    line = ours.stdout.strip()
    assert line == ours.stdout.rstrip("\n")  # one line
    assert re.match(r"pg_receivewal \(PostgreSQL\) (\S+)", theirs.stdout)
    # The regex pg_receivewal's own line matches...
    m = re.match(r"pg_receivewal \(PostgreSQL\) (\S+)", line)
    assert m and m.group(1) == f"{NEWEST_SERVER_MAJOR}.0"
    # ...and Barman's parsing (PostgreSQLClient.get_version_info): drop
    # parenthesised parts, take the second word, require digits and a dot.
    version = re.sub(r"\s*\([^)]*\)", "", line).split()[1]
    assert re.match(r"(\d+)(\.(\d+)|devel|beta|alpha|rc).*", version)
    assert int(version.split(".")[0]) == NEWEST_SERVER_MAJOR
    assert "walfast" in line


def test_walfast_receive_help_and_version():
    help_out = run(walfast_receive(), ["--help"])
    assert help_out.returncode == 0
    assert help_out.stdout.startswith("walfast receive receives PostgreSQL streaming")
    assert "--create-slot" in help_out.stdout and "--compress=METHOD[:DETAIL]" in help_out.stdout
    version = run(walfast_receive(), ["-V"])
    assert version.returncode == 0 and version.stdout.startswith("walfast ")


# --------------------------------------------------------------------------- #
# 4. streaming
# --------------------------------------------------------------------------- #

@pytest.fixture(scope="module")
def cluster(bindir):
    c = Cluster(bindir, wal_segsize_mb=1, settings={
        "autovacuum": False,
        # Keep every segment the scenarios compare against in pg_wal.
        "checkpoint_timeout": "1h", "wal_keep_size": "512MB",
    })
    try:
        c.init()
        c.start()
        yield c
    finally:
        c.cleanup()


def _fresh_wal(cluster, nsegments: int) -> int:
    """Write *nsegments* + 1 segments of WAL and switch; return the first
    segno that is complete in pg_wal and entirely new (segments a ..
    a + nsegments are complete)."""
    seg = cluster.wal_segment_size
    start, _ = cluster.generate_wal((nsegments + 1) * seg)
    cluster.switch_wal()
    return start // seg + 1


def _seeded_dirs(tmp_path: Path, cluster, segno: int, *names: str) -> list[Path]:
    """Directories holding segment *segno* copied from pg_wal, so that a
    receiver resumes at segno + 1."""
    out = []
    name = cluster.segment_name(segno)
    for n in names:
        d = tmp_path / n
        d.mkdir()
        shutil.copyfile(cluster.pg_wal / name, d / name)
        out.append(d)
    return out


def _run_pair(pairs: list[tuple[Program, list[str]]], stdin: str = "") -> list[Result]:
    """Run several (program, args) to completion at the same time."""
    with ThreadPoolExecutor(max_workers=len(pairs)) as pool:
        return list(pool.map(lambda p: run(p[0], p[1], stdin=stdin, timeout=120), pairs))


def _assert_same_stream(cluster, theirs: Result, ours: Result, pg_dir: Path, wf_dir: Path,
                        expected: list[str]) -> None:
    assert theirs.returncode == 0, theirs
    assert ours.returncode == 0, ours
    assert listing(pg_dir) == expected
    problem = directory_difference(pg_dir, wf_dir)
    assert problem is None, problem
    assert_completed_like_pg_wal(wf_dir, cluster)
    assert stream_lines(ours.stderr) == stream_lines(theirs.stderr)


def _conn_args(cluster, variant: str, dead_port: int) -> list[str]:
    if variant == "-d":
        return ["-d", cluster.conninfo()]
    if variant == "-h -p -U -w":
        return ["-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", "-w"]
    if variant == "-d overridden by -h -p":
        return ["-d", f"host=/nonexistent port={dead_port} user=postgres",
                "-h", "127.0.0.1", "-p", str(cluster.port)]
    if variant == "-W":  # trust authentication: the password read is not needed
        return ["-d", cluster.conninfo(), "-W"]
    raise AssertionError(variant)


@pytest.mark.parametrize("options, connection", [
    pytest.param(["-v"], "-d", id="verbose"),
    pytest.param([], "-d", id="quiet"),
    pytest.param(["-v", "--synchronous"], "-d", id="synchronous"),
    pytest.param(["-v", "--no-sync"], "-d", id="no-sync"),
    pytest.param(["-v", "-s", "0"], "-d", id="status-interval-0"),
    pytest.param(["-v", "--status-interval=1"], "-d", id="status-interval-1"),
    pytest.param(["-v"], "-h -p -U -w", id="host-port-user"),
    pytest.param(["-v"], "-d overridden by -h -p", id="host-port-override-dbname"),
    pytest.param(["-v"], "-W", id="password-prompt"),
])
def test_endpos_side_by_side(cluster, pg, wf, tmp_path, options, connection):
    """--endpos (-E) with each option: both stop at the same place, exit 0,
    print the same lines and leave identical directories."""
    seg = cluster.wal_segment_size
    a = _fresh_wal(cluster, 3)
    pg_dir, wf_dir = _seeded_dirs(tmp_path, cluster, a, "pg", "wf")
    endpos = (a + 2) * seg + seg // 2 + 1234
    common = ["-n", "-E", format_lsn(endpos), *options,
              *_conn_args(cluster, connection, free_port())]
    stdin = "secret\n" if connection == "-W" else ""
    theirs, ours = _run_pair([(pg, ["-D", str(pg_dir), *common]),
                              (wf, ["-D", str(wf_dir), *common])], stdin=stdin)
    expected = [cluster.segment_name(a), cluster.segment_name(a + 1),
                cluster.segment_name(a + 2) + ".partial"]
    _assert_same_stream(cluster, theirs, ours, pg_dir, wf_dir, expected)
    assert mismatch(wf_dir, cluster, (a + 1) * seg, endpos) is None
    partial = f'PROG: not renaming "{expected[-1]}", segment is not complete'
    assert partial in ours.stderr
    if "-v" in options:
        assert f"PROG: starting log streaming at {format_lsn((a + 1) * seg)} (timeline 1)" \
            in ours.stderr


def _slot_lines(result: Result, slot: str) -> list[str]:
    return [line.replace(f'"{slot}"', '"SLOT"') for line in result.stderr]


def _restart_lsn(cluster, slot: str) -> str | None:
    rows = cluster.execute(
        "SELECT restart_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,))
    assert rows, f"no slot {slot}"
    return rows[0][0]


def test_slot_create_stream_drop(cluster, pg, wf, tmp_path):
    """--create-slot (twice, with and without --if-not-exists), streaming
    through the slot, --drop-slot (twice): the same exit codes and lines;
    the slot created reserves no WAL until used, in both."""
    conn = ["-d", cluster.conninfo()]
    slots = {pg.name: "compat_pg", wf.name: "compat_wf"}

    def both(*args: str) -> tuple[list[str], list[str], int, int]:
        theirs, ours = _run_pair([(p, ["-S", slots[p.name], *args, *conn]) for p in (pg, wf)])
        return (_slot_lines(theirs, slots[pg.name]), _slot_lines(ours, slots[wf.name]),
                theirs.returncode, ours.returncode)

    t, o, trc, orc = both("--create-slot", "-v")
    assert (trc, orc) == (0, 0) and t == o == ['PROG: creating replication slot "SLOT"']
    # pg_receivewal's slot holds no WAL until a receiver streams from it.
    assert _restart_lsn(cluster, "compat_pg") is None
    assert _restart_lsn(cluster, "compat_wf") is None

    t, o, trc, orc = both("--create-slot")
    assert (trc, orc) == (1, 1) and t == o
    assert o[0].startswith('PROG: error: could not send replication command '
                           '"CREATE_REPLICATION_SLOT "SLOT" PHYSICAL": ERROR:  ')
    t, o, trc, orc = both("--create-slot", "--if-not-exists", "-v")
    assert (trc, orc) == (0, 0) and t == o

    seg = cluster.wal_segment_size
    a = _fresh_wal(cluster, 3)
    pg_dir, wf_dir = _seeded_dirs(tmp_path, cluster, a, "pg", "wf")
    endpos = (a + 2) * seg + 100
    common = ["-n", "-v", "-E", format_lsn(endpos), *conn]
    theirs, ours = _run_pair([(pg, ["-D", str(pg_dir), "-S", "compat_pg", *common]),
                              (wf, ["-D", str(wf_dir), "-S", "compat_wf", *common])])
    expected = [cluster.segment_name(s) for s in (a, a + 1)]
    expected.append(cluster.segment_name(a + 2) + ".partial")
    _assert_same_stream(cluster, theirs, ours, pg_dir, wf_dir, expected)
    # Streaming through the slot made it hold WAL from the streamed range.
    for slot in slots.values():
        restart = _restart_lsn(cluster, slot)
        assert restart is not None

    t, o, trc, orc = both("--drop-slot", "-v")
    assert (trc, orc) == (0, 0) and t == o == ['PROG: dropping replication slot "SLOT"']
    t, o, trc, orc = both("--drop-slot")
    assert (trc, orc) == (1, 1) and t == o
    assert "does not exist" in o[0]
    assert cluster.execute("SELECT count(*) FROM pg_replication_slots "
                           "WHERE slot_name LIKE 'compat_%'") == [(0,)]


def test_bad_slot_name(cluster, pg, wf):
    conn = ["-d", cluster.conninfo()]
    for action in ("--create-slot", "--drop-slot"):
        theirs, ours = _run_pair([(p, ["-S", "Bad-Name", action, *conn]) for p in (pg, wf)])
        _assert_same(theirs, ours)


def test_start_from_slot_restart_lsn(cluster, pg, wf, tmp_path):
    """An empty directory and a slot that holds WAL: both start at the
    slot's restart_lsn (READ_REPLICATION_SLOT), not the server's position."""
    seg = cluster.wal_segment_size
    cluster.execute("CHECKPOINT")
    for slot in ("compat_rrs_pg", "compat_rrs_wf"):
        cluster.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
    try:
        restart = _restart_lsn(cluster, "compat_rrs_pg")
        assert restart is not None and restart == _restart_lsn(cluster, "compat_rrs_wf")
        start = parse_lsn(restart) // seg * seg
        _fresh_wal(cluster, 3)
        endpos = start + 2 * seg + seg // 3
        pg_dir, wf_dir = tmp_path / "pg", tmp_path / "wf"
        pg_dir.mkdir()
        wf_dir.mkdir()
        common = ["-n", "-v", "-E", format_lsn(endpos), "-d", cluster.conninfo()]
        theirs, ours = _run_pair([(pg, ["-D", str(pg_dir), "-S", "compat_rrs_pg", *common]),
                                  (wf, ["-D", str(wf_dir), "-S", "compat_rrs_wf", *common])])
        segno = start // seg
        expected = [cluster.segment_name(segno), cluster.segment_name(segno + 1),
                    cluster.segment_name(segno + 2) + ".partial"]
        _assert_same_stream(cluster, theirs, ours, pg_dir, wf_dir, expected)
        assert f"PROG: starting log streaming at {format_lsn(start)} (timeline 1)" in ours.stderr
    finally:
        cluster.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                        "WHERE slot_name LIKE 'compat_rrs_%'")


def _start_streaming(cluster, pg, wf, procs, tmp_path, *options):
    pg_dir, wf_dir = tmp_path / "pg", tmp_path / "wf"
    pg_dir.mkdir()
    wf_dir.mkdir()
    conn = ["-d", cluster.conninfo()]
    theirs = procs.program("pg_receivewal", [*pg.argv, "-D", str(pg_dir), *options, *conn])
    ours = procs.program("walfast-receivewal", [*wf.argv, "-D", str(wf_dir), *options, *conn])
    # Each program's fallback application_name is its own name.
    wait_streaming(cluster, ["pg_receivewal", wf.progname], [theirs, ours])
    return theirs, ours


def test_no_loop_disconnect(cluster, pg, wf, procs, tmp_path):
    """-n: the walsender is terminated; both print the same and exit 1."""
    theirs, ours = _start_streaming(cluster, pg, wf, procs, tmp_path, "-n", "-v")
    cluster.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
    assert theirs.wait() == 1
    assert ours.wait() == 1
    lines = stream_lines(wf.normalize(ours.stderr()))
    assert lines == stream_lines(pg.normalize(theirs.stderr()))
    assert lines[-1] == "PROG: error: disconnected"


def test_reconnect_loop_then_sigint(cluster, pg, wf, procs, tmp_path):
    """Without -n: a terminated walsender is retried after 5 seconds, with
    the same messages; SIGINT then stops both with exit 0."""
    theirs, ours = _start_streaming(cluster, pg, wf, procs, tmp_path, "-v")
    pids = {pid for (pid,) in cluster.execute("SELECT pid FROM pg_stat_replication")}
    cluster.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")

    def reconnected():
        rows = cluster.execute("SELECT pid, application_name FROM pg_stat_replication "
                               "WHERE state = 'streaming'")
        return {app for pid, app in rows if pid not in pids} >= {"pg_receivewal", wf.progname}

    wait_until(reconnected, "both to reconnect", 60, [theirs, ours])
    time.sleep(0.5)  # let both log their restart
    assert theirs.interrupt() == 0
    assert ours.interrupt() == 0
    lines = stream_lines(wf.normalize(ours.stderr()))
    assert lines == stream_lines(pg.normalize(theirs.stderr()))
    assert "PROG: disconnected; waiting 5 seconds to try again" in lines


# --------------------------------------------------------------------------- #
# 5. a directory written by one program, continued by the other
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("keep_partial", [True, False], ids=["from-partial", "from-completed"])
@pytest.mark.parametrize("first_name", ["pg_receivewal", "walfast-receivewal"])
def test_continue_the_other_programs_directory(cluster, pg, wf, tmp_path, first_name,
                                               keep_partial):
    """FIRST streams to an end position (leaving a .partial, or with the
    .partial removed as an archiver may), then SECOND continues in the same
    directory.  The result equals FIRST continuing its own directory."""
    first, second = (pg, wf) if first_name == "pg_receivewal" else (wf, pg)
    seg = cluster.wal_segment_size
    a = _fresh_wal(cluster, 5)
    mixed, same = _seeded_dirs(tmp_path, cluster, a, "mixed", "same")
    conn = ["-d", cluster.conninfo()]
    e1 = format_lsn((a + 2) * seg + seg // 3)
    for result in _run_pair([(first, ["-D", str(d), "-n", "-E", e1, *conn])
                             for d in (mixed, same)]):
        assert result.returncode == 0, result
    partial = cluster.segment_name(a + 2) + ".partial"
    assert partial in listing(mixed)
    if not keep_partial:
        for d in (mixed, same):
            (d / partial).unlink()

    e2 = (a + 4) * seg + seg // 2
    continued, reference = _run_pair([
        (second, ["-D", str(mixed), "-n", "-v", "-E", format_lsn(e2), *conn]),
        (first, ["-D", str(same), "-n", "-v", "-E", format_lsn(e2), *conn]),
    ])
    assert continued.returncode == reference.returncode == 0, (continued, reference)
    # Both resume in segment a + 2: pg_receivewal at its start; walfast, when
    # it continues a .partial it wrote itself in this boot, at the last valid
    # page (walfast.resume), so its start line and the exact stop point (the
    # end of the message that passes -E) may differ from pg_receivewal's.
    own_partial = first is wf and keep_partial
    for result, program in ((continued, second), (reference, first)):
        start = _start_lsn(result)
        if program is wf and own_partial:
            assert (a + 2) * seg <= start < (a + 3) * seg and start % 8192 == 0, result
        else:
            assert start == (a + 2) * seg, result
    if own_partial:
        assert _without_positions(continued.stderr) == _without_positions(reference.stderr)
    else:
        assert stream_lines(continued.stderr) == stream_lines(reference.stderr)
        problem = directory_difference(mixed, same)
        assert problem is None, problem
    expected = [cluster.segment_name(s) for s in range(a, a + 4)] + \
        [cluster.segment_name(a + 4) + ".partial"]
    for d in (mixed, same):
        assert listing(d) == expected
        assert_completed_like_pg_wal(d, cluster)
        assert mismatch(d, cluster, a * seg, e2) is None


def _start_lsn(result: Result) -> int:
    found = [parse_lsn(line.split(" at ")[1].split()[0]) for line in result.stderr
             if line.startswith("PROG: starting log streaming at ")]
    assert len(found) == 1, result
    return found[0]


def _without_positions(lines: list[str]) -> list[str]:
    """stream_lines() without the start and stop lines (which name LSNs)."""
    return [line for line in stream_lines(lines)
            if not line.startswith(("PROG: starting log streaming at ",
                                    "PROG: stopped log streaming at "))]


# --------------------------------------------------------------------------- #
# 6. compressed output (-Z), side by side
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("value, suffix", [
    pytest.param("gzip:1", ".gz", id="gzip-1"),
    pytest.param("5", ".gz", id="bare-level-5"),
    pytest.param("gzip:level=9", ".gz", id="gzip-level-9"),
    pytest.param("lz4", ".lz4", id="lz4"),
    pytest.param("lz4:1", ".lz4", id="lz4-1"),
    pytest.param("none", "", id="none"),
])
def test_compressed_endpos_side_by_side(cluster, pg, wf, tmp_path, value, suffix):
    """-Z METHOD[:DETAIL] and the bare level: the same file names, the same
    decompressed contents (completed files equal to pg_wal, the stopped
    segment's .partial a decodable prefix of it) and the same lines."""
    seg = cluster.wal_segment_size
    a = _fresh_wal(cluster, 3)
    pg_dir, wf_dir = _seeded_dirs(tmp_path, cluster, a, "pg", "wf")
    endpos = (a + 2) * seg + seg // 2 + 1234
    common = ["-n", "-v", "-Z", value, "-E", format_lsn(endpos), "-d", cluster.conninfo()]
    theirs, ours = _run_pair([(pg, ["-D", str(pg_dir), *common]),
                              (wf, ["-D", str(wf_dir), *common])])
    assert theirs.returncode == 0, theirs
    assert ours.returncode == 0, ours
    expected = sorted([cluster.segment_name(a), cluster.segment_name(a + 1) + suffix,
                       cluster.segment_name(a + 2) + suffix + ".partial"])
    assert listing(pg_dir) == expected
    problem = directory_difference(pg_dir, wf_dir)
    assert problem is None, problem
    completed = cluster.segment_name(a + 1)
    assert read_segment(wf_dir / (completed + suffix)) == (cluster.pg_wal / completed).read_bytes()
    received = endpos % seg  # at least this much of the last segment
    partial = read_segment(wf_dir / expected[-1])
    assert len(partial) >= received
    assert partial[:received] == \
        (cluster.pg_wal / cluster.segment_name(a + 2)).read_bytes()[:received]
    assert stream_lines(ours.stderr) == stream_lines(theirs.stderr)
