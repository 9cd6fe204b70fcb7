"""The cluster's console: ``termite.say`` prints a line there, from any process of any node.

The paper (section 3.1) proxies standard output by a process: a message to
it is printed.  Cloud Haskell's ``say`` sends a line to the node's logger,
which the master redirects to its own.  Here:

- The *console* is a process registered globally as :data:`CONSOLE`
  (``"termite.console"``), so every node of the cluster knows it (global
  names reach a node as it connects).  ``termite-launch`` runs one
  (:func:`serve_console`) and prints what it gets, in its dashboard's
  events pane too while the dashboard shows; :func:`start_console` starts
  one and returns once it is registered.
- ``say(*args, sep=" ")`` joins its arguments as ``print`` does and sends
  ``("say", pid, text)`` to the console, from the calling process: its pid
  prefixes the line (:class:`Said`: ``[127.0.0.1:40001/17] text``).  A thunk
  running on a node's worker thread (``termite.dispatch``, an Executor) is
  in no process: its lines go through its node's kernel, under the pid of
  the node's runner.
- A node that knows no console (a plain script, a node no launcher watches)
  prints the line to its own stderr, with the same prefix.  Outside any
  node it goes to stderr, prefixed with the OS process.

Order: the lines of one sender reach the console in the order said, as any
messages between two processes do (one session between two nodes keeps
order, and a process that migrates too); lines of different senders
interleave as they arrive.  A line said while the console's node is
unreachable is lost, as any message may be; once that node is down the name
is gone and lines go to stderr again.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import NamedTuple

from termite._balance.runner import runner_of, running_thunk
from termite._core.errors import Timeout
from termite._core.ids import Pid
from termite._core.kernel import current_task
from termite._core.links import kill
from termite._core.mailbox import receive, send
from termite._core.process import ProcessTable
from termite._core.spawn import spawn
from termite._net.global_names import register_global

__all__ = ["CONSOLE", "Said", "say", "serve_console", "start_console"]

log = logging.getLogger("termite.console")

#: The global name of the cluster's console.
CONSOLE = "termite.console"


class Said(NamedTuple):
    """One line said: who said it, and what.  ``str(said)`` is how it is printed."""

    pid: Pid
    text: str

    def __str__(self):
        return f"[{self.pid.node}/{self.pid.serial}] {self.text}"


def say(*args, sep: str = " ") -> None:
    """Print a line on the cluster's console, prefixed with the caller's node and pid.

    ``args`` are joined as ``print`` joins them.  Never blocks and never
    raises for an unreachable console; with no console known to this node
    the line goes to this node's stderr, prefixed alike.  From any process
    or thunk, on any node (see the module for the order lines keep).

        termite.say("step", i, "of", n)   # [10.0.0.2:40001/17] step 3 of 10
    """
    if not isinstance(sep, str):
        raise TypeError(f"say()'s sep must be a str, not {type(sep).__name__}: {sep!r}")
    text = sep.join(map(str, args))
    task = current_task()
    table = getattr(task, "table", None)
    if table is not None:  # a process: on its node's thread
        return _say(table, task.pid, text)
    table = running_thunk()
    if table is not None:  # a thunk on its node's worker thread: the node's thread sends, in order
        return table.kernel.call_threadsafe(_say, table, runner_of(table.ref), text)
    _print(f"[{socket.gethostname()} pid {os.getpid()}]", text)


def _say(table: ProcessTable, sender: Pid, text: str) -> None:
    console = table.global_names.get(CONSOLE)
    if console is None:
        _print(f"[{sender.node}/{sender.serial}]", text)
    else:
        send(console, ("say", sender, text))


def _print(prefix: str, text: str) -> None:
    lines = text.split("\n")
    print("\n".join(f"{prefix} {line}" for line in lines), file=sys.stderr, flush=True)


async def _serve(deliver):
    while True:
        msg = await receive()
        if msg.__class__ is tuple and len(msg) == 3 and msg[0] == "say" and msg[1].__class__ is Pid \
                and msg[2].__class__ is str:
            for line in msg[2].split("\n"):
                deliver(Said(msg[1], line))
        else:  # not left in the mailbox: a console runs as long as its cluster
            log.warning("the console dropped a message it does not understand: %.200r", msg)


async def serve_console(deliver, timeout: float = 5.0):
    """The body of a console process: register as :data:`CONSOLE`, then ``deliver(said)`` each line said.

    For a program that must not wait while the name is claimed (the
    launcher: ``node.spawn(serve_console, lines.put)``).  A connected node
    that does not answer within ``timeout`` (busy) makes it claim the name
    again, saying so in the log; lines said meanwhile print on their nodes'
    stderr.  It ends with ``NameTaken`` if another console holds the name.
    ``deliver`` is as for :func:`start_console`.
    """
    while True:
        try:
            await register_global(CONSOLE, None, timeout)
            break
        except Timeout as exc:
            log.warning("the console is not registered yet, trying again: %s", exc)
    await _serve(deliver)


async def start_console(deliver, timeout: float = 5.0) -> Pid:
    """Start a console on this node, registered globally as :data:`CONSOLE`; its pid.

    ``deliver(said)`` is called with each line said (a :class:`Said`; a text
    of several lines comes as one each), in the order they arrive, on this
    node's thread: it must not block (``queue.put`` does not).  Returns once
    every connected node knows the name (nodes that connect later learn it
    as they do), so lines said from then on come here.  Raises ``NameTaken``
    if another console holds the name, ``Timeout`` if a connected node does
    not answer within ``timeout``.

        console = node.run(termite.console.start_console, lines.put)
    """
    pid = spawn(_serve, deliver)
    try:
        await register_global(CONSOLE, pid, timeout)
    except BaseException:
        kill(pid)
        raise
    return pid
