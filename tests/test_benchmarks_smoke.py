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
sys.path.insert(0, str(ROOT))  # benchmarks/ is a folder of the repository, not an installed package

from benchmarks import _erlang, nodes, pingpong, ring, scale  # noqa: E402

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
            if value is None:  # a figure this machine or run cannot measure says why
                assert record["ok"] is None, record
                assert _erlang.INSTALL in record["measure"] or nodes.TOO_SHORT in record["measure"], record
                continue
            assert isinstance(value, (int, float)) and not isinstance(value, bool), record
            assert math.isfinite(value) and value > 0, record
            assert record["ok"] in (True, False, None)
            if record["target"] is not None:
                assert isinstance(record["target"], (int, float)) and record["op"] in ("<=", "<", ">=", ">")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_scale_quick_measures_every_size_and_projects_each_figure(tmp_path):
    out = tmp_path / "scale.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "scale", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=270,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["errors"] == {}
    records = report["benchmarks"]["scale"]
    measured = [r for r in records if "(projected)" not in r["measure"]]
    projected = [r for r in records if "(projected)" in r["measure"]]
    for record in measured:  # ss is installed here: every figure is measured, and none is nothing
        value = record["value"]
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, record
    sizes = {int(r["measure"].split()[0]) for r in measured if r["measure"][0].isdigit()}
    assert sizes == set(scale.SIZES[True])
    assert projected and all(math.isfinite(r["value"]) and "1,000 nodes" in r["measure"] for r in projected)
    # traffic and descriptors grow with the peers: the fits' slopes say so
    growing = ("idle: TCP bytes sent per node", "idle: open file descriptors per node", "all dispatch: termite frames")
    for label in growing:
        slopes = [r["details"]["b"] for r in projected if label in r["measure"]]
        assert slopes and all(b > 0 for b in slopes), label
    # every node had every other up, and its dispatcher may send work to each; not to the client, which is hidden
    [load] = [r for r in records if "load average" in r["measure"]]
    for n, size in load["details"]["sizes"].items():
        for phase in size["phases"].values():
            assert all(node["peers"] == int(n) - 1 for node in phase["nodes"]), n
        assert all(view["dispatch_targets"] == int(n) - 1 for view in size["dispatchers"]), n
    # under 96 open files a node reached fewer peers than it tried
    [wall] = [r for r in records if "peers one node reaches" in r["measure"]]
    assert 0 < wall["value"] < wall["details"]["tried"], wall
    # docs/scale.md's tables come from such a file
    table = subprocess.run([sys.executable, "-m", "benchmarks.scale_table", str(out)], cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert table.stdout.split("\n")[0].split() == ["nodes", *map(str, scale.SIZES[True])]
    assert "1,000 nodes" in table.stdout and "peers one node reaches" in table.stdout


def test_scale_table_says_how_to_get_results(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"benchmarks": {"ring": []}}))
    cases = (
        ([str(other)], "python -m benchmarks scale --json"),
        ([str(tmp_path / "none.json")], "cannot read"),
        ([], "usage: python -m benchmarks.scale_table RESULTS.json"),
    )
    for argv, said in cases:
        proc = subprocess.run([sys.executable, "-m", "benchmarks.scale_table", *argv], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 2 and said in proc.stderr, (argv, proc.stderr)


def test_scale_fit_is_least_squares():
    a, b, r2 = scale.fit([1, 2, 3, 4], [3, 5, 7, 9])
    assert (round(a, 9), round(b, 9), round(r2, 9)) == (1, 2, 1)
    a, b, r2 = scale.fit([0, 1, 2], [0, 2, 1])
    assert (round(a, 9), round(b, 9)) == (0.5, 0.5) and 0 < r2 < 1
    with pytest.raises(ValueError, match="two different x"):
        scale.fit([3, 3], [1, 2])


# -- Erlang beside termite (benchmarks/_erlang.py, benchmarks/erlang/*.erl) ----

needs_erlang = pytest.mark.skipif(_erlang.missing() is not None, reason=_erlang.missing() or "")


@needs_erlang
@pytest.mark.timeout(120)
def test_erlang_ring_runs_and_reports_its_times():
    with _erlang.compiled("ring") as erlang:
        for seed in ring.SEEDS:
            figures = erlang.run("ring", ring.QUICK_SIZE, seed, processes=ring.QUICK_SIZE, timeout=60)
            assert figures["hops"] == seed // ring.QUICK_SIZE + 1, figures
            assert 0 < figures["create_s"] < figures["seconds"] < 60, figures
            assert figures["schedulers"] >= 1


@needs_erlang
@pytest.mark.timeout(120)
def test_erlang_pingpong_runs_and_reports_its_rates():
    q = pingpong.QUICK
    with _erlang.compiled("pingpong") as erlang:
        figures = erlang.run("pingpong", round(q["window"] * 1e6), q["min_trips"], 3, q["warmup"], pingpong.CHUNK,
                             timeout=60)
    assert figures["schedulers"] >= 1
    for mode in pingpong.MODES:  # three windows of each, taking turns
        rates, trips = figures[f"{mode}_rates"], figures[f"{mode}_round_trips"]
        assert len(rates) == len(trips) == 3, figures
        assert all(t >= q["min_trips"] and t % pingpong.CHUNK == 0 for t in trips), figures
        # a window lasts at least its length: no more trips than that rate allows in it
        assert all(0 < r <= t / q["window"] for r, t in zip(rates, trips)), figures


@pytest.mark.timeout(120)
def test_without_erlang_the_erlang_lines_say_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no erl here; the termite children run by sys.executable
    assert _erlang.missing() == _erlang.INSTALL
    records = ring.run(quick=True) + pingpong.run(quick=True)
    unmeasured = [r for r in records if r.value is None]
    assert len(unmeasured) == 2 * len(ring.SEEDS) + 4, [r.measure for r in records]
    for r in unmeasured:
        assert _erlang.INSTALL in r.measure and r.ok is None and r.value_text == "not measured"
    assert [r.target for r in unmeasured if r.target is not None] == [ring.TARGET_VS_ERLANG] * 2 + [
        pingpong.TARGET_VS_ERLANG]
    measured = [r for r in records if r.value is not None]
    assert measured and all(r.value > 0 and "Erlang" not in r.measure for r in measured), measured


def test_erlang_result_lines_parse_and_bad_ones_are_refused():
    assert _erlang.parse("@@ERLANG@@ seconds=1.5 hops=5 rates=1.0,2.5") == {
        "seconds": 1.5, "hops": 5, "rates": [1.0, 2.5]}
    for bad in ("seconds=1.5", "@@ERLANG@@ seconds", "@@ERLANG@@ seconds="):
        with pytest.raises(ValueError):
            _erlang.parse(bad)
