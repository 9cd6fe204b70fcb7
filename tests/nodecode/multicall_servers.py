"""Generic servers for tests/test_multicall.py, importable on every node (tests/nodecode is on their path)."""

import termite
from termite import gen_server, send


class Answers(gen_server.GenServer):
    """Answers ``"where"`` with its node; casts go to ``report_to`` as ``("cast", node, msg)``.

    With ``hold=True`` it answers no call: it tells ``report_to`` ``("holding", node)``
    and keeps the caller waiting (so a test can kill its node mid-call), until
    the cast ``"release"`` answers them all, late, and says ``("released", n)``.
    """

    async def init(self, report_to, hold=False):
        return {"report_to": report_to, "hold": hold, "held": []}

    async def handle_call(self, request, sender, state):
        here = termite.current_node()
        if state["hold"]:
            state["held"].append(sender)
            send(state["report_to"], ("holding", here))
            return ("noreply", state)
        match request:
            case "where":
                return ("reply", ("at", here), state)
            case "crash":
                raise RuntimeError("asked to crash")

    async def handle_cast(self, msg, state):
        if msg == "release":  # answer the calls held, late
            for sender in state["held"]:
                gen_server.reply(sender, "late")
            send(state["report_to"], ("released", len(state["held"])))
        else:
            send(state["report_to"], ("cast", termite.current_node(), msg))
        return ("noreply", state)
