"""Timeouts: how to live with messages that may never come (paper, section 4.4).

    (! some-server (list (self) 'request argument))
    (? 10)                    ; waits for a maximum of 10 seconds
    ; or, equivalently:
    (recv
      (x x)
      (after 10 (raise 'timeout)))

receive(timeout=s) raises termite.Timeout when nothing comes in time, or returns
default= if one is given (the paper's (? 10 default)).  The `after` clause is a
timeout with a default that no message can be, and a `case` for it.
"""

import termite
from termite import ANY, Pid, receive, send, spawn

WAIT = 0.1  # seconds; the paper waits 10, this tour has no time to lose


async def some_server():
    """Answers ("answer", 2 * argument) to every (from, "request", argument)."""
    while True:
        match await receive((Pid, "request", ANY)):
            case (sender, "request", argument):
                send(sender, ("answer", 2 * argument))


async def lost_server():
    """Takes every message and never answers: a server on the far side of a dead link."""
    while True:
        await receive()


async def ask(server, argument):
    """Send a request, then wait with the `after` form; returns what the recv returns."""
    send(server, (termite.self(), "request", argument))
    match await receive(("answer", ANY), timeout=WAIT, default=None):
        case ("answer", x):
            return x
        case None:                                 # (after WAIT ...)
            return "timeout"


async def main():
    lost = spawn(lost_server)
    send(lost, (termite.self(), "request", 21))

    try:
        await receive(timeout=WAIT)                # (? WAIT)
    except termite.Timeout:
        print(f"receive(timeout={WAIT}) raised termite.Timeout")

    reply = await receive(timeout=WAIT, default="no reply")    # (? WAIT 'no-reply)
    print(f"receive(timeout={WAIT}, default='no reply') => {reply!r}")

    print("after form, server answers =>", await ask(spawn(some_server), 21))
    print("after form, server silent  =>", await ask(lost, 21))


if __name__ == "__main__":
    termite.run(main)
