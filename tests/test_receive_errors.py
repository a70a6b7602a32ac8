"""``walfast receive`` on bad input, compared with pg_receivewal.

Each case runs both programs with the same arguments (nothing is listening
where they would connect, so no case can hang or stream).  They must exit
with the same status and print the same text, program name aside
(``walfast: error: ...`` where pg_receivewal prints ``pg_receivewal: error:
...``; ``Try "walfast receive --help"`` for ``Try "pg_receivewal --help"``),
and walfast never a Python traceback.

walfast speaks pg_receivewal 15's command line on every server
(``receivewal_command_line`` in walfast.majors): with an older server's
pg_receivewal the hint line lacks its "hint: " prefix, and the ``-s`` cases
(read with atoi before 15) are compared with a 15+ pg_receivewal instead.
"""

from __future__ import annotations

import pytest

from helpers.receivers import pg_receivewal_argv, run_cli, walfast_argv
from walfast.cluster import free_port


def _normalize(text: str, prog: str) -> list[str]:
    return [line.replace(prog, "PROG") for line in text.splitlines()]


@pytest.fixture
def dead_conninfo() -> str:
    """A TCP address where nothing listens (connection refused at once)."""
    return f"host=127.0.0.1 port={free_port()} user=postgres connect_timeout=5"


CASES = {
    # name: argv builder (directory that exists, connection string)
    "nonexistent directory": lambda d, c: ["-D", str(d / "missing"), "-d", c],
    "bad endpos": lambda d, c: ["-D", str(d), "-d", c, "-E", "xyz"],
    "bad endpos, half an LSN": lambda d, c: ["-D", str(d), "-d", c, "-E", "0/"],
    "nothing listening": lambda d, c: ["-D", str(d), "-d", c],
    "nothing listening, -h -p": lambda d, c: ["-D", str(d), "-h", "127.0.0.1", "-p",
                                              c.split("port=")[1].split()[0], "-w"],
    "no socket directory": lambda d, c: ["-D", str(d), "-d", f"host={d / 'nosock'} port=5"],
    "no -D": lambda d, c: ["-d", c],
    "--synchronous --no-sync": lambda d, c: ["-D", str(d), "-d", c, "--synchronous",
                                             "--no-sync"],
    "--synchronous --no-sync, no -D": lambda d, c: ["-d", c, "--synchronous", "--no-sync"],
    "-s not a number": lambda d, c: ["-D", str(d), "-d", c, "-s", "ten"],
    "-s out of range": lambda d, c: ["-D", str(d), "-d", c, "-s", "99999999"],
    "-s negative": lambda d, c: ["-D", str(d), "-d", c, "-s", "-1"],
    "stray argument": lambda d, c: ["-D", str(d), "-d", c, "extra"],
    "malformed connection string": lambda d, c: ["-D", str(d), "-d", "nonsense"],
    "unknown connection option": lambda d, c: ["-D", str(d), "-d", c + " nosuchoption=1"],
}


#: The cases pg_receivewal before 15 answers otherwise: it reads -s with
#: atoi ("ten" is 0) and refuses only a negative or too large result.
BEFORE_15 = {"-s not a number", "-s out of range", "-s negative"}


def _without_hint_prefix(lines: list[str]) -> list[str]:
    """As pg_receivewal before 15 prints the hint: without "PROG: hint: "."""
    return [line.removeprefix("PROG: hint: ") if line.startswith("PROG: hint: Try ") else line
            for line in lines]


@pytest.mark.majors
@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_like_pg_receivewal(pg_bindir, pg_major, receivewal_oracle, tmp_path,
                                      dead_conninfo, case):
    if not (pg_bindir / "pg_receivewal").exists():
        pytest.skip(f"no pg_receivewal in {pg_bindir}")
    args = CASES[case](tmp_path, dead_conninfo)
    theirs = run_cli(pg_receivewal_argv(pg_bindir, *args), bindir=pg_bindir)
    ours = run_cli(walfast_argv(*args))

    assert "Traceback" not in ours.stderr, ours.stderr
    assert theirs.returncode == 1, theirs.stderr
    assert ours.returncode == theirs.returncode, ours.stderr
    assert ours.stdout == theirs.stdout == ""
    expected = _normalize(theirs.stderr, "pg_receivewal")
    got = _normalize(ours.stderr.replace("walfast receive --help", "PROG --help"), "walfast")
    assert expected and expected[0].startswith("PROG: error: ")
    if pg_major.receivewal_command_line:
        assert got == expected
    elif case in BEFORE_15:
        assert _without_hint_prefix(got) != expected
        oracle = run_cli(pg_receivewal_argv(receivewal_oracle, *args), bindir=receivewal_oracle)
        assert got == _normalize(oracle.stderr, "pg_receivewal")
    else:
        assert _without_hint_prefix(got) == expected
    assert list(tmp_path.iterdir()) == []  # neither wrote anything


@pytest.mark.majors
def test_unknown_option(pg_bindir, pg_major, tmp_path):
    """getopt's and argparse's wording differ; both exit 1 with the hint
    (before 15 pg_receivewal's has no "hint: " prefix)."""
    if not (pg_bindir / "pg_receivewal").exists():
        pytest.skip(f"no pg_receivewal in {pg_bindir}")
    args = ["-D", str(tmp_path), "--no-such-option"]
    theirs = run_cli(pg_receivewal_argv(pg_bindir, *args), bindir=pg_bindir)
    ours = run_cli(walfast_argv(*args))
    assert ours.returncode == theirs.returncode == 1
    assert "Traceback" not in ours.stderr
    assert "--no-such-option" in ours.stderr
    hint = ours.stderr.splitlines()[-1]
    if not pg_major.receivewal_command_line:
        hint = hint.replace("walfast: hint: ", "")
    assert hint == \
        theirs.stderr.splitlines()[-1].replace('"pg_receivewal --help"', '"walfast receive --help"')\
        .replace("pg_receivewal:", "walfast:")
