"""Print the throughput table of one or more --benchmark-json files.

    python benchmarks/report.py /tmp/bench.json [/tmp/bench2.json ...]

For each file: median MB/s (10^6 bytes/s of WAL), messages/s, CPU s/GB and
the ratio to the same run's test_memcpy_numpy; with several files, one
column per run for MB/s and the ratio.
"""

from __future__ import annotations

import json
import sys


def load(path: str) -> dict[str, dict]:
    with open(path) as f:
        data = json.load(f)
    return {b["name"]: {"group": b["group"], **b["extra_info"]} for b in data["benchmarks"]}


def main(paths: list[str]) -> None:
    runs = [load(p) for p in paths]
    names = list(runs[0])
    for run in runs[1:]:
        names += [n for n in run if n not in names]
    refs = [run.get("test_memcpy_numpy", {}).get("MBps") for run in runs]
    head = ["group", "benchmark"]
    for i in range(len(runs)):
        tag = f" (run {i + 1})" if len(runs) > 1 else ""
        head += [f"MB/s{tag}", f"msgs/s{tag}", f"CPU s/GB{tag}", f"/ memcpy{tag}"]
    print("| " + " | ".join(head) + " |")
    print("|---|---|" + "---:|" * (len(head) - 2))
    for name in names:
        group = next(run[name]["group"] for run in runs if name in run)
        row = [group, name]
        for run, ref in zip(runs, refs):
            r = run.get(name)
            if r is None or "MBps" not in r:
                row += ["-"] * 4
                continue
            row += [f"{r['MBps']:,.0f}",
                    f"{r['msgs_per_s']:,}" if "msgs_per_s" in r else "-",
                    f"{r['cpu_s_per_GB']:.3f}",
                    f"{r['MBps'] / ref:.1%}" if ref else "-"]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
