"""termite_launcher.remote: nodes on other hosts over SSH.

The hosts are two network namespaces joined by a bridge, each running sshd
(tests/netns_hosts.py); this test process is a third node on the bridge.
Where namespaces or sshd are not available these tests skip and say why.
"""

import os
import pathlib
import select
import shlex
import signal
import stat
import subprocess
import time

import pytest

import termite
from termite import NodeDown
from termite.testing import echo, relay
from termite_launcher import remote
from termite_launcher.remote import RemoteError, RemoteNode, install_keys, remote_cores, ssh_command

from netns_hosts import HostConfig, SshOptions

HEARTBEAT_INTERVAL = 0.1
HEARTBEAT_TIMEOUT = 1.0


def _gone(pid: int, timeout: float = 5.0) -> bool:
    """True once process ``pid`` has ended (the namespaces share this machine's
    pids; a pidfd becomes readable when its process exits, child or not)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def _only_sshd_left(host, timeout: float = 5.0) -> set[int]:
    """The pids in ``host``'s namespace besides its sshd, once there are none (or the deadline)."""
    deadline = time.monotonic() + timeout
    while (others := host.pids() - {host.sshd_pid}) and time.monotonic() < deadline:
        time.sleep(0.05)
    return others


def _start(host, key_path: str, **config) -> RemoteNode:
    return RemoteNode(
        host.host_config(**config),
        [
            "--host", host.address, "--port", "0", "--keys", key_path,
            "--heartbeat-interval", str(HEARTBEAT_INTERVAL), "--heartbeat-timeout", str(HEARTBEAT_TIMEOUT),
        ],
    )  # fmt: skip


@pytest.fixture
def two_nodes(netns_hosts, keyfile, tmp_path):
    """A node on h1 and one on h2, started over ssh with the cluster key installed by install_keys."""
    with open(keyfile, "rb") as f:
        key = f.read()
    nodes = []
    try:
        for host in netns_hosts.hosts:
            key_path = str(tmp_path / host.name / "cluster.key")
            install_keys(host.host_config(), key, key_path)
            nodes.append(_start(host, key_path))
        for node in nodes:
            node.wait_announced(20)
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
def here(netns_hosts, keyfile):
    """A node in this process, on the bridge's address."""
    with termite.Node(
        host=netns_hosts.bridge_address, port=0, keys=keyfile,
        heartbeat_interval=HEARTBEAT_INTERVAL, heartbeat_timeout=HEARTBEAT_TIMEOUT,
    ) as node:  # fmt: skip
        yield node


def test_ssh_command_quotes_for_the_remote_shell_and_the_hosts_options_come_first():
    host = HostConfig(
        address="example.org", cores=None, bind="example.org", python="python3", label="web",
        ssh=SshOptions(user="me", port=2222, key="~/k", options=("StrictHostKeyChecking=yes", "-J", "jump")),
    )  # fmt: skip
    argv = ssh_command(host, ["printf", "%s\n", "a b", "$HOME", "it's"])
    assert argv[0] == "ssh" and argv[-2:] == ["example.org", shlex.join(["printf", "%s\n", "a b", "$HOME", "it's"])]
    assert shlex.split(argv[-1]) == ["printf", "%s\n", "a b", "$HOME", "it's"]
    assert argv[1:5] == ["-o", "StrictHostKeyChecking=yes", "-J", "jump"]  # ssh keeps the first value it sees
    assert argv.index("StrictHostKeyChecking=yes") < argv.index("StrictHostKeyChecking=accept-new")
    assert "BatchMode=yes" in argv and ["-p", "2222"] == argv[argv.index("-p") : argv.index("-p") + 2]
    assert argv[argv.index("-i") + 1] == os.path.expanduser("~/k") and argv[argv.index("-l") + 1] == "me"


