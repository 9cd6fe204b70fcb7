"""Process bodies for tests/test_migration.py, importable on every node (tests/nodecode is on their path)."""

import threading

import termite
from termite import MigrationError, NodeRef, migrate, receive, send


async def hop(node, log):
    """A coroutine the wanderer awaits: migrate two levels down, inside try/finally."""
    try:
        where = await migrate(node)
    finally:
        log.append(("finally", str(termite.current_node())))
    return where


async def wanderer(reply_to, route):
    total, log = 0, []
    for i, node in enumerate(route):
        total += 10 * i
        where = await hop(node, log)
        if not where == termite.current_node() == node:
            raise AssertionError(f"at {termite.current_node()}, migrate said {where}, meant {node}")
        send(reply_to, ("at", i, termite.current_node(), termite.self(), total, list(log)))
        total += await receive(int)  # sent to the pid wherever it is; forwarded as needed
    return total


async def keeps_mailbox(reply_to, node):
    first = await receive("first")
    await migrate(node)
    rest = [await receive() for _ in range(3)]
    send(reply_to, ("got", first, rest, termite.current_node()))


async def holds_a_lock(reply_to, node):
    lock = threading.Lock()
    try:
        await migrate(node)
    except MigrationError as exc:
        send(reply_to, ("refused", str(exc), exc.variable))
    with lock:
        send(reply_to, ("still here", termite.current_node(), await receive("ping")))


async def crash_after_migrating(node):
    await migrate(node)
    await receive("crash now")
    raise RuntimeError("crashed after moving")


async def moves_by_call(reply_to, node):
    send(reply_to, ("before", termite.self()))
    await migrate(node, _report_there, reply_to)


async def _report_there(reply_to):
    send(reply_to, ("after", termite.self(), termite.current_node(), await receive("hello")))


async def move_and_wait(reply_to, node):
    await migrate(node)
    send(reply_to, ("moved", termite.self()))
    await receive("never sent")


async def hopper(reply_to, route, senders, every):
    """Check each sender's numbered stream (once each, in order) while moving along ``route`` every ``every`` messages."""
    last = [-1] * senders
    ended = received = moves = 0
    while ended < senders:
        kind, sender, i = await receive()
        if kind == "end":  # the sender's last number: none may be missing
            if i != last[sender]:
                send(reply_to, ("wrong", termite.self(), sender, last[sender], i))
                return
            ended += 1
            continue
        if i != last[sender] + 1:
            send(reply_to, ("wrong", termite.self(), sender, last[sender], i))
            return
        last[sender] = i
        received += 1
        if received % every == 0:
            await migrate(route[moves % len(route)])
            moves += 1
    send(reply_to, ("done", termite.self(), received, moves))


async def stream(pids, sender, count, reply_to):
    """Send ("n", sender, i) for i in range(count) to every pid, then ("end", sender, count - 1)."""
    for i in range(count):
        for pid in pids:
            send(pid, ("n", sender, i))
        await termite.sleep(0)  # let this node serve its other processes and the network
    for pid in pids:
        send(pid, ("end", sender, count - 1))
    send(reply_to, ("sent", sender))


async def migration_table(reply_to, pids):
    """Report where this node would send to each pid: its migration table entry, if any."""
    table = termite._core.process.current().table
    send(reply_to, ("table", termite.current_node(), [table.moved.get(pid) for pid in pids]))


async def move_along(reply_to, route):
    """Move along route, telling reply_to at each stop; answer pings with where it is."""
    for node in route:
        await migrate(node)
        send(reply_to, ("at", termite.current_node()))
    while True:
        sender, msg = await receive()
        if msg == "stop":
            return
        send(sender, ("pong", msg, termite.current_node()))


async def talk(pid, messages):
    for msg in messages:
        send(pid, msg)


async def spawn_on(node, fn, *args):
    termite.spawn(fn, *args, node=node)


async def stays(reply_to):
    """Migrate to the node it is on: a no-op, and with a function, a new body."""
    where = await migrate(termite.current_node())
    send(reply_to, ("stayed", where))
    await migrate(termite.current_node(), _report_there, reply_to)


async def returns_from_afar(route):
    """Move along ``route`` and return a value computed from its locals there."""
    total = 0
    for node in route:
        await termite.migrate(node)
        total += 1
    return total, termite.current_node()


async def waits_there(node, reply_to):
    """Move to ``node``, say so, and wait for ever (until its node is lost)."""
    await termite.migrate(node)
    termite.send(reply_to, ("there", termite.self()))
    await termite.receive("never sent")


async def sends_across_a_move(to, node, count, size, one_per_turn=False):
    """Send count numbers (with size bytes each) to ``to``, move to node, send count more."""
    pad = bytes(size)
    for i in range(count):
        send(to, (i, pad))
        if one_per_turn:  # each send is then its turn's first frame
            await termite.sleep(0)
    await migrate(node)
    for i in range(count, 2 * count):
        send(to, (i, pad))


async def counts_in_order(reply_to, total):
    """Receive total numbers and tell reply_to the first one out of order (or None)."""
    expected = 0
    for _ in range(total):
        got, _ = await receive()
        if got != expected:
            send(reply_to, ("order", got, expected))
            return
        expected += 1
    send(reply_to, ("order", None, None))


async def answers_after_moving(node):
    """Takes one call, moves to ``node`` with it unanswered, and there answers it, or ends if asked to."""
    sender, tag, msg = await receive((termite.Pid, termite.Tag, ...))
    await migrate(node)
    if msg == "end there":
        raise RuntimeError("ended after moving, a call unanswered")
    send(sender, (tag, (msg, termite.current_node())))


async def watches_then_moves(targets, node, reply_to):
    """Monitors each of ``targets``, moves to ``node``, demonitors the first there, says so, and ends on "end"."""
    refs = [termite.monitor(target) for target in targets]
    await migrate(node)
    termite.demonitor(refs[0])
    send(reply_to, ("moved", termite.self()))
    await receive("end")


async def monitors_on(pid, reply_to):
    """Tell ``reply_to`` how many monitors ``pid``, a process of this node, has."""
    send(reply_to, ("monitors", pid, termite.process_info(pid).monitors))


async def holds_a_monitor_across_moves(target, route, undo, reply_to):
    """Monitors ``target``, moves along ``route``, demonitors it there if ``undo``, says so, then relays to
    ``reply_to`` what it receives, as ``(self(), message)``."""
    ref = termite.monitor(target)
    for node in route:
        await migrate(node)
    if undo:
        termite.demonitor(ref)
    me = termite.self()
    send(reply_to, ("moved", me, ref))
    while True:
        send(reply_to, (me, await receive()))


async def moves_when_told(reply_to):
    """Moves to each node it is sent as ``("go", node)``, and says where it is."""
    while True:
        _, node = await receive(("go", NodeRef))
        await migrate(node)
        send(reply_to, ("at", termite.self(), node))


async def undoes_when_told(target, node, reply_to):
    """Monitors ``target``, moves to ``node``, then on "demonitor" undoes it; relays anything else."""
    ref = termite.monitor(target)
    await migrate(node)
    me = termite.self()
    send(reply_to, ("moved", me, ref))
    while True:
        msg = await receive()
        if msg == "demonitor":
            termite.demonitor(ref)
            msg = "undone"
        send(reply_to, (me, msg))


async def watches_for_a_down(target, reply_to):
    """Monitors ``target`` and tells ``reply_to`` of its Down."""
    termite.monitor(target)
    send(reply_to, ("watching", termite.self()))
    send(reply_to, ("down seen", await receive(termite.Down)))
