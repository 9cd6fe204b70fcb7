"""Process bodies for tests/test_callcc.py, importable on every node (tests/nodecode is on their path).

They live outside the test module because pytest rewrites a test module's
bytecode, and a node refuses a continuation whose code differs from its own.
"""

import threading

import termite
from termite import Continuation, MigrationError, Pid, Tag, become, continuation, receive, send, spawn


async def reply_with_continuation(sender, tag):
    """The paper's ``(call/cc (lambda (k) (! from (list tag k))))``: returns in the original and in a resumed k."""
    k = await continuation()
    if isinstance(k, Continuation):
        send(sender, (tag, k))


async def counter(n):
    """A process with state: answers incr, who and clone; a clone goes on from the same n."""
    while True:
        sender, tag, msg = await receive((Pid, Tag, ...))
        if msg == "incr":
            n += 1
            send(sender, (tag, n))
        elif msg == "who":
            send(sender, (tag, (termite.self(), termite.current_node(), n)))
        elif msg == "clone":
            await reply_with_continuation(sender, tag)


async def server(reply_to):
    """Version 1, with the paper's bug: ping answers 'gnop'.  Understands ('update', k)."""
    while True:
        match await receive():
            case ("update", k):
                try:
                    await become(k)
                except MigrationError as exc:
                    send(reply_to, ("update refused", termite.self(), str(exc)))
            case (Pid() as sender, Tag() as tag, "ping"):
                send(sender, (tag, "gnop"))  # bug
            case (Pid() as sender, Tag() as tag, "who"):
                send(sender, (tag, termite.self()))


async def new_server(reply_to):
    """Version 2: ping answers 'pong'; hands out its continuation on clone; stops on stop."""
    served = 0
    while True:
        match await receive():
            case ("update", k):
                try:
                    await become(k)
                except MigrationError as exc:
                    send(reply_to, ("update refused", termite.self(), str(exc)))
            case (Pid() as sender, Tag() as tag, "clone"):
                await reply_with_continuation(sender, tag)
            case (Pid() as sender, Tag() as tag, "ping"):
                served += 1
                send(sender, (tag, "pong"))  # fixed
            case (Pid() as sender, Tag() as tag, "who"):
                send(sender, (tag, termite.self()))
            case (Pid() as sender, Tag() as tag, "stop"):
                send(sender, (tag, served))
                return


async def resumed(reply_to):
    """Report what ``await continuation()`` returned, in whichever process returns from it."""
    k = await continuation()
    send(reply_to, ("resumed", termite.self(), k))
    await receive("stop")


async def replaced(reply_to, k, value):
    """Become ``k``; the finally block of what is replaced runs first."""
    try:
        send(reply_to, ("replacing", termite.self()))
        await become(k, value)
    finally:
        send(reply_to, ("finally ran", termite.self()))


async def holds_a_lock(reply_to):
    lock = threading.Lock()
    try:
        await continuation()
    except MigrationError as exc:
        send(reply_to, ("refused", str(exc), exc.variable))
    while True:
        sender, tag, msg = await receive((Pid, Tag, ...))
        with lock:
            send(sender, (tag, ("still here", msg)))


async def become_not_a_continuation(reply_to):
    try:
        await become("not a continuation")
    except TypeError as exc:
        send(reply_to, ("TypeError", str(exc)))


async def landing():
    """The slides' receiving end of migrate-task: start every continuation it gets, here."""
    while True:
        k = await receive(Continuation)
        spawn(become, k)


async def traveller(reply_to, to):
    """The slides' migrate-task: send the continuation to ``to`` and halt; go on where it is spawned."""
    steps = ["started"]
    send(reply_to, ("before", termite.self(), termite.current_node()))
    await receive("go")
    k = await continuation()
    if isinstance(k, Continuation):
        send(to, k)
        return  # (halt!)
    steps.append("landed")
    send(reply_to, ("after", termite.self(), termite.current_node(), steps))
