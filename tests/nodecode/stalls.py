"""Process bodies for tests/test_node_faults.py: streams, stalls and travellers, run on node processes."""

import os
import time

import termite
from termite import NodeDown, NodeUp, Pid, receive, send


def hold_the_gil(seconds: float) -> int:
    """One C call that holds the GIL for about ``seconds``: sum() over a range never lets go."""
    start = time.perf_counter()
    n = sum(range(2_000_000))  # calibrate: how many a second
    per_second = 2_000_000 / max(time.perf_counter() - start, 1e-6)
    return sum(range(int(per_second * seconds)))


async def stall(seconds: float, reply_to: Pid, after: float = 0.0):
    """Say it is ready; on "go", wait ``after`` s, then hold the GIL for ``seconds`` in one C call, then say it is done."""
    send(reply_to, ("ready to stall", termite.self()))
    await receive("go")
    if after:
        await termite.sleep(after)
    hold_the_gil(seconds)
    send(reply_to, ("stalled", termite.self()))


async def numbered_sink(reply_to: Pid, sender_node):
    """Record numbered messages and node news about ``sender_node`` in arrival order; report on ("report", pid)."""
    termite.monitor_node(sender_node)
    log = []
    while True:
        msg = await receive()
        if msg.__class__ is tuple and len(msg) == 2 and msg[0] == "report":
            send(msg[1], ("log", log))
        elif msg.__class__ is NodeDown:
            log.append(("down",))
        elif msg.__class__ is NodeUp:
            log.append(("up",))
        elif msg.__class__ is termite.Exit:
            log.append(("exit", msg.reason))
        else:
            log.append(msg)


async def stream(to: Pid, count: int, pace: int):
    """Send ("n", i) for i in 1..count to ``to``, yielding every ``pace`` messages."""
    for i in range(1, count + 1):
        send(to, ("n", i))
        if i % pace == 0:
            await termite.sleep(0.001)
    send(to, ("end", count))


async def linked_waiter(partner: Pid, reply_to: Pid):
    """Trap exits, link to ``partner``, and report every Exit it gets (and when it is linked)."""
    termite.trap_exit(True)
    termite.link(partner)
    send(reply_to, ("linked", termite.self()))
    while True:
        msg = await receive(termite.Exit)
        send(reply_to, ("exit", termite.self(), msg.pid, msg.reason))


async def hold_until(flag: str, started: str, after: float = 0.0):
    """On "go": wait ``after`` s, write ``started``, then keep this node's loop busy (a Python loop:
    no timer, no socket read, no other process runs here) until ``flag`` exists (30 s at most);
    0.1 s later, with what was read meanwhile handled and answered, write ``started + ".done"``."""
    await receive("go")
    if after:
        await termite.sleep(after)
    open(started, "w").close()
    deadline = time.monotonic() + 30
    while not os.path.exists(flag) and time.monotonic() < deadline:
        pass
    await termite.sleep(0.1)
    open(started + ".done", "w").close()


async def forever():
    """Wait for ever (until an exit signal ends it)."""
    await receive(lambda msg: False)


async def traveller(target, reply_to: Pid):
    """Report where it runs, try to migrate to ``target``, then report where it runs now, for ever."""
    send(reply_to, ("at", termite.self(), termite.current_node(), 0))
    try:
        await termite.migrate(target)
    except termite.MigrationError as exc:
        send(reply_to, ("refused", termite.self(), str(exc)))
    step = 1
    while True:
        send(reply_to, ("at", termite.self(), termite.current_node(), step))
        step += 1
        await termite.sleep(0.2)


async def stalled_handoff(target, staller: Pid, reply_to: Pid):
    """On "go": set ``staller`` (on this node) going, migrate to ``target``, and report where it runs from then on.

    The staller holds this node's GIL while the target's READY waits unread, so the commit
    is sent late, into whatever has become of the target meanwhile.
    """
    send(reply_to, ("ready to travel", termite.self()))
    await receive("go")
    send(staller, "go")
    try:
        await termite.migrate(target)
    except termite.MigrationError as exc:
        send(reply_to, ("refused", termite.self(), str(exc)))
    while True:
        send(reply_to, ("at", termite.self(), termite.current_node()))
        await termite.sleep(0.2)


async def orphan(reply_to: Pid):
    """Say it runs, then wait for ever (until an exit signal ends it)."""
    send(reply_to, ("alive", termite.self()))
    await receive(lambda msg: False)


async def spawn_linked_from(node, reply_to: Pid):
    """On the node to be lost: spawn ``orphan`` on ``node`` linked to this process, link and monitor
    another there, then wait."""
    child = termite.spawn(orphan, reply_to, node=node, link=True)
    other = termite.spawn(orphan, reply_to, node=node)
    termite.link(other)
    termite.monitor(child)
    await receive(lambda msg: False)


async def meet(node, reply_to: Pid):
    """Make this node and ``node`` connected (a call there and back), then say so."""
    await termite.call(termite.spawn(echo_once, node=node), "hello", timeout=10)
    send(reply_to, ("met", termite.current_node(), node))


async def echo_once():
    sender, tag, msg = await receive((Pid, termite.Tag, object))
    send(sender, (tag, msg))


async def asks_by_name(node, reply_to: Pid):
    """``call((name, node), ...)`` with no timeout; what it gave or raised goes to ``reply_to``."""
    try:
        send(reply_to, ("answered", await termite.call(("nobody", node), "hello")))
    except Exception as exc:  # noqa: BLE001 - the test looks at what it was
        send(reply_to, ("raised", type(exc).__name__, str(exc)))


async def nodes_and_dispatch_targets(reply_to: Pid):
    """What this node lists in ``nodes()`` and its dispatcher counts as places to run work, once it
    has heard of ``reply_to``'s node (``("seen", nodes, targets)``)."""
    termite.start_dispatcher(0.1)
    targets: dict = {}
    for _ in range(100):  # bounded: 10 s of reports
        targets = await termite.loads()
        if reply_to.node in targets and targets[reply_to.node] is not None:
            break
        await termite.sleep(0.1)
    send(reply_to, ("seen", termite.nodes(), list(targets)))
