"""The cost of ``termite.call`` when the caller's mailbox holds a backlog.

A call waits only for its reply, so unmatched messages already in the
caller's mailbox should not slow it down.  The figure is the mean time per
call to a local echo server, first with an empty mailbox and then with
10,000 unmatched messages waiting (sent to oneself first), in the same run.
"""

from __future__ import annotations

import time

import termite
from termite import call, receive, send, spawn

from benchmarks._result import Result
from benchmarks.pingpong import _echo  # the same tagged echo server

CALLS = 20_000
QUICK_CALLS = 2_000
BACKLOG = 10_000
WARMUP = 2_000
TARGET_RATIO = 2.0


async def _calls(server, count):
    start = time.perf_counter()
    for i in range(count):
        await call(server, i)
    return (time.perf_counter() - start) / count


async def _main(calls, backlog):
    server = spawn(_echo)
    me = termite.self()
    await _calls(server, WARMUP)
    empty = await _calls(server, calls)
    for i in range(backlog):
        send(me, ("unmatched", i))
    loaded = await _calls(server, calls)
    left = 0
    while await receive(timeout=0, default=None) is not None:
        left += 1
    termite.kill(server)
    return empty, loaded, left


def run(quick: bool = False) -> list[Result]:
    calls = QUICK_CALLS if quick else CALLS
    empty, loaded, left = termite.run(_main, calls, BACKLOG)
    if left != BACKLOG:
        raise RuntimeError(f"the backlog should still hold {BACKLOG} messages after the calls, it holds {left}")
    details = {"calls": calls, "backlog": BACKLOG, "empty_us": empty * 1e6, "backlog_us": loaded * 1e6}
    return [
        Result("call-backlog", f"call, empty mailbox ({calls:,} calls)", empty * 1e6, "µs", details=details),
        Result("call-backlog", f"call, {BACKLOG:,} waiting ({calls:,} calls)", loaded * 1e6, "µs",
               details=details),
        Result("call-backlog", "ratio backlog / empty", loaded / empty, "", target=TARGET_RATIO, op="<",
               details=details),
    ]
