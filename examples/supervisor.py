"""A supervised pong server that crashes and is restarted (paper, section 5.3).

    (define (start-pong-server)
      (let loop ()
        (recv
         ((from tag 'crash)
          (! from (list tag (/ 1 0))))
         ((from tag 'ping)
          (! from (list tag 'pong))))
        (loop)))

    (define robust-pong-server
      (spawn-thunk-supervised start-pong-server))

    (define (ping server) (!? server 'ping 1 'timeout))
    (define (crash server) (!? server 'crash 1 'crashed))
    (define (kill server) (! server 'shutdown))

    (print (ping robust-pong-server))
    (print (crash robust-pong-server))
    (print (ping robust-pong-server))
    (kill robust-pong-server)

The pid is the supervisor's, and every message sent to it reaches the worker:
the supervisor is transparent.  The one message it keeps is 'shutdown: it asks
the worker to end (passing 'shutdown on), and kills it when it does not end
in time, as this pong server does not.  The "(info: ...)" lines are the
supervisor's own, logged on the termite.supervisor logger at INFO level and
printed here the paper's way; the crash's traceback goes to stderr, as termite
logs every crash.  For Erlang's supervisors (child specs, strategies, restart
intensity) see termite.supervisor.start.
"""

import contextlib
import logging
import sys

import termite
from termite import ANY, Down, Pid, Tag, call, monitor, receive, send, spawn_thunk_supervised

WAIT = 0.5  # seconds: the paper's (!? server msg 1 default) waits 1
SHUTDOWN = 0.5  # seconds the supervisor waits for the worker to end before killing it


async def start_pong_server():
    while True:
        match await receive((Pid, Tag, "crash"), (Pid, Tag, "ping")):
            case (sender, tag, "crash"):
                send(sender, (tag, 1 / 0))             # ZeroDivisionError: the worker fails
            case (sender, tag, "ping"):
                send(sender, (tag, "pong"))


async def ping(server):
    return await call(server, "ping", timeout=WAIT, default="timeout")


async def crash(server):
    return await call(server, "crash", timeout=WAIT, default="crashed")


def kill(server):
    send(server, "shutdown")


@contextlib.contextmanager
def supervisor_info_on_stdout():
    """Print the supervisor's INFO records as the paper's trace does: (info: ...)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("(info: %(message)s)"))
    logger = logging.getLogger("termite.supervisor")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def main():
    with supervisor_info_on_stdout():
        robust_pong_server = spawn_thunk_supervised(start_pong_server, shutdown=SHUTDOWN)
        print(await ping(robust_pong_server))
        print(await crash(robust_pong_server))
        print(await ping(robust_pong_server))
        halted = monitor(robust_pong_server)
        kill(robust_pong_server)
        await receive(Down(halted, robust_pong_server, ANY))  # the supervisor's last words come first


if __name__ == "__main__":
    termite.run(main)
