"""walfast receive against malformed replication streams from the fake
walsender (tests/helpers/fakewalsender.py, tests/helpers/walfuzz.py).

The module runs :data:`CASES` cases of one fixed seed once (the
``fuzz_results`` fixture: two worker processes running walfast's command
line code in-process, every :data:`CLI_EVERY`-th case as the real ``walfast
receive`` command line), then each test asserts one property over all of
them.  A failure lists the cases with their reproduction:
``scripts/fuzz-walsender --seed SEED --case N`` runs one case again, as the
command line, and shows what was sent and what walfast did.

The long runs (100,000 cases and more) are ``scripts/fuzz-walsender``'s.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import wal_synth
from helpers.fakewalsender import (
    AwaitStatus, ConnectionRecord, CopyData, CopyRecord, FakeWalsender, Linger, Scenario,
    StatusUpdate, Stream, standard_replies,
)
from helpers.walfuzz import (
    FINDING_KINDS, MUTATIONS, CaseResult, FuzzCase, Rules, RunResult, check_case, make_case,
    replay, run_cases, run_cli,
)
from walfast import majors

#: The whole module takes half a minute to a minute (the 1,000 cases).
pytestmark = pytest.mark.slow

SEED = 20261201
CASES = 1000
#: Every CLI_EVERY-th case runs the real command line (a new interpreter
#: each: ~0.5 s, so a sample); the others run its code in a worker.
CLI_EVERY = 40
#: Seconds a case may take before it counts as a hang.
TIMEOUT = 30.0

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "fuzz-walsender"

#: Findings of the engine issue "bytes of a page header that failed its
#: checks reach the .partial" (a header split across two XLogData messages
#: was written as its first part arrived; when its second part failed the
#: checks, up to 39 bytes of it were in the file and in the write position
#: reported).  Fixed on main (the engine holds a header's bytes back until
#: it can be checked); kept as its own test so a regression is named.
REJECTED_HEADER_KINDS = ("rejected-header-bytes-written", "rejected-header-write-reported")


@pytest.fixture(scope="module")
def fuzz_results(tmp_path_factory) -> Iterator[list[CaseResult]]:
    # On tmpfs when there is one: what is checked is what walfast writes
    # and reports, not how long the disk takes to sync it (a third of the
    # run's time on this machine's disk).
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        workdir = Path(tempfile.mkdtemp(prefix="walfast-test-fuzz-", dir=shm))
    else:
        workdir = tmp_path_factory.mktemp("fuzz")
    try:
        results = list(run_cases(SEED, range(CASES), workdir, jobs=2, timeout=TIMEOUT,
                                 cli=lambda case: case % CLI_EVERY == 0))
        yield sorted(results, key=lambda r: r.case)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _found(results: list[CaseResult], *kinds: str) -> list[tuple[CaseResult, str]]:
    return [(r, f"{f.kind}: {f.detail}") for r in results for f in r.findings if f.kind in kinds]


def _report(found: list[tuple[CaseResult, str]], limit: int = 10) -> str:
    lines = [f"{len(found)} finding(s); reproduce one with "
             f"scripts/fuzz-walsender --seed {SEED} --case N"]
    for r, what in found[:limit]:
        lines.append(f"case {r.case} ({r.mode}, exit {r.rc}, {'; '.join(r.mutations) or 'valid'})"
                     f"\n    {what}\n    last line: {r.last_line}")
    return "\n".join(lines)


def _assert_none(results: list[CaseResult], *kinds: str) -> None:
    assert set(kinds) <= set(FINDING_KINDS)
    found = _found(results, *kinds)
    assert not found, _report(found)


# --------------------------------------------------------------------------- #
# what every case must do
# --------------------------------------------------------------------------- #

def test_no_traceback(fuzz_results):
    _assert_none(fuzz_results, "traceback")


def test_no_signal_death(fuzz_results):
    _assert_none(fuzz_results, "signal-death")


def test_no_hang(fuzz_results):
    _assert_none(fuzz_results, "hang")


def test_exit_status_and_error_line(fuzz_results):
    """0 only at --endpos; else 1 with an error line fit for a user."""
    _assert_none(fuzz_results, "bad-exit-status", "no-error-message", "unclear-error",
                 "exit-0-not-at-endpos")


def test_no_bad_bytes_in_files(fuzz_results):
    """Every file is the WAL sent (as far as a correct receiver takes it),
    then preallocation's zeros: nothing after a gap, a bad frame, a page
    that failed (beyond the known engine issue's header bytes)."""
    _assert_none(fuzz_results, "rejected-bytes-written", "wrong-bytes", "completed-segment-wrong",
                 "bad-file-size", "unexpected-file", "history-file-wrong")


def test_no_byte_of_a_rejected_page_header_written(fuzz_results):
    """Not even the first part of a header split across two messages whose
    second part fails the checks."""
    _assert_none(fuzz_results, *REJECTED_HEADER_KINDS)


def test_no_flush_past_valid_wal(fuzz_results):
    """No flush position reported past the valid WAL written (nor into a
    page whose header is incomplete, nor past what the files hold); no write
    position past the valid WAL."""
    _assert_none(fuzz_results, "flush-past-valid", "flushed-not-in-file", "write-past-valid")


def test_invalid_command_results_refused(fuzz_results):
    """A result no server sends (non-integer text, out-of-range numbers...)
    stops walfast before START_REPLICATION."""
    _assert_none(fuzz_results, "streamed-with-invalid-facts")


def test_no_file_descriptor_leak(fuzz_results):
    _assert_none(fuzz_results, "fd-leak")


def test_harness_sound(fuzz_results):
    """The fake walsender and the generator themselves never failed."""
    _assert_none(fuzz_results, "harness-error")


# --------------------------------------------------------------------------- #
# the run itself: what it covered
# --------------------------------------------------------------------------- #

def test_every_mutation_and_ending_was_exercised(fuzz_results):
    mutations = Counter(m.split(":")[0] for r in fuzz_results for m in r.mutations)
    endings = Counter(r.ending for r in fuzz_results)
    assert len(fuzz_results) == CASES
    assert {m.name for m in MUTATIONS} <= set(mutations), mutations
    assert min(mutations.values()) >= 5, mutations
    assert set(endings) == {"close", "shutdown", "endpos", "timeline", "timeline-direct"}
    assert sum(1 for r in fuzz_results if not r.mutations) >= 20   # valid streams too


def test_the_command_line_ran_a_sample(fuzz_results):
    """Tracebacks and exit codes are what users see: a sample of the cases
    ran the real ``walfast receive`` (both outcomes among them)."""
    cli = [r for r in fuzz_results if r.mode == "cli"]
    assert len(cli) == CASES // CLI_EVERY
    assert {r.rc for r in cli} == {0, 1}, Counter(r.rc for r in cli)


# --------------------------------------------------------------------------- #
# the harness checks itself
# --------------------------------------------------------------------------- #

def test_cases_are_deterministic():
    a, b = make_case(SEED, 17), make_case(SEED, 17)
    assert a.mutations == b.mutations
    assert [s.actions() for s in a.draft.streams] == [s.actions() for s in b.draft.streams]
    assert a.scenario().replies == b.scenario().replies


def _valid_stream_scenario(start: int, wal: bytes) -> Scenario:
    """A stream by hand (the harness as another fault test would use it):
    walsender-cut XLogData, a reply requested after each, then the client
    ends the COPY at endpos."""
    actions: list = []
    for pos, data in wal_synth.cut_like_walsender(start, wal, seed=3):
        actions += [CopyData(wal_synth.xlogdata(pos, data)),
                    CopyData(wal_synth.keepalive(pos + len(data), reply=True)),
                    AwaitStatus()]
    return Scenario(
        replies=standard_replies(system_identifier=wal_synth.SYSID, timeline=1, xlogpos=start,
                                 segment_size="1MB", slot=(start, 1)),
        streams=[Stream(actions + [Linger()], expect_lsn=start, expect_timeline=1)])


def test_walfast_receives_a_valid_stream_from_the_fake_walsender(fake_walsender, tmp_path):
    """Real protocol, real command line: exit 0 at --endpos, the segment
    byte-identical to what was sent, every flush reported within it."""
    seg = 1 << 20
    start = 5 * seg
    wal = wal_synth.make_wal(start, seg + 100_000, segment_size=seg)
    endpos = start + seg + 50_000
    fake_walsender.add("valid", _valid_stream_scenario(start, wal))
    run = run_cli(["-D", str(tmp_path), "-d", fake_walsender.conninfo("valid"), "-n", "-v",
                   "-S", "s", "-E", f"0/{endpos:X}"], timeout=TIMEOUT)
    assert run.rc == 0, run.stderr
    (rec,) = fake_walsender.wait_records("valid")
    assert rec.queries[-1] == 'START_REPLICATION SLOT "s" PHYSICAL 0/500000 TIMELINE 1'
    assert (tmp_path / "000000010000000000000005").read_bytes() == wal[:seg]
    flushes = rec.flushes()
    assert flushes and max(flushes) <= start + len(wal)
    assert max(flushes) >= start + seg      # the completed segment was reported


def test_the_oracle_finds_planted_faults(tmp_path):
    """check_case against outcomes planted by hand: rejected bytes in a
    file, a flush reported too far, a traceback, exit 0 without --endpos."""
    fc = make_case(SEED, 0)
    seg = 1 << 20
    start = 8 * seg
    wal = bytearray(wal_synth.make_wal(start, 3 * 8192, segment_size=seg))
    wal[8192 + 8:8192 + 16] = (start + 4 * 8192).to_bytes(8, "little")   # page 2: bad xlp_pageaddr
    sc = Scenario(replies=standard_replies(system_identifier=wal_synth.SYSID, timeline=1,
                                           xlogpos=start, segment_size="1MB"))
    raw = bytearray(b"d" + (25 + len(wal) + 4).to_bytes(4, "big") + wal_synth.xlogdata(start, wal))
    truth = replay(bytes(raw), Rules(1, seg, 8192, wal_synth.SYSID), start, None)
    assert truth.end == start + 8192 and truth.fault_page == start + 8192
    # walfast wrote all of it: the second page's bytes are rejected bytes.
    (tmp_path / "000000010000000000000008.partial").write_bytes(bytes(wal) + bytes(seg - len(wal)))
    rec = ConnectionRecord()
    rec.copies.append(CopyRecord(0, "START_REPLICATION PHYSICAL 0/800000 TIMELINE 1", raw))
    rec.status_updates.append(StatusUpdate(0, start + 9000, start + 9000, 0, 0, False))
    fc.draft.slot = "s"
    fc.draft.endpos = None
    run = RunResult(0, "Traceback (most recent call last):\nValueError: x\n", 0.1, "inproc")
    kinds = {f.kind for f in check_case(fc, sc, [rec], run, tmp_path)}
    assert {"rejected-bytes-written", "flush-past-valid", "write-past-valid", "traceback",
            "exit-0-not-at-endpos"} <= kinds, kinds


def test_script_reproduces_one_case():
    """scripts/fuzz-walsender --case N: one case as the command line, with
    what was sent and what walfast said."""
    case = next(c for c in range(CASES) if not make_case(SEED, c).mutations)
    p = subprocess.run([sys.executable, str(SCRIPT), "--seed", str(SEED), "--case", str(case)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"seed {SEED} case {case}" in p.stdout
    assert "walfast receive" in p.stdout and "no finding" in p.stdout, p.stdout


def test_fuzz_case_command_line_is_shell_quoted():
    fc: FuzzCase = make_case(SEED, 3)
    args = fc.args("/tmp/x y", "host=127.0.0.1 port=1 user=u")
    assert shlex.split(shlex.join(args)) == args


def test_fake_walsender_answers_ssl_and_gss_requests_with_n(tmp_path):
    """libpq's default sslmode=prefer asks for SSL first (and GSS
    encryption when it has credentials): 'N', then plain protocol."""
    from walfast.replication.commands import identify_system
    from walfast.replication.connection import connect

    with FakeWalsender(Scenario(replies=standard_replies(
            system_identifier=42, timeline=3, xlogpos=0x3000000))) as server:
        conn = connect(f"host=127.0.0.1 port={server.port} user=x sslmode=prefer")
        try:
            info = identify_system(conn)
            assert majors.major_of(conn.info.server_version) == majors.NEWEST_TESTED_MAJOR
        finally:
            conn.close()
        (rec,) = server.wait_records()
    assert (info.systemid, info.timeline, info.xlogpos) == (42, 3, 0x3000000)
    assert rec.startup["replication"] == "true" and rec.terminated
