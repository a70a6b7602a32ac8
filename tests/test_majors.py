"""walfast.majors, the one table of what differs between PostgreSQL majors.

Its facts are checked against real servers elsewhere: each major's page
magic against the WAL its server writes (tests/test_pgcluster.py), the slot
commands against a server of each major (tests/test_protocol.py in the
majors runs of ``make test``).  Here: the table's own rules, and that no
other product module names a version.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from walfast import majors

ROOT = Path(__file__).resolve().parent.parent
FEATURES = [f.name for f in dataclasses.fields(majors.MajorFacts)
            if f.name not in ("major", "page_magic")]


def test_rows_and_order():
    assert majors.TESTED_MAJORS == tuple(sorted(majors.TABLE))
    assert (majors.OLDEST_TESTED_MAJOR, majors.NEWEST_TESTED_MAJOR) == \
        (majors.TESTED_MAJORS[0], majors.TESTED_MAJORS[-1])
    assert majors.OLDEST_SERVER_MAJOR <= majors.OLDEST_TESTED_MAJOR
    for number, row in majors.TABLE.items():
        assert row.major == number
        assert majors.facts(number) is row
    # Every major has its own magic, and each new one is larger.
    magics = [majors.TABLE[m].page_magic for m in majors.TESTED_MAJORS]
    assert all(0 < a < b <= 0xFFFF for a, b in zip(magics, magics[1:])), magics


@pytest.mark.parametrize("feature", FEATURES)
def test_features_are_never_removed(feature):
    """Once a major has a feature, every later one has it: what lets a
    major newer than the table be treated as the newest row."""
    first = majors.first_major_with(feature)
    numbers = range(majors.OLDEST_SERVER_MAJOR, majors.NEWEST_TESTED_MAJOR + 3)
    assert [getattr(majors.facts(n), feature) for n in numbers] == \
        [n >= first for n in numbers]


def test_majors_outside_the_table():
    newer = majors.facts(majors.NEWEST_TESTED_MAJOR + 1)
    newest = majors.TABLE[majors.NEWEST_TESTED_MAJOR]
    # No upper bound: a newer major works as the newest, its magic learned.
    assert newer.page_magic == 0
    assert dataclasses.replace(newer, major=newest.major, page_magic=newest.page_magic) == newest
    older = majors.facts(majors.OLDEST_SERVER_MAJOR)
    assert older.page_magic == 0
    assert not older.read_replication_slot and not older.data_directory_mode


def test_major_of():
    assert majors.major_of(180006) == 18
    assert majors.major_of(majors.OLDEST_SERVER_MAJOR * 10000) == majors.OLDEST_SERVER_MAJOR


def test_importing_it_loads_nothing():
    """Light enough for any module (the command line's --help path too)."""
    code = ("import sys, walfast.majors; "
            "print(sorted(m for m in sys.modules if m.startswith(('walfast', 'psycopg'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT).stdout
    assert out.strip() == "['walfast', 'walfast._version', 'walfast.majors']"


#: A server_version_num (``150000``), or a comparison of a major number
#: with a literal: what a version hard-coded outside the table looks like.
_VERSION_LITERAL = re.compile(
    r"\b1\d0000\b|\b(?:major|server_version)\w*\s*(?:<=|>=|==|!=|<|>)\s*1\d\b")


def test_no_version_named_outside_the_table():
    offenders = []
    for path in sorted((ROOT / "walfast").rglob("*.py")):
        if path.name == "majors.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if _VERSION_LITERAL.search(code):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == [], "use walfast.majors instead:\n" + "\n".join(offenders)
