"""The dispatcher's ranking of its nodes chooses exactly as a scan of every node by the choice rule would.

The scan below is the rule as termite/_balance/dispatch.py states it (and as
its dispatcher chose before the ranking): the least ``(late, load, host load,
picked)``, ties to the node added first, skipping for a job the nodes it would
overfill.  Random reports, sends, answers, places, losses and the passing of
time drive both; they must agree at every step.
"""

import random

import pytest

from termite import Load, NodeRef
from termite._balance.dispatch import LATE, _Node, _Ranking

INTERVAL = 1.0


def _scan_key(state, now):
    late = now - state.heard > LATE * INTERVAL
    load = state.load
    if load is None:
        return (late, state.calls, 0.0, state.picked)
    return (late, load.value + max(0, state.calls - load.run_queue), load.host_load, state.picked)


def _scan_least(nodes, now):
    return min(nodes.items(), key=lambda item: _scan_key(item[1], now), default=(None, None))[0]


def _scan_pick(nodes, now, calls, window):
    best, best_key = None, None
    for node, state in nodes.items():
        if state.calls and state.calls + calls > window:
            continue
        key = _scan_key(state, now)
        if best_key is None or key < best_key:
            best, best_key = node, key
    return best


def _report(rng, node, now):
    queue = rng.randrange(0, 4)  # few values: many ties, which the rule breaks by picks and order
    return Load(node, rng.choice([0.0, 0.5, 1.0]), queue, rng.choice([0.0, 0.25]), queue, 0, 0, 0, 0, now, node.host,
                1, 8, now)


@pytest.mark.parametrize("seed", range(12))
def test_the_ranking_chooses_as_a_scan_of_every_node_would(seed):
    rng = random.Random(seed)
    window = rng.choice([1, 2, 4, 16])
    nodes: dict = {}
    ranking = _Ranking(nodes, window, LATE * INTERVAL)
    orders = iter(range(10**6))
    now = 0.0
    pool = [NodeRef("10.0.0.1", 7000 + i, 1) for i in range(rng.choice([1, 3, 12, 40]))]
    flying = []  # (node, calls) sent and not answered

    def add(node):
        nodes[node] = state = _Node(now, next(orders))
        ranking.rank(node, state)

    for node in pool:
        add(node)
    for _ in range(3000):
        op = rng.random()
        if op < 0.25:  # a report (reports of late nodes too: they count again)
            node = rng.choice(pool)
            state = nodes.get(node)
            if state is not None:
                state.load, state.heard, state.late = _report(rng, node, now), now, False
                ranking.rank(node, state)
        elif op < 0.55:  # a job of some calls, sent where the rule says
            calls = rng.choice([1, 1, 1, 2, 5, 20])
            expected = _scan_pick(nodes, now, calls, window)
            assert ranking.pick(now, calls) == expected
            if expected is not None:
                state = nodes[expected]
                state.calls += calls
                state.picked += 1
                ranking.rank(expected, state)
                flying.append((expected, calls))
        elif op < 0.75 and flying:  # an answer
            node, calls = flying.pop(rng.randrange(len(flying)))
            state = nodes.get(node)
            if state is not None:
                state.calls -= calls
                ranking.rank(node, state)
        elif op < 0.82:  # place: the least loaded, full or not; the next tie goes elsewhere
            expected = _scan_least(nodes, now)
            assert ranking.least(now) == expected
            if expected is not None:
                nodes[expected].picked += 1
                ranking.rank(expected, nodes[expected])
        elif op < 0.86:  # a node lost, its calls with it
            if nodes:
                node = rng.choice(list(nodes))
                del nodes[node]
                flying = [item for item in flying if item[0] != node]
        elif op < 0.90:  # a node (back) up: added last
            missing = [node for node in pool if node not in nodes]
            if missing:
                add(rng.choice(missing))
        else:  # time passes: some reports become late
            now += rng.choice([0.1, 0.5, 1.0, 3.0])
        assert ranking.least(now) == _scan_least(nodes, now)
    for heap in ranking.heaps:  # compaction keeps the heaps near the nodes' number
        assert len(heap) <= 2 * len(nodes) + 33
