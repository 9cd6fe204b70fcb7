"""pytest --termite's schedule (termite_launcher.pytest_schedule) on its own: who is sent which items.

The end-to-end runs are in test_pytest_plugin.py; here the schedule's answers to
each "need" are checked step by step, with its commands collected in a list.
"""

from types import SimpleNamespace

import pytest

from termite_launcher.pytest_schedule import Schedule, Worker


def _schedule(n_items: int, n_workers: int):
    items = [SimpleNamespace(nodeid=f"test_x.py::test_{i}") for i in range(n_items)]
    workers = {key: Worker(key, None, f"node{key}", True, ".") for key in range(n_workers)}
    for worker in workers.values():
        worker.state = "ready"
    sent = []
    return Schedule(items, workers, lambda worker, command: sent.append((worker.key, command))), workers, sent


@pytest.mark.timeout(10)
def test_a_short_suite_is_dealt_one_each_so_every_worker_runs_at_once():
    schedule, workers, sent = _schedule(2, 2)
    schedule.serve(workers[0], 0)
    schedule.serve(workers[1], 0)
    assert sent == [
        (0, {"cmd": "run", "items": [[0, "test_x.py::test_0"]], "last": True, "ask_below": 0}),
        (1, {"cmd": "run", "items": [[1, "test_x.py::test_1"]], "last": True, "ask_below": 0}),
    ]


@pytest.mark.timeout(10)
def test_a_worker_on_its_own_items_leaves_the_last_ones_to_a_worker_with_none():
    schedule, workers, sent = _schedule(3, 3)
    schedule.serve(workers[0], 0)
    schedule.started(workers[0], 0)
    schedule.serve(workers[0], 0)  # it asks again as it starts its one item: two others have none
    assert sent[1] == (0, {"cmd": "none"})
    schedule.serve(workers[1], 0)
    schedule.serve(workers[2], 0)
    assert [(key, command["items"]) for key, command in sent[2:]] == [(1, [[1, "test_x.py::test_1"]]),
                                                                     (2, [[2, "test_x.py::test_2"]])]
    schedule.finished(workers[0], 0)
    schedule.serve(workers[0], 0)  # nothing left: it idles (and would steal)
    assert workers[0].idle


@pytest.mark.timeout(10)
def test_a_long_suite_goes_in_guided_chunks_of_at_least_two():
    schedule, workers, sent = _schedule(200, 2)
    schedule.serve(workers[0], 0)
    schedule.serve(workers[1], 0)
    sizes = [len(command["items"]) for _, command in sent]
    assert sizes == [25, 21]  # a share of what is left: 200 // 8, then 175 // 8
    assert not any(command["last"] for _, command in sent)
    schedule.queue = schedule.queue.__class__(list(schedule.queue)[-3:])  # the suite's end: 3 left
    schedule.serve(workers[0], 1)  # both still hold items: the one who asks gets two
    assert len(sent[-1][1]["items"]) == 2 and not sent[-1][1]["last"]
