"""A turn that spawns many processes pauses the cyclic collector until it ends (termite/_core/kernel.py)."""

from __future__ import annotations

import gc
import weakref

import termite
from termite import receive, send, spawn
from termite._core.kernel import SPAWN_BURST


async def _idle():
    await receive()


async def _short():
    return None


class _Cycle:
    def __init__(self):
        self.me = self


def test_a_burst_of_spawns_pauses_the_collector_for_the_rest_of_its_turn():
    async def main():
        seen = []
        await termite.sleep(0)  # a new turn: the node's first processes are not counted in it
        pids = [spawn(_idle) for _ in range(SPAWN_BURST - 1)]
        seen.append(gc.isenabled())  # one short of a burst
        pids.append(spawn(_idle))
        seen.append(gc.isenabled())  # the burst: paused
        pids += [spawn(_idle) for _ in range(100)]
        await termite.sleep(0)  # the turn ends: collection resumes
        seen.append(gc.isenabled())
        seen.append(gc.get_freeze_count())
        for pid in pids:
            send(pid, "stop")
        return seen

    assert gc.isenabled()
    assert termite.run(main) == [True, False, True, 0]
    assert gc.isenabled()


def test_what_a_burst_leaves_in_cycles_is_collected_later():
    async def main():
        # a cycle made in a burst's turn, then unreachable: freed only by the cyclic collector
        garbage = _Cycle()
        ref = weakref.ref(garbage)
        for _ in range(SPAWN_BURST):
            spawn(_short)
        del garbage
        await termite.sleep(0)
        # bursts of processes that end: the promoted count outgrows the node, a full collection runs
        for _ in range(8):
            for _ in range(SPAWN_BURST):
                spawn(_short)
            await termite.sleep(0)
            await termite.sleep(0)
            if ref() is None:
                return True
        return ref() is None

    assert termite.run(main)


def test_a_program_that_disabled_the_collector_keeps_it_disabled():
    async def main():
        for _ in range(SPAWN_BURST + 10):
            spawn(_short)
        await termite.sleep(0)
        return gc.isenabled()

    gc.disable()
    try:
        assert termite.run(main) is False
    finally:
        gc.enable()
