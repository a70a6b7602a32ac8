"""``python -m benchmarks.e2e``: the end-to-end benchmark, one command.

The command line of :func:`walfast.bench.run.run_benchmark` (``walfast
bench``'s machinery) with this benchmark's defaults: 3 GB, 3 rounds, every
mode over every transport, the synchronous-standby part on
(``--pgbench-seconds 0`` skips it), the results file under
``benchmarks/results/`` with the markdown table next to it, the chart in
``benchmarks/e2e_chart.png``, and the full table (every figure) on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from walfast.bench.options import (
    ALL_MODES, TRANSPORTS, add_embedded_options, add_run_options, add_sync_options,
    config_from_args,
)

REPO_ROOT = Path(__file__).resolve().parents[2]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.e2e",
        description="End-to-end benchmark of walfast against pg_receivewal on a throwaway "
                    "primary (see benchmarks/README.md); a layer over walfast bench.")
    add_run_options(p, size="3GB", modes=ALL_MODES)
    add_embedded_options(p, transports=TRANSPORTS)
    add_sync_options(p, seconds_help="duration of each synchronous-standby pgbench run; 0 "
                                     "skips that benchmark (default 20)")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    p.add_argument("--json", type=Path,
                   default=REPO_ROOT / "benchmarks" / "results" / f"e2e-{stamp}.json",
                   help="results file (default benchmarks/results/e2e-DATE.json); the "
                        "markdown table goes next to it (.md)")
    p.add_argument("--chart", type=Path, default=REPO_ROOT / "benchmarks" / "e2e_chart.png",
                   help="PNG chart (default benchmarks/e2e_chart.png); '' for none")
    return p


def main(argv: list[str] | None = None) -> int:
    from walfast.bench.run import SetupError, run_benchmark

    args = build_parser().parse_args(argv)
    chart = None if str(args.chart) in ("", ".") else args.chart
    cfg = config_from_args(args, command="python -m benchmarks.e2e",
                           argv=sys.argv if argv is None else ["benchmarks.e2e", *argv],
                           sync=args.pgbench_seconds > 0, json_path=args.json,
                           markdown_path=args.json.with_suffix(".md"), chart_path=chart,
                           compact=False)
    try:
        return run_benchmark(cfg, say=lambda msg: print(msg, flush=True))
    except SetupError as exc:
        print(exc, flush=True)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the receivers were stopped, the slots dropped and the "
              "throwaway primary removed", flush=True)
        return 130
