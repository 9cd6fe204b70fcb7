"""Timers: a message or an exit signal, later (Erlang's send_after, send_interval, kill_after).

    python examples/timers.py

A worker reports progress on a send_interval tick and must finish within a
deadline set with send_after; a reply that comes in time cancels the
deadline, and cancel_timer says how much time was left.  kill_after ends a
worker that never answers.
"""

import termite
from termite import Down, cancel_timer, kill_after, receive, send, send_after, send_interval, spawn


async def worker(boss, steps):
    """Does ``steps`` steps, one per tick it receives, then reports done."""
    ticker = send_interval(0.01, termite.self(), "tick")
    for _ in range(steps):
        await receive("tick")
    cancel_timer(ticker)
    send(boss, ("done", steps))


async def stuck():
    await receive("never sent")


async def run_with_deadline(steps, seconds):
    """Start a worker; its ("done", n), or "too late" if the deadline's message comes first."""
    spawn(worker, termite.self(), steps)
    deadline = send_after(seconds, termite.self(), "deadline")
    match await receive(("done", int), "deadline"):
        case ("done", n):
            left = cancel_timer(deadline)  # the seconds it had left: it will not come now
            return f"done, {n} steps; cancel_timer(deadline) => {left:.0f} s left"
        case "deadline":
            return "the deadline came first"


async def main():
    print("3 ticks, deadline 5 s    =>", await run_with_deadline(3, 5.0))
    print("50 ticks, deadline 0.1 s =>", await run_with_deadline(50, 0.1))

    pid = spawn(stuck)
    watch = termite.monitor(pid)
    kill_after(0.05, pid)
    down = await receive(Down(watch, pid, termite.ANY))
    print("kill_after(0.05, stuck)  =>", down.reason)


if __name__ == "__main__":
    termite.run(main)
