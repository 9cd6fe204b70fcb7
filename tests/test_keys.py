"""Nothing runs unasked: who a node admits when no key is named, key files, refusals.

Real nodes, real ZeroMQ sockets; the stranger is a forked child that became
another user (uid 65534, "nobody"), as any local account could.
"""

import os
import pathlib
import stat
import subprocess
import sys

import pytest
import zmq
import zmq.utils.monitor

import termite
from termite._core.ids import NodeRef, Pid
from termite._core.process import NAME_SERVER_SERIAL
from termite._net.admission import identity_of
from termite._net.codec import encode
from termite._net.frames import SEND
from termite.testing import NodeProcess, relay

NODE_PATH = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "nodecode")]  # as tests/conftest.py's

NOBODY = 65534


class Touch:
    """Unpickled, it creates ``path``: what a stranger's pickle could do, harmlessly."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.path),)


def _as_nobody(port: int, identity: bytes, frame: bytes) -> str:
    """In a forked child running as uid 65534, connect a plain DEALER to ``port``
    and send ``frame``; what its handshake came to: "admitted" or "refused"."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the stranger: only pyzmq, a fresh context, another user
        outcome = b"error"
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            ctx = zmq.Context()
            dealer = ctx.socket(zmq.DEALER)
            dealer.linger = 2000  # what it sent leaves before it closes, if it was let in
            dealer.routing_id = identity
            monitor = dealer.get_monitor_socket()
            dealer.connect(f"tcp://127.0.0.1:{port}")
            dealer.send(frame)
            poller = zmq.Poller()
            poller.register(monitor, zmq.POLLIN)
            while poller.poll(5000):
                event = zmq.utils.monitor.recv_monitor_message(monitor)["event"]
                if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    outcome = b"admitted"
                    break
                if event in (zmq.EVENT_DISCONNECTED, zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL,
                             zmq.EVENT_HANDSHAKE_FAILED_AUTH, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                    outcome = b"refused"
                    break
            dealer.close()
            monitor.close(linger=0)
        except BaseException as exc:  # noqa: BLE001 - told to the parent, which fails the test
            outcome = f"error: {exc!r}".encode()
        finally:
            os.write(write_end, outcome)
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            return pipe.read().decode()
    finally:
        os.waitpid(child, 0)


@pytest.mark.timeout(20)
def test_a_keyless_executor_admits_no_other_local_user(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("becoming another user (uid 65534) in a forked child needs root")
    ran = tmp_path / "the stranger's pickle ran"
    with termite.Executor(include_self=True) as pool:  # no keys, no cluster: its node has the session key
        ref = pool.node.ref
        frame = encode((SEND, Pid(ref, NAME_SERVER_SERIAL), Touch(ran)))
        outcome = _as_nobody(ref.port, identity_of(NodeRef("127.0.0.1", 1, 1), 0), frame)
        assert outcome == "refused", f"a process of uid {NOBODY} without the key was {outcome} by {ref}"
        assert not ran.exists()

        # It keeps serving, and the nodes it hands its key to are admitted.
        key = pathlib.Path(pool.keys)
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
        worker = NodeProcess("--keys", pool.keys, path=NODE_PATH)
        try:
            here = pool.node
            here.connect(worker.ref.host, worker.ref.port, timeout=10)
            here.spawn_on(worker.ref, relay, here.pid, os.getpid)
            assert here.receive(("relayed", int), timeout=10) == ("relayed", worker.pid)
            # Calls go to the least loaded of the worker and this process (include_self): either.
            assert pool.submit(os.getpid).result(timeout=10) in (worker.pid, os.getpid())
        finally:
            worker.stop()
    assert not ran.exists()


def test_insecure_must_be_asked_for_and_says_what_it_exposes():
    node = NodeProcess("--insecure")
    try:
        node.stop()
        log = node.logged()
    finally:
        node.stop()
    assert "INSECURE" in log and "any local user" in log and "run code" in log, log
    keyless = subprocess.run([sys.executable, "-m", "termite.node"], capture_output=True, text=True, timeout=30)
    assert keyless.returncode == 2
    assert "--keys" in keyless.stderr and "session_keys" in keyless.stderr


def test_session_keys_are_private_and_the_same_for_the_whole_process():
    path = pathlib.Path(termite.session_keys())
    assert termite.session_keys() == str(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert termite.load_keys(path).secret


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620], ids=lambda mode: f"{mode:04o}")
def test_a_key_file_open_to_others_is_refused_as_ssh_does(tmp_path, mode):
    path = tmp_path / "cluster.key"
    termite.generate_keys(path)
    os.chmod(path, mode)
    with pytest.raises(termite.KeyFileError) as refused:
        termite.load_keys(path)
    assert str(path) in str(refused.value)
    assert f"{mode:04o}" in str(refused.value)
    assert f"chmod 600 {path}" in str(refused.value)
    node = subprocess.run([sys.executable, "-m", "termite.node", "--keys", str(path)],
                          capture_output=True, text=True, timeout=30)
    assert node.returncode == 2 and f"chmod 600 {path}" in node.stderr, node.stderr
    os.chmod(path, 0o600)
    assert termite.load_keys(path).secret


@pytest.mark.timeout(20)
def test_a_keyless_executor_says_which_key_a_node_it_cannot_join_lacks(keyfile):
    other = NodeProcess("--keys", keyfile, path=NODE_PATH)  # a cluster key, not this process's session key
    try:
        with pytest.raises(termite.Timeout) as failed:
            termite.Executor([other.ref], connect_timeout=1.0)
    finally:
        other.stop()
    assert termite.session_keys() in str(failed.value) and "keys=" in str(failed.value)