def test_remote_cores_answers_and_arguments_arrive_as_given(netns_hosts):
    for host in netns_hosts.hosts:
        assert remote_cores(host.host_config()) == len(os.sched_getaffinity(0))
    argv = ssh_command(netns_hosts.h1.host_config(), ["printf", "%s\n", "a b", "$HOME", "it's", ""])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL)
    assert done.stdout == "a b\n$HOME\nit's\n\n", done.stderr


def test_install_keys_writes_the_key_file_mode_600_and_never_on_a_command_line(netns_hosts, keyfile, tmp_path, monkeypatch):
    with open(keyfile, "rb") as f:
        key = f.read()
    secret = termite.load_keys(keyfile).secret.decode()
    argvs = []
    run = subprocess.run

    def spy(argv, *args, **kwargs):
        argvs.append(list(argv))
        return run(argv, *args, **kwargs)

    monkeypatch.setattr(remote.subprocess, "run", spy)
    h1 = netns_hosts.h1
    target = tmp_path / "new" / "folder" / "cluster.key"
    install_keys(h1.host_config(), key, str(target))
    install_keys(h1.host_config(workdir=str(tmp_path)), key, "relative/cluster.key")  # from the workdir
    for path in (target, tmp_path / "relative" / "cluster.key"):
        assert path.read_bytes() == key
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert termite.load_keys(path).secret.decode() == secret
    assert argvs and not any(secret in arg for argv in argvs for arg in argv)
    assert not list((tmp_path / "new" / "folder").glob("*.tmp.*"))


def test_nodes_on_two_hosts_talk_across_the_veth_link_a_killed_one_is_down_and_stop_leaves_nothing(
    netns_hosts, two_nodes, here
):
    n1, n2 = two_nodes
    h1, h2 = netns_hosts.hosts
    assert (n1.ref.host, n2.ref.host) == (h1.address, h2.address)
    assert n1.remote_pid in h1.pids() and n2.remote_pid in h2.pids()  # each runs in its host's namespace
    assert b"termite.node" in pathlib.Path(f"/proc/{n1.remote_pid}/cmdline").read_bytes()  # remote_pid is the node's

    # A process on h1 calls a server on h2: the message and its reply cross the bridge.
    r1, r2 = here.connect(*n1.ref.address, timeout=10), here.connect(*n2.ref.address, timeout=10)
    assert (r1, r2) == (n1.ref, n2.ref)
    here.spawn_on(r1, relay, here.pid, termite.connect, *n2.ref.address)
    assert here.receive(("relayed", termite.NodeRef), timeout=10) == ("relayed", r2)
    server = here.spawn_on(r2, echo)
    here.spawn_on(r1, relay, here.pid, termite.call, server, ("from h1", "to h2"), 10)
    assert here.receive(("relayed", ...), timeout=10) == ("relayed", ("from h1", "to h2"))

    # Killing h2's node: this node sees it down within the heartbeat timeout.
    here.monitor_node(r2)
    pid, ssh_pid = n2.remote_pid, n2.local_pid
    start = time.monotonic()
    n2.kill()
    down = here.receive(NodeDown, timeout=HEARTBEAT_TIMEOUT + 5)
    assert down.node == r2 and time.monotonic() - start < HEARTBEAT_TIMEOUT + 3
    assert not n2.running() and n2.returncode == 128 + signal.SIGKILL  # the wrapper reports the node's end
    assert _gone(pid) and _gone(ssh_pid) and not _only_sshd_left(h2)

    # Stopping h1's node leaves no process there, nor its ssh here.
    assert n1.running()
    pid, ssh_pid = n1.remote_pid, n1.local_pid
    n1.stop()
    assert not n1.running()
    assert _gone(pid), f"node pid {pid} still runs on h1"
    assert _gone(ssh_pid), f"local ssh pid {ssh_pid} still runs"
    assert not _only_sshd_left(h1), f"left in {h1.netns}: {h1.exec('ps', '-ef').stdout}"
    n1.stop()  # idempotent
    n1.kill()


