"""End-to-end benchmark: walfast against pg_receivewal on a real primary.

``python -m benchmarks.e2e --help`` (or ``make bench-e2e``) runs it.  It is
a thin layer over :mod:`walfast.bench`, the machinery of ``walfast bench``
(one definition of everything): :mod:`.run` is this benchmark's command
line (every mode and transport by default, the synchronous-standby part
on, the results under ``benchmarks/results/``, the full table), and the
other modules name the package's, so that their old import paths and
``python -m`` entry points keep working:

* :mod:`.primary`    :mod:`walfast.bench.primary`
* :mod:`.receivers`  :mod:`walfast.bench.receivers`
* :mod:`.discard`    :mod:`walfast.bench.discard`
* :mod:`.limits`     :mod:`walfast.bench.limits`
* :mod:`.archive`    :mod:`walfast.bench.archive`
* :mod:`.syncbench`  :mod:`walfast.bench.syncbench`
* :mod:`.report`     :mod:`walfast.bench.report`

It never runs as part of the test suite (``tests/test_bench_harness.py``
only checks, on a tiny range, that the harness works).
"""
