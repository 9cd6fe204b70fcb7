"""Process bodies for tests/test_supervisor.py, importable on every node (tests/nodecode is on their path).

Each child reports its start to ``report_to`` as ``("started", tag, pid,
node)``, so a test waits on messages, never on the clock.
"""

import termite
from termite import ANY, Exit, Pid, Tag, receive, send


async def worker(report_to, tag):
    """Report the start; then "crash" raises, ("exit", reason) ends with reason, pings are answered."""
    send(report_to, ("started", tag, termite.self(), termite.current_node()))
    while True:
        match await receive():
            case "crash":
                raise RuntimeError(f"{tag} crashed on purpose")
            case ("exit", "normal"):
                return
            case ("exit", reason):
                termite.exit(termite.self(), reason)  # ends this process with `reason`
            case (Pid() as sender, Tag() as ref, "ping"):
                send(sender, (ref, ("pong", tag, termite.current_node())))


async def stubborn(report_to, tag):
    """Trap exits and never end: the supervisor has to kill it after its shutdown time."""
    termite.trap_exit(True)
    send(report_to, ("started", tag, termite.self(), termite.current_node()))
    while True:
        msg = await receive()
        send(report_to, ("ignored", tag, msg))


async def tidy(report_to, tag):
    """Trap exits; on the supervisor's "shutdown", clean up (report it) and end."""
    termite.trap_exit(True)
    send(report_to, ("started", tag, termite.self(), termite.current_node()))
    msg = await receive(Exit(Pid, ANY))
    send(report_to, ("cleaned up", tag, msg.reason))
    termite.trap_exit(False)
    termite.exit(termite.self(), msg.reason)  # end as asked: reason "shutdown"


async def pong_server():
    """The paper's start-pong-server of section 5.3: 'crash divides by zero."""
    while True:
        match await receive((Pid, Tag, "crash"), (Pid, Tag, "ping")):
            case (sender, tag, "crash"):
                send(sender, (tag, 1 / 0))
            case (sender, tag, "ping"):
                send(sender, (tag, "pong"))


async def polite(report_to):
    """Ends when asked: the transparent supervisor's "shutdown" request."""
    send(report_to, ("started", "polite", termite.self(), termite.current_node()))
    await receive("shutdown")
