"""The benchmarks run end to end at small sizes and report every figure.

Only that they run: timed targets are for `python -m benchmarks`, not for tests.
"""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["ring", "pingpong", "memory", "call-backlog", "nodes-pingpong", "nodes-stream", "migration", "dispatch"]


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_quick_benchmarks_report_every_figure(tmp_path):
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", *NAMES, "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())

    assert report["quick"] is True
    assert report["errors"] == {}
    for key in ("python", "cpu_count", "platform"):
        assert report["machine"][key]
    assert set(report["benchmarks"]) == set(NAMES)
    for name in NAMES:
        records = report["benchmarks"][name]
        assert records, name
        for record in records:
            assert record["name"] == name
            assert record["measure"] and isinstance(record["unit"], str)
            value = record["value"]
            assert isinstance(value, (int, float)) and not isinstance(value, bool), record
            assert math.isfinite(value) and value > 0, record
            assert record["ok"] in (True, False, None)
            if record["target"] is not None:
                assert isinstance(record["target"], (int, float)) and record["op"] in ("<=", "<", ">=", ">")
