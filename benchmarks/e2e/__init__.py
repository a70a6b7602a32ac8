"""End-to-end benchmark: walfast against pg_receivewal on a real primary.

``python -m benchmarks.e2e --help`` (or ``make bench-e2e``) runs it.  Modules:

* :mod:`.primary`    the throwaway primary, the fixed WAL range, run slots,
  checking what a receiver wrote
* :mod:`.receivers`  command lines per receiver/mode/transport, one measured run
* :mod:`.discard`    the receiver that throws everything away (sender's ceiling)
* :mod:`.limits`     the disk and memcpy limits, measured in the same run
* :mod:`.archive`    the archive mode: the loopback S3 server, the bucket's
  check, upload lag and throughput, the upload limit
* :mod:`.syncbench`  pgbench with the receiver as the only synchronous standby
* :mod:`.report`     summary, table, JSON, chart
* :mod:`.run`        the command line and the round loop

It never runs as part of the test suite (``tests/test_bench_harness.py``
only checks, on a tiny range, that the harness works).
"""