@pytest.mark.timeout(120)
def test_sixteen_nodes_on_one_host_log_in_by_turns_as_its_sshd_allows(netns_hosts, keyfile):
    """sshd drops logins beyond 10 at once (MaxStartups 10:30:100, its default here): one per node would."""
    h1 = netns_hosts.h1
    nodes = []
    try:
        for _ in range(16):
            nodes.append(_start(h1, keyfile))
        for node in nodes:
            node.wait_announced(60)
        assert len({node.remote_pid for node in nodes}) == 16 and all(node.running() for node in nodes)
    finally:
        for node in nodes:
            node.stop()
    assert not _only_sshd_left(h1, timeout=10)


def test_a_lost_ssh_session_stops_its_node_on_the_host(netns_hosts, keyfile):
    """The launcher died (its ssh went with it): the node stops by itself, no orphan."""
    h1 = netns_hosts.h1
    node = _start(h1, keyfile)
    try:
        node.wait_announced(20)
        pid = node.remote_pid
        os.kill(node.local_pid, signal.SIGKILL)
        assert _gone(pid), f"node pid {pid} outlived its ssh session"
        assert not _only_sshd_left(h1)
    finally:
        node.stop()


def test_a_node_that_fails_to_start_is_a_remote_error_with_its_stderr(netns_hosts, tmp_path):
    h1 = netns_hosts.h1
    node = _start(h1, str(tmp_path / "no-such.key"))
    with pytest.raises(RemoteError) as err:
        node.wait_announced(20)
    assert "h1" in str(err.value) and "no cluster key file" in err.value.stderr
    assert not node.running() and not _only_sshd_left(h1)

    node = RemoteNode(h1.host_config(python="/nonexistent/python3"), ["--port", "0"])
    with pytest.raises(RemoteError, match="python") as err:
        node.wait_announced(20)
    assert "/nonexistent/python3" in err.value.stderr and err.value.returncode == 127


def test_a_bad_host_is_a_remote_error_naming_it_with_sshs_stderr(netns_hosts, tmp_path):
    h1 = netns_hosts.h1
    stranger = str(tmp_path / "stranger_key")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger], check=True, timeout=10)
    wrong_key = h1.host_config(ssh=h1.ssh_options(key=stranger), label="h1-wrong-key")
    with pytest.raises(RemoteError) as err:
        remote_cores(wrong_key)
    assert "h1-wrong-key" in str(err.value) and "Permission denied" in err.value.stderr
    assert "authorized_keys" in err.value.hint and err.value.returncode == 255

    node = RemoteNode(wrong_key, ["--port", "0"])
    with pytest.raises(RemoteError, match="h1-wrong-key") as err:
        node.wait_announced(20)
    assert "Permission denied" in err.value.stderr and not node.running()

    options = ("-F", "none", f"UserKnownHostsFile={netns_hosts.known_hosts}", "ConnectTimeout=1")
    nowhere = h1.host_config(address=netns_hosts.unused_address(), ssh=h1.ssh_options(options=options), label="nowhere")
    with pytest.raises(RemoteError) as err:
        install_keys(nowhere, b"secret", str(tmp_path / "k"))
    assert "nowhere" in str(err.value) and netns_hosts.unused_address() in err.value.stderr
    assert "cannot be reached" in err.value.hint


def test_a_detached_node_outlives_its_ssh_session_and_stops_by_pid(netns_hosts, keyfile, tmp_path):
    h1 = netns_hosts.h1
    node = RemoteNode(
        h1.host_config(workdir=str(tmp_path)),
        ["--host", h1.address, "--port", "0", "--keys", keyfile],
        detached=True,
    )
    try:
        ref = node.wait_announced(20)
        assert ref.host == h1.address and node.running()
        assert _gone(node.local_pid), "the ssh session should end once the node has announced itself"
        assert node.remote_pid in h1.pids()
        assert (tmp_path / node.remote_log).read_text().startswith("termite node ")
        pid = node.remote_pid
        node.stop()
        assert _gone(pid) and not node.running() and not _only_sshd_left(h1)
    finally:
        node.stop()
