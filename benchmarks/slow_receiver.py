"""A fast sender and a slow receiver on two nodes: how much the receiving node grows.

A process on node A sends ``count`` small messages (1 million in the full run)
to a process on node B that reads them at about 100,000 a second, yielding
every 1,000 sends as a producer that does other work does; node B's RSS is
sampled every 20 ms from this (parent) process, and its peak above B's RSS
before the stream is reported.  Twice in the same run: with termite's flow
control (the default mailbox limit; termite._net.flow) and without it (a
limit no mailbox reaches), as termite was before it.  The sender's own rate
is reported too: held back, it runs at the receiver's pace.  Loopback, no CURVE.
"""

from __future__ import annotations

import threading
import time

from benchmarks._result import Result, run_child
from benchmarks.nodes import _server_process

SIZES = {False: 1_000_000, True: 100_000}  # quick -> messages
TARGET_GROWTH = 100.0  # MB above idle, with flow control
NO_LIMIT = 1 << 40  # messages: flow control never starts
CHILD_TIMEOUT = 180
WAIT = 120  # seconds the whole stream may take


async def _slow_sink():
    import termite
    from termite import receive, send

    count = 0
    while True:
        msg = await receive()
        if msg[0] == "end":
            send(msg[1], count)
            return
        count += 1
        if count % 100 == 0:
            await termite.sleep(0.001)  # about 100,000 messages a second at most


async def _drive(host, port, count):
    import termite
    from termite import receive, send, spawn

    me = termite.self()
    node = await termite.connect(host, port, timeout=10)
    sink = spawn(_slow_sink, node=node)
    start = time.perf_counter()
    for i in range(count):
        send(sink, ("data", i))
        if i % 1000 == 999:
            await termite.sleep(0)
    sent = time.perf_counter() - start
    send(sink, ("end", me))
    got = await receive(timeout=WAIT)
    if got != count:
        raise RuntimeError(f"the slow sink counted {got} of {count} messages")
    return {"sent_seconds": sent, "total_seconds": time.perf_counter() - start}


def node_a(host, port, count):
    import termite

    return termite.run(_drive, host, port, count, network=termite.Network(insecure=True))


def _peak_growth(limit: int | None, count: int) -> tuple[float, dict]:
    """Run one stream into a fresh node B; return B's peak RSS growth (MB) and A's timings."""
    import psutil

    args = ["--port", "0", "--insecure", *(["--mailbox-limit", str(limit)] if limit else [])]
    with _server_process("termite.node", args, "termite node") as (words, server):
        host, port = words[2].rsplit(":", 1)
        node = psutil.Process(server.pid)
        idle = node.memory_info().rss
        peak, done = [idle], threading.Event()

        def sample():
            while not done.wait(0.02):
                try:
                    peak[0] = max(peak[0], node.memory_info().rss)
                except psutil.Error:
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            timings = run_child(__name__, "node_a", host, int(port), count, timeout=CHILD_TIMEOUT)
        finally:
            done.set()
            sampler.join(5)
    return (peak[0] - idle) / 1e6, timings


def run(quick: bool = False) -> list[Result]:
    count = SIZES[quick]
    held, held_times = _peak_growth(None, count)
    free, free_times = _peak_growth(NO_LIMIT, count)
    what = f"{count:,} messages to a slow receiver"
    return [
        Result("nodes-stream", f"receiving node's peak RSS above idle, {what}", held, "MB", TARGET_GROWTH, "<=",
               details=held_times),
        Result("nodes-stream", "the same without flow control (no mailbox limit)", free, "MB", details=free_times),
        Result("nodes-stream", "sender's rate with flow control (messages/s)", count / held_times["sent_seconds"],
               "msgs/s"),
        Result("nodes-stream", "sender's rate without flow control (messages/s)", count / free_times["sent_seconds"],
               "msgs/s"),
    ]
