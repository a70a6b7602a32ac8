"""The WAL-throughput benchmark behind ``walfast bench`` (and the
end-to-end benchmark ``benchmarks/e2e``, a thin layer over it).

walfast, pg_receivewal (the server major's own, when found) and a receiver
that throws the WAL away stream one fixed range of WAL, in interleaved
rounds, each in the modes asked; every run is checked (the range's
segments, byte for byte) before its figures count.  Optionally, pgbench
runs with each receiver as the primary's only synchronous standby.

Modules:

* :mod:`.primary`    where the WAL comes from: a throwaway primary that
  writes the range (:class:`~.primary.Primary`, the default) or a real
  server whose own traffic does (:class:`~.primary.ExternalPrimary`,
  ``walfast bench -d``); the range, the slots that pin it, the check of a
  run's output
* :mod:`.receivers`  command lines per receiver/mode/transport; one measured
  run (wall time, CPU of the receiver and of its walsender, bytes written)
* :mod:`.discard`    the receiver that throws everything away (the sender's
  ceiling), also as an acknowledge-only synchronous standby
* :mod:`.limits`     the disk and memcpy limits, measured in the same run
* :mod:`.archive`    the ``archive`` mode: walfast ``--archive`` against a
  loopback S3 server (needs ``moto[server]``)
* :mod:`.syncbench`  pgbench with the receiver as the only synchronous
  standby, under ``synchronous_commit`` on and remote_write
* :mod:`.report`     summaries, tables (terminal and markdown), the chart
* :mod:`.run`        the configuration and the round loop; the results
  document (JSON)
* :mod:`.options`    the command-line options both front ends share

Nothing here is imported by the receiver itself; ``walfast bench`` imports
it when it runs.  Sizes and rates: MB = 10^6 bytes, GB = 10^9.
"""
