"""The paper's transparent supervisor (section 5.3): ``spawn_thunk_supervised``.

One worker, restarted when it fails; every message sent to the supervisor
goes on to the worker.  Users see it as ``termite.supervisor``.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections import deque

from termite._core.errors import Exited
from termite._core.ids import Pid
from termite._core.links import Exit, trap_exit
from termite._core.links import exit as exit_signal
from termite._core.mailbox import receive, send
from termite._core.patterns import ANY
from termite._core.process import current
from termite._core.spawn import spawn

log = logging.getLogger("termite.supervisor")


def spawn_thunk_supervised(thunk, *args, intensity: int = 3, period: float = 5.0, shutdown: float = 5.0,
                           link: bool = False, name: str | None = None) -> Pid:
    """The paper's ``spawn-thunk-supervised``: run ``thunk(*args)`` under a supervisor; its pid.

    The supervisor is transparent: every message sent to it goes on to the
    worker (so ``call(sup, msg)`` is answered by the worker).  A worker that
    fails is restarted (more than ``intensity`` failures within ``period``
    seconds and the supervisor gives up, exiting with reason "shutdown"); one
    that ends normally ends the supervisor too.  The message ``"shutdown"``
    is the supervisor's own: it passes it on to the worker as a request to
    end, waits ``shutdown`` seconds, kills a worker that has not ended, and
    ends.  It reports each step on the ``termite.supervisor`` logger at INFO
    level, in the paper's words ("starting up supervised process", "process
    failed", "restarting...", "had to terminate the process", "halting
    supervisor"); each record has the supervisor's pid as ``supervisor``.
    """
    if inspect.iscoroutine(thunk):
        name = getattr(thunk, "__qualname__", "f")
        thunk.close()
        raise TypeError(f"spawn_thunk_supervised() takes the function, not a coroutine: "
                        f"write spawn_thunk_supervised({name}, ...) instead of spawn_thunk_supervised({name}(...))")
    if not callable(thunk):
        raise TypeError(f"spawn_thunk_supervised() needs a function to run as the worker, got {thunk!r}")
    if not isinstance(intensity, int) or isinstance(intensity, bool) or intensity < 0:
        raise ValueError(f"intensity={intensity!r} is not a whole number of restarts >= 0")
    for field, value in (("period", period), ("shutdown", shutdown)):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
            raise ValueError(f"{field}={value!r} is not a number of seconds >= 0")
    if period == 0:
        raise ValueError("period=0 is not a number of seconds > 0")
    return spawn(_transparent, thunk, args, intensity, float(period), float(shutdown), link=link, name=name)


async def _transparent(thunk, args, intensity, period, shutdown):
    me = current()
    parents = tuple(me.links or ())
    trap_exit(True)
    restarts: deque[float] = deque()

    def info(text):
        log.info(text, extra={"supervisor": me.pid})

    def start_worker() -> Pid:
        info("starting up supervised process")
        return spawn(thunk, *args, link=True)

    async def stop_worker(worker: Pid) -> None:
        send(worker, "shutdown")  # the request to end; a worker may ignore it
        if await receive(Exit(worker, ANY), timeout=shutdown, default=None) is None:
            exit_signal(worker, "kill")
            await receive(Exit(worker, ANY))
            info("had to terminate the process")
        else:
            info("process ended")

    worker = start_worker()
    while True:
        msg = await receive()
        if msg.__class__ is Exit:
            if msg.pid == worker:
                if msg.reason == "normal":
                    info("process ended")
                    info("halting supervisor")
                    return
                info("process failed")
                now = time.monotonic()
                restarts.append(now)
                while restarts[0] < now - period:
                    restarts.popleft()
                if len(restarts) > intensity:
                    info("process failed too often: giving up")
                    info("halting supervisor")
                    raise Exited(me.pid, "shutdown")
                info("restarting...")
                worker = start_worker()
            elif msg.pid in parents:
                await stop_worker(worker)
                info("halting supervisor")
                raise Exited(me.pid, msg.reason)
        elif msg.__class__ is str and msg == "shutdown":
            await stop_worker(worker)
            info("halting supervisor")
            return
        else:
            send(worker, msg)
