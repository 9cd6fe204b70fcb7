"""The ping-pong benchmark (Termite paper, section 7.2).

Two processes on one node send a message back and forth: ping sends
``(self(), n)`` and pong replies with ``n``, using plain send and receive.
Both exchanges run in one node, with their servers alive for the whole
run, in short windows that take turns: plain first in one pair and call
first in the next.  The same-node speed moves from moment to moment on this
machine (a plain round trip took 0.19 or 0.35 us in consecutive runs, with
the same handoffs), so a ratio of two figures taken seconds apart says as
much about the moment as about the code: the call / send-receive ratio is
the median of the ratios of windows taken together, pair by pair, and the
rates are the medians of each exchange's windows.

Erlang/OTP runs the same two exchanges (benchmarks/erlang/pingpong.erl) in
the same run, in the same turns, in a fresh VM: plain send and receive, and
a call as ``gen_server:call`` makes it (monitor, tagged request, selective
receive of the reply, demonitor), which is what ``termite.call`` does.  The
table shows Erlang's medians and termite / Erlang of the rates.  That needs
``erl`` (``apt-get install erlang-base``, see benchmarks/_erlang.py);
without it the Erlang lines say so and termite's figures still run.
"""

from __future__ import annotations

import contextlib
import time

import termite
from termite import call, receive, send, spawn

from benchmarks import _erlang, _windows
from benchmarks._result import Result, median

TARGET = 300_000  # round trips per second, on a 2-core machine
TARGET_VS_ERLANG = 0.5  # termite's send/receive rate / Erlang's (issue 20)
TARGET_CALL = 1.5  # a call's round trip time / a send/receive round trip's (issue 20)
MIN_TRIPS = 60_000  # per window
WINDOW = 0.3  # seconds per window
PAIRS = 10  # windows of each exchange, taking turns
CHUNK = 10_000
WARMUP = 20_000
QUICK = {"window": 0.1, "min_trips": 10_000, "pairs": 2, "warmup": 2_000}
MODES = ("plain", "call")


async def _pong():
    while True:
        sender, n = await receive()
        send(sender, n)


async def _echo():
    while True:
        sender, tag, n = await receive()
        send(sender, (tag, n))


async def _plain_trips(server, count):
    me = termite.self()
    for i in range(count):
        send(server, (me, i))
        await receive()


async def _call_trips(server, count):
    for i in range(count):
        await call(server, i)


async def _window(trips, server, window, min_trips) -> tuple[float, int]:
    """Chunks of round trips until ``window`` seconds and ``min_trips`` passed: (round trips/s, round trips)."""
    done = 0
    start = time.perf_counter()
    while True:
        await trips(server, CHUNK)
        done += CHUNK
        elapsed = time.perf_counter() - start
        if elapsed >= window and done >= min_trips:
            return done / elapsed, done


async def _measure(window, min_trips, pairs, warmup) -> dict:
    """mode -> ([round trips/s per window], [round trips per window]), the modes taking turns."""
    exchanges = {"plain": (_plain_trips, spawn(_pong)), "call": (_call_trips, spawn(_echo))}
    for trips, server in exchanges.values():
        await trips(server, warmup)
    measured = {mode: ([], []) for mode in MODES}
    for i in range(pairs):
        for mode in MODES if i % 2 == 0 else MODES[::-1]:
            trips, server = exchanges[mode]
            rate, done = await _window(trips, server, window, min_trips)
            measured[mode][0].append(rate)
            measured[mode][1].append(done)
    for _, server in exchanges.values():
        termite.kill(server)
    return measured


def _call_ratio(side: str, measured: dict, **target) -> Result:
    """A call's time per trip over a plain one's: the median of the windows' ratios, pair by pair."""
    (plain, _), (call, _) = measured["plain"], measured["call"]
    spread = _windows.spread([p / c for p, c in zip(plain, call)])
    return Result("pingpong", f"{side}: call / send-receive, time per trip", spread["median"], "",
                  details={"pairs": spread}, **target)


def run(quick: bool = False) -> list[Result]:
    params = QUICK if quick else {"window": WINDOW, "min_trips": MIN_TRIPS, "pairs": PAIRS, "warmup": WARMUP}
    how = f" (median of {params['pairs']} × {params['window']:g} s, taking turns)"
    erlang_missing = _erlang.missing()
    results = []
    with contextlib.ExitStack() as stack:
        erlang = None if erlang_missing else stack.enter_context(_erlang.compiled("pingpong"))
        termite_side = termite.run(_measure, params["window"], params["min_trips"], params["pairs"], params["warmup"])
        erlang_side, schedulers = None, None
        if erlang is not None:
            figures = erlang.run("pingpong", round(params["window"] * 1e6), params["min_trips"], params["pairs"],
                                 params["warmup"], CHUNK)
            erlang_side = {mode: (_erlang.as_list(figures[f"{mode}_rates"]),
                                  _erlang.as_list(figures[f"{mode}_round_trips"])) for mode in MODES}
            schedulers = figures["schedulers"]
    for mode, label, target in (("plain", "send/receive", TARGET), ("call", "termite.call", None)):
        rates, counts = termite_side[mode]
        results.append(
            Result("pingpong", f"{label} round trips{how}", median(rates), "/s", target=target,
                   op=">=" if target is not None else None,
                   details={"rates_per_s": rates, "round_trips": counts, "us_per_round_trip": 1e6 / median(rates)})
        )
        erlang_label = "send/receive" if mode == "plain" else "call"
        vs = f"termite / Erlang, rate: {erlang_label}"
        vs_target = {"target": TARGET_VS_ERLANG, "op": ">="} if mode == "plain" else {}
        if erlang_side is None:
            results.append(Result("pingpong", f"Erlang, {erlang_label}: {erlang_missing}", None, "/s"))
            results.append(Result("pingpong", f"{vs}: {erlang_missing}", None, "", **vs_target))
            continue
        erlang_rates, erlang_counts = erlang_side[mode]
        results.append(
            Result("pingpong", f"Erlang, {erlang_label}{how}", median(erlang_rates), "/s",
                   details={"rates_per_s": erlang_rates, "round_trips": erlang_counts,
                            "us_per_round_trip": 1e6 / median(erlang_rates), "schedulers": schedulers})
        )
        results.append(Result("pingpong", vs, median(rates) / median(erlang_rates), "", **vs_target))
    results.append(_call_ratio("termite", termite_side, target=TARGET_CALL, op="<="))
    if erlang_side is not None:
        results.append(_call_ratio("Erlang", erlang_side))
    return results
