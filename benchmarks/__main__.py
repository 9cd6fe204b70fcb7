"""python -m benchmarks [NAME ...] [--quick] [--json PATH] [--check]

Runs the named benchmarks (all of them by default), prints a table of every
figure against its target and writes them all, with the machine's
description, to a JSON file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.table import Table

from benchmarks import BENCHMARKS
from benchmarks._result import ROOT

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def machine_info() -> dict:
    import psutil

    info = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "memory_total": psutil.virtual_memory().total,
    }
    try:
        from importlib.metadata import version

        info["termite"] = version("termite")
    except Exception:  # noqa: BLE001 - informational only
        info["termite"] = None
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip() or None
    except Exception:  # noqa: BLE001 - informational only
        info["git_commit"] = None
    return info


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[1])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke test")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="PATH",
                        help=f"where to write the results (default: {DEFAULT_JSON.relative_to(ROOT)})")
    parser.add_argument("--check", action="store_true", help="exit with status 1 if a target is missed")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    args.names = list(dict.fromkeys(args.names)) or list(BENCHMARKS)
    return args


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    console = Console(width=None if sys.stdout.isatty() else 110)  # a log file gets the table unwrapped
    started = datetime.datetime.now(datetime.timezone.utc)
    results: dict[str, list] = {}
    errors: dict[str, str] = {}
    durations: dict[str, float] = {}
    for name in args.names:
        console.print(f"[bold]{name}[/bold] ...", end=" ")
        t0 = time.perf_counter()
        try:
            results[name] = BENCHMARKS[name](args.quick)
        except Exception:  # noqa: BLE001 - reported, and the other benchmarks still run
            errors[name] = traceback.format_exc()
            console.print("[red]error[/red]")
            console.print(errors[name], markup=False, highlight=False)
        else:
            console.print(f"done in {time.perf_counter() - t0:.1f} s")
        durations[name] = time.perf_counter() - t0

    title = "termite benchmarks" + (" (--quick: small sizes, targets are for the full run)" if args.quick else "")
    table = Table(title=title)
    table.add_column("benchmark")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("pass/fail", justify="center")
    for name, records in results.items():
        for r in records:
            verdict = {True: "[green]pass[/green]", False: "[red]FAIL[/red]", None: "[dim]info[/dim]"}[r.ok]
            table.add_row(r.name, r.measure, r.value_text, r.target_text, verdict)
    for name in errors:
        table.add_row(name, "[red]error (see above)[/red]", "", "", "[red]ERROR[/red]")
    console.print(table)

    report = {
        "started": started.isoformat(),
        "quick": args.quick,
        "machine": machine_info(),
        "durations_s": durations,
        "benchmarks": {name: [r.to_dict() for r in records] for name, records in results.items()},
        "errors": errors,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    console.print(f"results written to {args.json}")

    if errors:
        return 2
    if args.check and any(r.ok is False for records in results.values() for r in records):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
