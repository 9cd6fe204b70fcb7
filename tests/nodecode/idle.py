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


def _text(node) -> str:
    return f"{node.host}:{node.port}"


async def chatter(seed: int, duration: float, gap: float, burst: int):
    """The idle soak's workload: bursts of numbered messages to random peers with random quiet gaps
    around the idle close, so that questions, answers and new frames cross; no links or monitors
    (only ``monitor_node(None)``, which holds nothing).  Logs, per sender node, the numbers received
    and the node's NodeDown/NodeUp in arrival order; on ("report", pid) sends {"sent", "log", "stats"}."""
    import random

    rng = random.Random(seed)
    termite.monitor_node(None)
    peers = (await receive(("peers", list)))[1]
    sent: dict = {}
    log: dict = {}
    later = []  # what came meanwhile that is not the workload's: the report's request

    def take(msg):
        if msg.__class__ is tuple and len(msg) == 3 and msg[0] == "m":
            log.setdefault(msg[1], []).append(msg[2])
        elif msg.__class__ in (NodeDown, NodeUp):
            log.setdefault(_text(msg.node), []).append("down" if msg.__class__ is NodeDown else "up")
        else:
            return msg
        return None

    loop = current().kernel.loop
    end = loop.time() + duration
    while loop.time() < end:
        to = rng.choice(peers)
        for _ in range(rng.randint(1, burst)):
            n = sent[_text(to.node)] = sent.get(_text(to.node), 0) + 1
            send(to, ("m", _text(termite.self().node), n))
        quiet_until = loop.time() + rng.uniform(0, gap)
        while (left := quiet_until - loop.time()) > 0:
            msg = await receive(timeout=left, default=None)
            if msg is not None and take(msg) is not None:
                later.append(msg)
    while True:
        msg = later.pop(0) if later else take(await receive())
        if msg.__class__ is tuple and len(msg) == 2 and msg[0] == "report":
            transport = current().table.remote.transport
            send(msg[1], ("report", {"me": _text(termite.self().node), "sent": sent, "log": log,
                                     "stats": (transport.stats.suspended, transport.stats.resumed)}))


async def watches_node_and_tells(node, reply_to: Pid):
    """``monitor_node(node)``, and pass its NodeDown on to ``reply_to``."""
    termite.monitor_node(node)
    send(reply_to, ("told", await receive(NodeDown)))


async def monitors_and_ends_on_stop(pid: Pid):
    """Monitor ``pid``; end on "stop" without demonitor."""
    termite.monitor(pid)
    await receive("stop")
