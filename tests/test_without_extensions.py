"""Two nodes talk when neither C extension of the wire path is there (not built): the endpoint
then reads frames with codec.decode_frame, and the loop waits in zmq_native's Python loop."""

import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import sys
    sys.modules["termite._net._fastcodec"] = None  # as if they were not built
    sys.modules["termite._net._zmqcalls"] = None
    import termite
    from termite._net import codec, zmq_native
    assert codec.take_sends is None and zmq_native.native is None

    async def echo():
        while True:
            sender, n = await termite.receive()
            termite.send(sender, n + 1)

    async def main(host, port):
        node = await termite.connect(host, port, timeout=10)
        pid = termite.spawn(echo, node=node)
        me = termite.self()
        for i in range(200):
            termite.send(pid, (me, i))
            assert await termite.receive(timeout=10) == i + 1
        return "ok"

    with termite.Node(termite.Network(insecure=True)) as b:
        print(termite.run(main, b.ref.host, b.ref.port, network=termite.Network(insecure=True)))
    """
)


@pytest.mark.timeout(90)
def test_a_cross_node_ping_pong_runs_on_the_python_paths():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=80)
    assert proc.stdout.strip().splitlines()[-1:] == ["ok"], proc.stderr[-2000:]
