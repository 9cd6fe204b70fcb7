"""The fault-injection soak: randomized fault schedules on real nodes, invariants checked after each.

Each schedule (tests/faults/harness.random_schedule) starts three node
processes and the workloads of tests/faults (numbered streams between every
pair of nodes, links and monitors made from both sides, a migrant, an
Executor map), then does one or two faults at random times to random nodes:
SIGKILL, SIGSTOP/SIGCONT, a GIL-holding C call, or a cut of every connection
to a node (nftables; left out, and said so, where it cannot run).  After
each schedule the invariants of tests/faults/invariants.py are checked.

The schedules come from one seed, printed first; ``TERMITE_FAULTS_SEED=N``
runs the same ones again, and with ``TERMITE_FAULTS_FROM=K`` from the Kth on;
``TERMITE_FAULTS_SECONDS=S`` sets the time budget.  ``TERMITE_IDLE_CLOSE=S`` gives
every node (and the harness's own) that idle close (``Network(idle_close=...)``):
a small one, e.g. 0.3, makes sessions suspend and resume between the faults.
A schedule that breaks an invariant prints its report (what was done,
when, and each violation with its data).  ``--quick`` runs for about 30 s;
the full run stops after 200 schedules or about 10 minutes, whichever comes
first.  The figures: schedules run, invariant violations (target 0),
schedules that could not run (target 0), and counts per kind of fault and
per invariant.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import tempfile
import time
import traceback
from collections import Counter

from benchmarks._result import ROOT, Result

BUDGET = {True: 30.0, False: 600.0}  # quick -> seconds
MAX_SCHEDULES = {True: 200, False: 200}
GUESS = 12.0  # seconds a schedule takes, until one has run
EXAMPLES = 12  # violations printed at the end


def run(quick: bool = False) -> list[Result]:
    _on_path()
    from nemesis import cut_unavailable

    seed = int(os.environ.get("TERMITE_FAULTS_SEED") or random.SystemRandom().randrange(1 << 32))
    first = int(os.environ.get("TERMITE_FAULTS_FROM") or 1)  # with the seed: replay from schedule #first
    no_cut = cut_unavailable()
    print(f"\n  seed {seed} (TERMITE_FAULTS_SEED={seed} repeats these schedules; "
          f"TERMITE_FAULTS_FROM=N starts at the Nth)", flush=True)
    if no_cut:
        print(f"  no cut faults: {no_cut}", flush=True)
    if os.environ.get("TERMITE_IDLE_CLOSE"):
        print(f"  idle close: {os.environ['TERMITE_IDLE_CLOSE']} s (TERMITE_IDLE_CLOSE)", flush=True)
    rng = random.Random(seed)
    quiet = logging.getLogger("termite")  # "node ... is down" is what the faults are for: keep the output short
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return _soak(quick, seed, no_cut, rng, first)
    finally:
        quiet.setLevel(level)


def _on_path() -> None:
    """The suite's modules: tests/faults (harness, nemesis, invariants) and tests/nodecode (what nodes import)."""
    for folder in (str(ROOT / "tests" / "nodecode"), str(ROOT / "tests" / "faults")):
        if folder not in sys.path:
            sys.path.insert(0, folder)


def _soak(quick: bool, seed: int, no_cut: str | None, rng: random.Random, first: int) -> list[Result]:
    from harness import random_schedule, run_schedule
    from invariants import summary
    from nemesis import KINDS

    budget, limit = float(os.environ.get("TERMITE_FAULTS_SECONDS") or BUDGET[quick]), MAX_SCHEDULES[quick]
    start = time.monotonic()
    ran, failed_to_run, with_violation = 0, [], 0
    kinds: Counter = Counter()
    invariants: Counter = Counter()
    examples, per_schedule, took = [], [], []
    for index in range(1, first):  # the schedules before the first to run, drawn and left out
        random_schedule(rng, index, cut_ok=no_cut is None)
    with tempfile.TemporaryDirectory(prefix="termite-faults-") as workdir:
        while ran + len(failed_to_run) < limit:
            expected = sum(took) / len(took) if took else GUESS
            if time.monotonic() - start + expected > budget and (ran or failed_to_run):
                break
            index = first + ran + len(failed_to_run)
            schedule = random_schedule(rng, index, cut_ok=no_cut is None)
            t0 = time.monotonic()
            try:
                outcome = run_schedule(schedule, workdir)
            except Exception:  # noqa: BLE001 - counted and shown; the soak goes on
                failed_to_run.append((schedule.text(), traceback.format_exc(limit=4)))
                print(f"  {schedule.text()}: could not run:\n{failed_to_run[-1][1]}", flush=True)
                continue
            took.append(time.monotonic() - t0)
            ran += 1
            kinds.update(f.kind for f in outcome.faults)
            counts = summary(outcome.violations)
            invariants.update(counts)
            with_violation += bool(outcome.violations)
            per_schedule.append({"schedule": schedule.text(), "seconds": round(took[-1], 1), "violations": counts})
            examples += [f"{schedule.text()}: {v}" for v in outcome.violations[:2]]
            if outcome.violations:
                print(outcome.report(logs=False).replace("\n", "\n    "), flush=True)
            print(f"  {schedule.text()} ({took[-1]:.1f} s): "
                  + (", ".join(f"{k} x{n}" for k, n in counts.items()) or "no violation"), flush=True)
    elapsed = time.monotonic() - start
    if examples:
        print("  examples of violations:", *(f"    {e[:400]}" for e in examples[:EXAMPLES]), sep="\n", flush=True)
    details = {"seed": seed, "seconds": round(elapsed, 1), "cut": no_cut or "available", "schedules": per_schedule,
               "could_not_run": failed_to_run, "examples": examples[:50]}
    results = [
        Result("faults", f"schedules run (seed {seed}, {elapsed:.0f} s)", ran, "", details=details),
        Result("faults", "invariant violations", sum(invariants.values()), "", 0, "<="),
        Result("faults", "schedules with a violation", with_violation, "", 0, "<="),
        Result("faults", "schedules that could not run", len(failed_to_run), "", 0, "<="),
    ]
    for kind in KINDS:
        results.append(Result("faults", f"faults done: {kind}", kinds.get(kind, 0), ""))
    for name, n in sorted(invariants.items()):
        results.append(Result("faults", f"violations: {name}", n, ""))
    return results
