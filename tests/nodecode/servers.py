"""Generic servers for tests/test_gen_server.py, importable on every node (tests/nodecode is on their path).

They live outside the test module because pytest rewrites test modules, so
their classes would not be the ones a node process imports.
"""

import termite
from termite import gen_server, send


class Counter(gen_server.GenServer):
    """A counter that reports what happens to it to ``report_to`` (a pid, or None)."""

    async def init(self, count=0, report_to=None, trap_exits=False):
        if trap_exits:
            termite.trap_exit(True)
        return {"count": count, "report_to": report_to}

    async def handle_call(self, request, sender, state):
        match request:
            case "get":
                return ("reply", state["count"], state)
            case ("add", n):
                state["count"] += n
                return ("reply", state["count"], state)
            case "where":
                return ("reply", termite.current_node(), state)
            case "defer":  # answer later: the sender is handed to report_to
                self._report(state, ("deferred", sender))
                return ("noreply", state)
            case "crash":
                raise RuntimeError("counter crashed")
            case ("stop", reason):
                return ("stop", reason, "bye", state)
            case ("stop without reply", reason):
                return ("stop", reason, state)
            case "bad return":
                return ("reply", "missing the state")

    def handle_cast(self, msg, state):  # a plain function: callbacks need not be async
        match msg:
            case ("add", n):
                state["count"] += n
            case ("release", sender, value):
                gen_server.reply(sender, value)
            case "crash":
                raise ValueError("cast crashed")
            case "stop":
                return ("stop", "normal", state)
        return ("noreply", state)

    async def handle_info(self, msg, state):
        match msg:
            case ("ping", pid):
                send(pid, ("pong", state["count"]))
            case termite.Exit() | termite.Down():
                self._report(state, ("info", msg))
            case _:
                return await super().handle_info(msg, state)
        return ("noreply", state)

    async def terminate(self, reason, state):
        self._report(state, ("terminated", reason, state["count"]))

    @staticmethod
    def _report(state, msg):
        if state["report_to"] is not None:
            send(state["report_to"], msg)


class Refuses(gen_server.GenServer):
    """An init that fails: by raising, or by stopping."""

    async def init(self, how):
        if how == "raise":
            raise ValueError("init refused")
        if how == "return stop":
            return gen_server.Stop("not today")
        raise gen_server.Stop("not today")


class Stubborn(gen_server.GenServer):
    """A terminate that never ends (so stop(..., timeout=...) must kill it)."""

    async def terminate(self, reason, state):
        send(state, ("terminating", reason))
        await termite.receive("never sent")


class Echo(gen_server.GenServer):
    """The default init: its one argument is the state.  Only handle_call is defined."""

    async def handle_call(self, request, sender, state):
        return ("reply", (state, request), state)


# -- thunks for tests/test_futures_cells.py ----------------------------------------


def where_am_i():
    return termite.current_node()


async def fail_later(message):
    await termite.sleep(0)
    raise KeyError(message)


def fail_with_a_lock():
    import threading

    raise ValueError("holds a lock", threading.Lock())  # cannot be pickled: cannot travel
