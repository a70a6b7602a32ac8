"""The end-to-end benchmark's name for :mod:`walfast.bench.report` (the
same module); ``python -m benchmarks.e2e.report RESULTS.json [CHART.png]``
prints the tables of a results file as markdown and draws its chart."""

import sys

from walfast.bench import report

if __name__ == "__main__":
    sys.exit(report.main(sys.argv[1:], prog="python -m benchmarks.e2e.report"))
sys.modules[__name__] = report
