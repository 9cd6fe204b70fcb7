"""Looking inside a running node: Erlang's processes(), process_info/1 and sys:trace, in termite.

    termite.processes()          the pids of this node's processes (await it for another node's)
    termite.process_info(pid)    its state, what it waits for and where, its counts, links, moves...
    await termite.trace(pid)     a Trace of every message it receives and sends, and of its end

A counter waits for numbers; we look at it while it waits, then trace it as
it adds them up and ends.
"""

import os

import termite
from termite import Pid, receive, send, spawn


async def counter():
    total = 0
    while True:
        match await receive((Pid, "add", int), (Pid, "total")):
            case (_, "add", n):
                total += n
            case (sender, "total"):
                send(sender, total)
                return


async def main():
    pid = spawn(counter, name="counter")
    await termite.sleep(0)  # it runs to its receive
    print("processes here:", len(termite.processes()))
    info = termite.process_info(pid)
    print(f"{info.name} is {info.state}: {info.waiting_for}")
    print(f"  at {os.path.basename(info.location)}, {info.mailbox} waiting, ~{info.memory} bytes")

    await termite.trace(pid)
    me = termite.self()
    for n in (1, 2, 3):
        send(pid, (me, "add", n))
    send(pid, (me, "total"))
    print("total:", await receive(int))
    while True:
        event = await receive(termite.Trace)
        shown = event.message[1:] if event.event == "received" else event.message  # a message without our pid
        print(f"  trace: {event.event:<8} {shown!r}")
        if event.event == "exit":
            break
    print("processes here:", len(termite.processes()))


if __name__ == "__main__":
    termite.run(main)
