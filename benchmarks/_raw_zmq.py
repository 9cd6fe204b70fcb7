"""The raw pyzmq baseline for benchmarks/nodes.py: what termite adds its cost to.

Two Python processes and nothing else: a ROUTER that binds (``python -m
benchmarks._raw_zmq router [KEYFILE]``, which prints ``raw router PORT``) and
a DEALER that connects (:func:`dealer`, a child that times the windows
benchmarks/nodes.py asks for, see benchmarks/_windows.py).  Each
message is one msgpack-encoded small tuple in one zmq send, as termite sends
one encoded frame per message.  With a key file both ends use CURVE with the
cluster's key pair; the ROUTER runs no ZAP handler (no admission check).

The ROUTER answers ``("ping", i)`` with ``i``, counts ``("data", i)`` and
answers ``("end",)`` with ``(count, seconds from the first data to the end)``.
"""

from __future__ import annotations

import sys
import time

import msgpack
import zmq
import zmq.auth

from benchmarks import _windows

TIMEOUT_MS = 10_000  # no send or receive of the dealer waits longer


def _keys(keyfile):
    return zmq.auth.load_certificate(keyfile) if keyfile else (None, None)


def router(keyfile=None) -> None:
    public, secret = _keys(keyfile)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.linger = 0
    if public:
        sock.curve_server = True  # before bind, as termite does
        sock.curve_publickey, sock.curve_secretkey = public, secret
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    print(f"raw router {port}", flush=True)
    packb, unpackb = msgpack.packb, msgpack.unpackb
    count, first = 0, 0.0
    while True:  # until killed: benchmarks/nodes.py bounds its life
        peer, data = sock.recv_multipart()
        msg = unpackb(data)
        kind = msg[0]
        if kind == "ping":
            sock.send_multipart([peer, packb(msg[1])])
        elif kind == "data":
            if count == 0:
                first = time.perf_counter()
            count += 1
        elif kind == "end":
            sock.send_multipart([peer, packb((count, time.perf_counter() - first))])
            count = 0


def _dealer_socket(ctx, port, keyfile):
    public, secret = _keys(keyfile)
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.rcvtimeo = sock.sndtimeo = TIMEOUT_MS  # zmq.Again rather than a hang
    if public:
        sock.curve_serverkey = public
        sock.curve_publickey, sock.curve_secretkey = public, secret
    sock.connect(f"tcp://127.0.0.1:{port}")
    return sock


def _window(kind, send, recv, n) -> float:
    """``n`` exchanges: round trips/s (pingpong) or messages/s at the router (stream)."""
    packb, unpackb = msgpack.packb, msgpack.unpackb
    if kind == "pingpong":
        start = time.perf_counter()
        for i in range(n):
            send(packb(("ping", i)))
            unpackb(recv())
        return n / (time.perf_counter() - start)
    for i in range(n):
        send(packb(("data", i)))
    send(packb(("end",)))
    got, seconds = unpackb(recv())
    if got != n:
        raise RuntimeError(f"the router counted {got} of {n} messages")
    return n / seconds


def dealer(kind: str, port: int, warmup: int, keyfile=None) -> None:
    """After a warm-up, time the windows the parent asks for (benchmarks/_windows.py)."""
    ctx = zmq.Context()
    try:
        sock = _dealer_socket(ctx, port, keyfile)
        send, recv = sock.send, sock.recv
        _window(kind, send, recv, warmup)
        _windows.ready()
        while (n := _windows.next_window()) is not None:
            _windows.report(_window(kind, send, recv, n))
    finally:
        ctx.destroy(linger=0)


if __name__ == "__main__" and sys.argv[1:2] == ["router"]:
    router(*sys.argv[2:3])
