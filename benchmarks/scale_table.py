"""python -m benchmarks.scale_table RESULTS.json: the tables of docs/scale.md from a run of ``scale``.

``python -m benchmarks scale --json RESULTS.json`` measures; this prints the
measured table, each figure's fit with its projection to 1,000 nodes, and
the wall, as docs/scale.md shows them (benchmarks.scale.summary).
"""

from __future__ import annotations

import json
import sys

from benchmarks.scale import summary


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m benchmarks.scale_table RESULTS.json "
              "(written by: python -m benchmarks scale --json RESULTS.json)", file=sys.stderr)
        return 2
    try:
        with open(argv[0]) as f:
            report = json.load(f)
    except (OSError, json.JSONDecodeError) as exc:
        print(f"cannot read {argv[0]}: {exc}", file=sys.stderr)
        return 2
    records = report.get("benchmarks", {}).get("scale")
    if not records:
        print(f"{argv[0]} holds no scale results: run python -m benchmarks scale --json {argv[0]}", file=sys.stderr)
        return 2
    print(summary(records))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
