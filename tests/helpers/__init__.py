"""What the tests share: not tests themselves.

* :mod:`.receivers`: walfast and pg_receivewal as subprocesses, waiting,
  reading what they wrote, comparing with the server's pg_wal;
* :mod:`.compat`: running walfast-receivewal and pg_receivewal with the same
  argv and comparing their output;
* :mod:`.wal_synth`: synthetic WAL with valid page headers and the
  replication messages that carry it;
* :mod:`.refimpl`: a pure-Python reference of what the engine writes;
* :mod:`.fakewalsender`: a fake walsender on loopback whose every answer
  comes from a declarative scenario (fault tests);
* :mod:`.walfuzz`: malformed streams from seeds, the oracle that checks
  walfast against them, and the runners (tests/test_fuzz.py,
  scripts/fuzz-walsender);
* :mod:`.pagecache`: which pages of a file are in the page cache (mincore).

Test modules import them as ``helpers.NAME`` (pytest puts ``tests/`` on the
path of the modules it collects there).
"""
