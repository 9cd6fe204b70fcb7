"""Process bodies for tests/test_idle_sessions.py, run on node processes."""

import termite
from termite import NodeDown, NodeUp, Pid, receive, send
from termite._core.process import current


async def recorder():
    """Watch every node (which holds no session open), echo numbered messages, and log both in
    arrival order; report the log on ("report", pid)."""
    termite.monitor_node(None)
    log = []
    while True:
        msg = await receive()
        if msg.__class__ is NodeDown:
            log.append(("down", str(msg.node)))
        elif msg.__class__ is NodeUp:
            log.append(("up", str(msg.node)))
        elif msg.__class__ is tuple and len(msg) == 2 and msg[0] == "report":
            send(msg[1], ("log", log))
        elif msg.__class__ is tuple and len(msg) == 3 and msg[0] == "echo":
            log.append(msg[2])
            send(msg[1], ("n", msg[2]))
        else:
            log.append(msg)


async def stream_later(to: Pid, delay: float, count: int):
    """After ``delay`` s, send ("late", i) for i in 1..count to ``to``: traffic that starts on this side."""
    await termite.sleep(delay)
    for i in range(1, count + 1):
        send(to, ("late", i))


async def transport_stats(reply_to: Pid):
    """This node's idle-close counters and its open DEALERs."""
    transport = current().table.remote.transport
    send(reply_to, ("stats", transport.stats.suspended, transport.stats.resumed, len(transport._conns.dealers)))


async def partner(reply_to: Pid):
    """Say who it is, then wait for ever (a process to link to or monitor)."""
    send(reply_to, ("partner", termite.self()))
    await receive(lambda m: False)


async def monitors(pid: Pid):
    """Monitor ``pid`` until told "stop"."""
    ref = termite.monitor(pid)
    await receive("stop")
    termite.demonitor(ref)


async def watches_node(node):
    """``monitor_node(node)`` until told "stop"."""
    ref = termite.monitor_node(node)
    await receive("stop")
    termite.demonitor_node(ref)


async def stall_on_go(reply_to: Pid):
    """Say "ready"; on "go", hold the GIL for 3 s (this node then cannot answer anything)."""
    from stalls import hold_the_gil

    send(reply_to, "ready")
    await receive("go")
    hold_the_gil(3.0)
