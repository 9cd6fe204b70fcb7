"""The fault-injection suite (issue 14): real nodes, real faults, invariants checked after each schedule.

Every test here carries the ``faults`` marker (``pytest -m faults`` runs only
them, ``-m "not faults"`` all others); they run by default.  Schedules that
cut connections need root and nftables, and skip with the reason otherwise.
"""

import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)  # harness, nemesis, invariants

from harness import run_schedule  # noqa: E402
from invariants import summary  # noqa: E402
from nemesis import cut_unavailable  # noqa: E402


def pytest_collection_modifyitems(config, items):
    for item in items:
        if str(item.path).startswith(HERE + os.sep):
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def run_faults(tmp_path):
    """``run_faults(schedule)``: run it on fresh nodes (stopped at the end, whatever happens); fail
    with every violated invariant and its data.  Returns the Outcome when none is violated."""

    def run(schedule):
        if schedule.needs_cut():
            why = cut_unavailable()
            if why:
                pytest.skip(why)
        outcome = run_schedule(schedule, str(tmp_path))
        print(outcome.report(logs=False))
        if outcome.violations:
            counts = ", ".join(f"{name} x{n}" for name, n in summary(outcome.violations).items())
            pytest.fail(f"{len(outcome.violations)} invariant violation(s) under {schedule.text()}: {counts}\n"
                        + outcome.report(), pytrace=False)
        return outcome

    return run
