"""Run a termite node from the command line (the launcher starts nodes this way).

    python -m termite.node --port 9000 --keys cluster.key
    python -m termite.node --port 0 --insecure          # loopback only; see below

A node needs a key file: without ``--keys`` it refuses to start.  ``--insecure``
runs it with no authentication at all, on loopback only, and says so on
stderr: any local user (and any host that can reach the port) can then run
code in it.

Once listening it prints one line, ``termite node HOST:PORT incarnation HEX``,
flushes it, and runs until SIGTERM or SIGINT.  Processes reach it by remote
spawn; it runs nothing of its own.

Its log goes to stderr, WARNING and above unless ``--log-level LEVEL``, ``-v``
(INFO; ``-vv`` DEBUG) or ``-q`` (ERROR; ``-qq`` CRITICAL) says otherwise;
``termite-launch`` takes the same flags and passes the level on.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys

import termite
from termite._runtime.node import Network

__all__ = ["main", "add_log_flags", "log_level"]

#: The levels ``--log-level`` takes, least to most severe; ``-v`` and ``-q`` step from the default.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEFAULT_LOG_LEVEL = "WARNING"


#: The environment variable that gives ``--idle-close`` when the flag is not given.
IDLE_CLOSE_ENVIRONMENT = "TERMITE_IDLE_CLOSE"


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0: never), e.g. 300")
    return seconds


def _level_name(text: str) -> str:
    name = text.upper()
    if name not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not a log level; give one of {', '.join(LOG_LEVELS)}")
    return name


def add_log_flags(parser: argparse.ArgumentParser) -> None:
    """``--log-level LEVEL``, ``-v`` and ``-q`` (one of them), as a node and termite-launch take them."""
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--log-level", type=_level_name, metavar="LEVEL",
                        help=f"log {', '.join(LOG_LEVELS)} (default {DEFAULT_LOG_LEVEL}) and above")
    chosen.add_argument("-v", "--verbose", action="count", default=0, help="log more: INFO (-vv: DEBUG)")
    chosen.add_argument("-q", "--quiet", action="count", default=0, help="log less: ERROR (-qq: CRITICAL)")


def log_level(args: argparse.Namespace) -> str:
    """The level the flags of ``add_log_flags`` chose, e.g. ``"INFO"`` for ``-v``."""
    if args.log_level:
        return args.log_level
    step = args.quiet - args.verbose
    index = LOG_LEVELS.index(DEFAULT_LOG_LEVEL) + step
    return LOG_LEVELS[min(max(index, 0), len(LOG_LEVELS) - 1)]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m termite.node", description="Run a termite node.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port to listen on (default: any free port)")
    p.add_argument("--keys", help="the cluster's key file (python -m termite keygen PATH)")
    p.add_argument("--insecure", action="store_true", help="no authentication or encryption (loopback only): any local user can run code in this node")
    p.add_argument("--heartbeat-timeout", type=float, default=3.0, help="seconds of silence before a peer is down")
    p.add_argument("--heartbeat-interval", type=float, default=0.5)
    p.add_argument("--mailbox-limit", type=int, default=Network.mailbox_limit,
                   help="messages a process may have waiting before remote senders to it wait (default %(default)s)")
    p.add_argument("--buffer-limit", type=int, default=Network.buffer_limit,
                   help="bytes sent to a node and not yet read there before senders to it wait (default %(default)s)")
    p.add_argument("--max-frame", type=int, default=Network.max_frame,
                   help="bytes: a larger frame from a peer is dropped unread (default %(default)s)")
    p.add_argument("--max-decoded", type=int, default=Network.max_decoded,
                   help="bytes of objects a frame may decode to, at most (default %(default)s)")
    p.add_argument("--idle-close", type=_seconds, default=None,
                   help="seconds a session with a peer may be idle before its connections close, to reopen on the "
                        f"next message; 0: never (default ${IDLE_CLOSE_ENVIRONMENT}, else {Network.idle_close:g})")
    add_log_flags(p)
    return p


async def _serve(announce):
    me = termite.current_node()
    announce(f"termite node {me.host}:{me.port} incarnation {me.incarnation:x}")
    await termite.receive(lambda m: False)  # until the node is stopped


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.idle_close is None:
        try:
            args.idle_close = _seconds(os.environ.get(IDLE_CLOSE_ENVIRONMENT, str(Network.idle_close)))
        except argparse.ArgumentTypeError as exc:
            parser.error(f"${IDLE_CLOSE_ENVIRONMENT}: {exc}")
    logging.basicConfig(level=log_level(args), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    network = Network(
        port=args.port,
        host=args.host,
        keys=args.keys,
        insecure=args.insecure,
        heartbeat_interval=args.heartbeat_interval,
        heartbeat_timeout=args.heartbeat_timeout,
        mailbox_limit=args.mailbox_limit,
        buffer_limit=args.buffer_limit,
        max_frame=args.max_frame,
        max_decoded=args.max_decoded,
        idle_close=args.idle_close,
    )

    def announce(line):
        print(line, flush=True)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        termite.run(_serve, announce, network=network)
    except KeyboardInterrupt:
        pass
    except termite.KeyFileError as exc:
        print(f"termite node: {exc}", file=sys.stderr)
        return 2
    # The node has closed its sockets and ended its processes.  What is left dies with the
    # process: spare the interpreter's last collections their walk over it (a stop is 3x faster).
    gc.freeze()
    return 0


if __name__ == "__main__":
    sys.exit(main())
