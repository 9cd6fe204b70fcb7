"""Per-sender order for a process that migrates.

A message to a process that never migrated goes straight to its node, and
the one connection between two nodes keeps order.  Once a process moves,
one sender's messages can take different paths: an early one forwarded along
the nodes it left, a later one sent straight to where it now is; or it comes
back to a node that forwarded earlier messages away.  So messages to a
migrant are numbered, and its host holds back one that arrives before an
earlier one of the same stream (the seed discussion's sequence numbers).
Processes that never migrate pay nothing.

Streams.  A node that knows the process migrates (its home, the nodes it
lived on, nodes told where it went) numbers its own messages to it: stream
``(node, False)``, *direct*.  A node that does not know sends plainly to the
process's home, which numbers them on its behalf: stream ``(node, True)``,
*relayed*.  When that node learns, it sends a SWITCH marker through the home,
which ends its relayed stream; its direct stream waits for the marker.  Both
streams start at 1.

When a node is lost, messages it was passing on are lost with it: held
messages are then released, and the home's relayed streams cannot end.
"""

from __future__ import annotations

from termite._core.ids import NodeRef

__all__ = ["Order", "DIRECT", "RELAYED", "SWITCH"]

DIRECT, RELAYED, SWITCH = 0, 1, 2  # how a numbered message came: the frame's "via"


class Order:
    """What the host of a migrant knows about the order of its messages; it travels with it."""

    __slots__ = ("next", "held", "switched", "gen", "visited", "informed", "told", "home_lost", "awaiting")

    def __init__(self):
        self.next: dict[tuple[NodeRef, bool], int] = {}  # stream -> the number it expects next
        self.held: dict[tuple[NodeRef, bool], dict[int, tuple]] = {}  # stream -> {number: (message, via)}
        self.switched: set[NodeRef] = set()  # origins whose relayed stream has ended
        self.gen = 0  # how many moves it has made: newer news of its place wins
        self.visited: list[NodeRef] = []  # the nodes it lived on (each keeps an entry for it)
        self.informed: set[NodeRef] = set()  # nodes told where it is (each keeps an entry too)
        self.told: set[NodeRef] = set()  # origins told during this stay
        self.home_lost = False
        self.awaiting: list = []  # processes waiting for its outcome (termite._move.outcome): carried by COMMIT

    def take(self, home: NodeRef, origin: NodeRef, via: int, n: int, msg) -> list:
        """Message ``n`` of a stream came: the messages now deliverable, in order."""
        key = (origin, via != DIRECT)
        if n < self.next.get(key, 1):  # late, after its stream was released: deliver it as it is
            return [] if via == SWITCH else [msg]
        self.held.setdefault(key, {})[n] = (msg, via)
        return self._drain(key, home)

    def _drain(self, key, home: NodeRef) -> list:
        out = []
        keys = [key]
        while keys:
            key = keys.pop()
            held = self.held.get(key)
            if not held:
                continue
            origin, relayed = key
            if not (relayed or origin == home or origin in self.switched or self.home_lost):
                continue  # its relayed stream has not ended yet
            n = self.next.get(key, 1)
            while n in held:
                msg, via = held.pop(n)
                n += 1
                if via == SWITCH:
                    self.switched.add(origin)
                    keys.append((origin, False))
                else:
                    out.append(msg)
            self.next[key] = n
            if not held:
                del self.held[key]
        return out

    def release(self) -> list:
        """Give up waiting (a node on the way was lost): every held message, each stream in order."""
        out = []
        for key in sorted(self.held, key=lambda key: not key[1]):  # an origin's relayed stream first
            held = self.held[key]
            if not key[1]:
                self.switched.add(key[0])  # its direct stream no longer waits either
            for n in sorted(held):
                msg, via = held[n]
                if via == SWITCH:
                    self.switched.add(key[0])
                else:
                    out.append(msg)
            self.next[key] = max(self.next.get(key, 1), max(held) + 1)
        self.held.clear()
        return out

    def state(self) -> tuple:
        """Plain data, to travel in a MIGRATE frame."""
        return (
            [[origin, relayed, n] for (origin, relayed), n in self.next.items()],
            [[origin, relayed, n, msg, via] for (origin, relayed), held in self.held.items() for n, (msg, via) in held.items()],
            list(self.switched),
            self.gen,
            list(self.visited),
            list(self.informed),
            self.home_lost,
        )

    @classmethod
    def from_state(cls, state) -> "Order":
        """The inverse of ``state``; raises ValueError on data that is not one."""
        try:
            nexts, held, switched, gen, visited, informed, home_lost = state
            order = cls()
            order.next = {(origin, bool(relayed)): int(n) for origin, relayed, n in nexts}
            for origin, relayed, n, msg, via in held:
                order.held.setdefault((origin, bool(relayed)), {})[int(n)] = (msg, int(via))
            order.switched = set(switched)
            order.gen = int(gen)
            order.visited = list(visited)
            order.informed = set(informed)
            order.home_lost = bool(home_lost)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not the order state of a process: {exc}") from None
        nodes = [key[0] for key in order.next] + [key[0] for key in order.held] + [*order.switched, *order.visited, *order.informed]
        if any(node.__class__ is not NodeRef for node in nodes):
            raise ValueError("not the order state of a process: a node that is not a NodeRef")
        return order
