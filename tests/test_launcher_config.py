"""cluster.yaml: the default file, a full example, and every kind of bad file (issue 6)."""

import copy
import dataclasses
import json
import os
import pickle
import re
import sys
from importlib import resources
from pathlib import Path

import pytest

from termite_launcher import config
from termite_launcher.config import ClusterConfig, ConfigError, HostConfig, RestartPolicy, SshOptions, load
from termite_launcher.schema import check_keywords

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, text, name="cluster.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the default cluster.yaml -------------------------------------------------


def test_default_cluster_yaml_is_this_machine_one_node_per_core():
    c = load(ROOT / "cluster.yaml")
    assert c.hosts == (
        HostConfig(address="localhost", cores=None, bind="127.0.0.1", python=sys.executable, ssh=None,
                   label="localhost"),
    )
    assert c.hosts[0].local
    assert c.name == "cluster"
    assert c.path == ROOT / "cluster.yaml"
    assert c.state_dir == ROOT / ".termite"
    assert c.keys == ROOT / ".termite" / "cluster.key"
    assert (c.heartbeat_interval, c.heartbeat_timeout, c.meter_interval, c.join_timeout) == (0.5, 3.0, 1.0, 30.0)
    assert c.restart == RestartPolicy(intensity=5, period=60.0, backoff=0.5, max_backoff=10.0)


def test_the_commented_example_in_the_default_file_is_valid(tmp_path):
    """Uncommenting the SSH host, the LAN-address local host and the settings gives a file that loads."""
    lines = []
    for line in (ROOT / "cluster.yaml").read_text().splitlines():
        if re.match(r"^  # (- | +)\S", line) or re.match(r"^# [a-z_]+: ", line):
            line = line.replace("# ", "", 1)
        lines.append(line)
    text = "\n".join(lines)
    # The loopback host cannot be in a cluster with another machine (the file says so).
    text = text.replace("  - address: localhost\n    cores: auto", "")
    key = tmp_path / "id_test"
    key.write_text("secret")
    text = text.replace("~/.ssh/id_ed25519", str(key))
    c = load(write(tmp_path, text))
    assert [h.address for h in c.hosts] == ["192.168.1.20", "192.168.1.10"]
    remote, here = c.hosts
    assert remote.ssh == SshOptions(user="me", port=22, key=str(key), options=("StrictHostKeyChecking=accept-new",))
    assert remote.python == "/home/me/venv/bin/python" and remote.workdir == "~/termite" and remote.cores == 8
    assert here.local and here.bind == "192.168.1.10" and here.cores is None
    assert c.keys == tmp_path / ".termite" / "cluster.key"
    assert c.restart == RestartPolicy()  # the commented line shows the defaults


# -- a full example ---------------------------------------------------------


def test_full_example_with_every_field(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "ssh").mkdir()
    (tmp_path / "ssh" / "id_lab").write_text("secret")
    (tmp_path / "work").mkdir()
    path = write(tmp_path, """\
name: lab
keys: keys/lab.key
state_dir: state
heartbeat_interval: 0.25
heartbeat_timeout: 2
meter_interval: 0.5
join_timeout: 60
restart: {{intensity: 3, period: 30, backoff: 1}}
hosts:
  - address: 10.0.0.5
    local: true
    cores: 2
    python: {python}
    workdir: work
    env: {{OMP_NUM_THREADS: 1, MODE: fast}}
    label: here
  - address: node1.example.org
    cores: auto
    bind: 10.0.0.6
    python: /opt/venv/bin/python
    workdir: ~/termite
    label: node1
    ssh:
      user: alice
      port: 2222
      key: ssh/id_lab
      options: [StrictHostKeyChecking=accept-new, ConnectTimeout=5]
  - address: node2.example.org
    ssh: true
""".format(python=sys.executable), name="lab.yaml")
    assert load(path) == ClusterConfig(
        name="lab",
        path=tmp_path / "lab.yaml",
        keys=tmp_path / "keys" / "lab.key",
        hosts=(
            HostConfig(address="10.0.0.5", cores=2, bind="10.0.0.5", python=sys.executable, ssh=None,
                       workdir=str(tmp_path / "work"), env=(("OMP_NUM_THREADS", "1"), ("MODE", "fast")),
                       label="here"),
            HostConfig(address="node1.example.org", cores=None, bind="10.0.0.6", python="/opt/venv/bin/python",
                       ssh=SshOptions(user="alice", port=2222, key=str(tmp_path / "ssh" / "id_lab"),
                                      options=("StrictHostKeyChecking=accept-new", "ConnectTimeout=5")),
                       workdir="~/termite", label="node1"),
            HostConfig(address="node2.example.org", cores=None, bind="node2.example.org", python="python3",
                       ssh=SshOptions(), label="node2.example.org"),
        ),
        heartbeat_interval=0.25,
        heartbeat_timeout=2.0,
        meter_interval=0.5,
        join_timeout=60.0,
        restart=RestartPolicy(intensity=3, period=30.0, backoff=1.0, max_backoff=10.0),
        state_dir=tmp_path / "state",
    )


def test_ssh_to_localhost_is_remote_and_options_may_be_a_mapping(tmp_path):
    c = load(write(tmp_path, """\
hosts:
  - address: localhost
    ssh:
      options: {StrictHostKeyChecking: no, ConnectTimeout: 5}
"""))
    (host,) = c.hosts
    assert not host.local
    assert host.python == "python3" and host.bind == "127.0.0.1"
    assert host.ssh.options == ("StrictHostKeyChecking=no", "ConnectTimeout=5")


def test_two_local_hosts_by_two_loopback_names(tmp_path):
    """Two "hosts" on this machine, e.g. with different Pythons: allowed, as they have different addresses."""
    c = load(write(tmp_path, "hosts:\n  - address: localhost\n  - address: 127.0.0.1\n    python: /bin/false\n"))
    assert [(h.address, h.local, h.python, h.label) for h in c.hosts] == [
        ("localhost", True, sys.executable, "localhost"), ("127.0.0.1", True, "/bin/false", "127.0.0.1")]


def test_anchors_and_merge_keys(tmp_path):
    c = load(write(tmp_path, """\
x-worker: &worker
  cores: 4
  ssh: {user: me}
hosts:
  - <<: *worker
    address: h1
  - <<: *worker
    address: h2
    cores: 2
"""))
    assert [(h.address, h.cores, h.ssh.user) for h in c.hosts] == [("h1", 4, "me"), ("h2", 2, "me")]


def test_ssh_key_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "id_x").write_text("secret")
    c = load(write(tmp_path, "hosts:\n  - address: h1\n    ssh: {key: ~/.ssh/id_x}\n"))
    assert c.hosts[0].ssh.key == str(tmp_path / ".ssh" / "id_x")


# -- bad files --------------------------------------------------------------

# (id, file, line, key path, the value as the message shows it, a piece of the fix)
BAD = [
    ("unknown key", "hosts:\n  - address: localhost\n    core: 4\n",
     3, "hosts[0].core", "core", "did you mean cores?"),
    ("unknown key by alias", "hosts:\n  - address: h1\n    ssh:\n      identity_file: k\n",
     4, "hosts[0].ssh.identity_file", "identity_file", "did you mean key?"),
    ("unknown top key", "hosts: [{address: localhost}]\nmachines: 3\n",
     2, "machines", "machines", "did you mean hosts?"),
    ("cores not a number", "hosts:\n  - address: localhost\n  - address: 10.0.0.2\n    ssh: true\n    cores: many\n",
     5, "hosts[1].cores", "'many'", "write e.g. cores: auto or cores: 4"),
    ("cores zero", "hosts:\n  - {address: localhost, cores: 0}\n",
     2, "hosts[0].cores", "0", "cores: auto or cores: 4"),
    ("cores fraction", "hosts:\n  - address: localhost\n    cores: 2.5\n",
     3, "hosts[0].cores", "2.5", "cores: auto or cores: 4"),
    ("port out of range", "hosts:\n  - address: h1\n    ssh:\n      user: me\n      port: 70000\n",
     5, "hosts[0].ssh.port", "70000", "port: 22"),
    ("port zero", "hosts:\n  - address: h1\n    ssh: {port: 0}\n",
     3, "hosts[0].ssh.port", "0", "port: 22"),
    ("no hosts key", "name: lab\njoin_timeout: 5\n",
     1, "hosts", "hosts", "add e.g. hosts:"),
    ("empty hosts", "name: lab\nhosts: []\n",
     2, "hosts", "[]", "hosts: [{address: localhost"),
    ("hosts with no value", "name: lab\nhosts:\n",
     2, "hosts", "no value", "hosts: [{address: localhost"),
    ("host is a bare string", "hosts:\n  - localhost\n",
     2, "hosts[0]", "'localhost'", "- {address: localhost"),
    ("missing address", "hosts:\n  - address: localhost\n  - cores: 2\n",
     3, "hosts[1].address", "address", "add e.g. address:"),
    ("duplicate address", "hosts:\n  - {address: h1, ssh: true}\n  - address: h2\n    ssh: true\n  - address: h1\n"
     "    ssh: true\n",
     5, "hosts[2].address", "'h1'", "list each host once"),
    ("same address in other case", "hosts:\n  - address: localhost\n  - address: LocalHost\n",
     3, "hosts[1].address", "'LocalHost'", "set its cores:"),
    ("duplicate label", "hosts:\n  - address: localhost\n    label: here\n  - address: 127.0.0.1\n    label: here\n",
     5, "hosts[1].label", "'here'", "label: here-2"),
    ("timeout not above interval", "heartbeat_interval: 2\nheartbeat_timeout: 1.5\nhosts: [{address: localhost}]\n",
     2, "heartbeat_timeout", "1.5", "heartbeat_timeout: 12"),
    ("interval above the default timeout", "hosts: [{address: localhost}]\nheartbeat_interval: 5\n",
     2, "heartbeat_interval", "5", "heartbeat_interval: 0.5"),
    ("negative timeout", "join_timeout: -1\nhosts: [{address: localhost}]\n",
     1, "join_timeout", "-1", "join_timeout: 30"),
    ("zero meter interval", "hosts: [{address: localhost}]\nmeter_interval: 0\n",
     2, "meter_interval", "0", "meter_interval: 1.0"),
    ("timeout is text", "hosts: [{address: localhost}]\nheartbeat_timeout: soon\n",
     2, "heartbeat_timeout", "'soon'", "heartbeat_timeout: 3.0"),
    ("restart intensity negative", "hosts: [{address: localhost}]\nrestart: {intensity: -1}\n",
     2, "restart.intensity", "-1", "intensity: 5"),
    ("restart intensity a fraction", "hosts: [{address: localhost}]\nrestart:\n  intensity: 2.5\n",
     3, "restart.intensity", "2.5", "intensity: 5"),
    ("restart period zero", "hosts: [{address: localhost}]\nrestart:\n  period: 0\n",
     3, "restart.period", "0", "period: 60"),
    ("restart as a number", "hosts: [{address: localhost}]\nrestart: 5\n",
     2, "restart", "5", "restart: {intensity: 5, period: 60}"),
    ("restart with Erlang's name", "hosts: [{address: localhost}]\nrestart:\n  max_restarts: 3\n",
     3, "restart.max_restarts", "max_restarts", "did you mean intensity?"),
    ("restart backoff above its maximum", "hosts: [{address: localhost}]\nrestart:\n  backoff: 5\n  max_backoff: 1\n",
     4, "restart.max_backoff", "less than backoff (5)", "make max_backoff at least backoff"),
    ("restart backoff above the default maximum", "hosts: [{address: localhost}]\nrestart:\n  backoff: 20\n",
     3, "restart.backoff", "the default", "make max_backoff at least backoff"),
    ("remote host without ssh", "hosts:\n  - address: localhost\n    cores: 2\n  - address: node1.example\n",
     4, "hosts[1].address", "'node1.example'", "add ssh: true"),
    ("local: false without ssh", "hosts:\n  - address: localhost\n    local: false\n",
     3, "hosts[0].local", "false", "add ssh: true"),
    ("local: true with ssh", "hosts:\n  - address: h1\n    local: true\n    ssh: true\n",
     3, "hosts[0].local", "true", "remove ssh:"),
    ("ssh key missing", "hosts:\n  - address: h1\n    ssh:\n      key: keys/nope\n",
     4, "hosts[0].ssh.key", "'keys/nope'", "key: ~/.ssh/id_ed25519"),
    ("key file is a directory", "keys: somedir\nhosts: [{address: localhost}]\n",
     1, "keys", "'somedir'", "give a file path"),
    ("user@ in the address", "hosts:\n  - address: me@h1\n    ssh: true\n",
     2, "hosts[0].address", "'me@h1'", "address: 192.168.1.20"),
    ("label read as false", "hosts:\n  - address: localhost\n    label: no\n",
     3, "hosts[0].label", "no", "quote it: label: 'no'"),
    ("duplicate key", "hosts:\n  - address: localhost\n    cores: 2\n    cores: 3\n",
     4, "hosts[0].cores", "first on line 3", "keep one"),
    ("bad env name", "hosts:\n  - address: localhost\n    env:\n      1X: a\n",
     4, "hosts[0].env.1X", "'1X'", "env: {OMP_NUM_THREADS: '1'}"),
    ("ssh option not Name=value", "hosts:\n  - address: h1\n    ssh:\n      options:\n        - -oFoo\n",
     5, "hosts[0].ssh.options[0]", "'-oFoo'", "StrictHostKeyChecking=accept-new"),
    ("loopback host with a remote one", "hosts:\n  - address: localhost\n  - address: h1\n    ssh: true\n",
     2, "hosts[0].address", "'localhost'", "local: true"),
    ("local python missing", "hosts:\n  - address: localhost\n    python: /no/such/python\n",
     3, "hosts[0].python", "'/no/such/python'", "leave python out"),
    ("local workdir missing", "hosts:\n  - address: localhost\n    workdir: nowhere\n",
     3, "hosts[0].workdir", "'nowhere'", "leave workdir out"),
    ("bad name", "name: my lab\nhosts: [{address: localhost}]\n",
     1, "name", "'my lab'", "name: lab"),
    ("a tag that cannot be read", "hosts:\n  - address: localhost\n    cores: !!int abc\n",
     3, "hosts[0].cores", "'abc'", "without a !tag"),
    ("file is a list", "- address: localhost\n",
     1, "", "address: localhost", "hosts: [{address: localhost"),
    ("tab indentation", "hosts:\n  - address: localhost\n\tcores: 2\n",
     3, "", "'\\t'", "spaces, not tabs"),
    ("unclosed bracket", "name: lab\nhosts: [{address: localhost}\njoin_timeout: 5\n",
     3, "", "expected ',' or ']'", "opened on line 2"),
    ("two documents", "hosts: [{address: localhost}]\n---\nname: x\n",
     2, "", "single document", "remove the second ---"),
]


@pytest.mark.parametrize("text,line,key_path,shown,fix", [case[1:] for case in BAD], ids=[case[0] for case in BAD])
def test_bad_file(tmp_path, text, line, key_path, shown, fix):
    (tmp_path / "somedir").mkdir()
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path)
    e = info.value
    message = str(e)
    assert (e.path, e.line, e.key_path) == (str(path), line, key_path), message
    prefix = f"{path}:{line}: {key_path}: " if key_path else f"{path}:{line}: "
    assert message.startswith(prefix), message
    assert shown in message, message
    assert e.fix and message.endswith(e.fix), message
    assert fix in e.fix, message


def test_message_reads_as_in_the_interface(tmp_path):
    text = "hosts:\n  - address: localhost\n  - address: 10.0.0.2\n    ssh: true\n    cores: many\n"
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    assert str(info.value) == (f"{tmp_path / 'cluster.yaml'}:5: hosts[1].cores: 'many' is not a number of nodes or "
                               "'auto'; write e.g. cores: auto or cores: 4")
    assert info.value.value == "many"


def test_ssh_key_error_says_where_it_looked(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, "hosts:\n  - address: h1\n    ssh: {key: keys/nope}\n"))
    assert f"looked up {tmp_path / 'keys' / 'nope'}" in str(info.value)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError) as info:
        load(path)
    e = info.value
    assert e.line is None and e.key_path == "" and str(path) in str(e)
    assert e.fix.endswith(f"termite-launch --init {path}")  # what writes a starter there
    assert "repository" not in e.fix  # a pip user has no repository


@pytest.mark.parametrize("text", ["", "# only a comment\n", "\n\n"])
def test_empty_file(tmp_path, text):
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    assert str(info.value).startswith(f"{tmp_path / 'cluster.yaml'}: the file is empty; write at least: hosts:")


def test_folder_instead_of_file(tmp_path):
    with pytest.raises(ConfigError, match="is a folder"):
        load(tmp_path)


def test_not_utf8(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_bytes(b"hosts:\n  - address: caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load(path)
    assert info.value.line == 2 and "UTF-8" in str(info.value)


def test_config_error_pickles(tmp_path):
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, "hosts:\n  - address: localhost\n    core: 4\n"))
    copy_ = pickle.loads(pickle.dumps(info.value))
    assert str(copy_) == str(info.value) and copy_.line == 3 and copy_.key_path == "hosts[0].core"


# -- the schema drives the checks ---------------------------------------------


def _properties(s, where="#"):
    """Every (where, name, schema) property in the schema."""
    for name, sub in s.get("properties", {}).items():
        yield f"{where}/{name}", name, sub
    for name, sub in s.get("$defs", {}).items():
        yield from _properties(sub, f"{where}/$defs/{name}")


def test_schema_ships_in_the_package_and_is_the_one_used():
    text = resources.files("termite_launcher").joinpath("cluster.schema.json").read_text()
    assert json.loads(text) == config.schema()


def test_every_key_is_documented_with_an_example():
    s = config.schema()
    for where, name, sub in _properties(s):
        assert sub.get("description"), f"{where} has no description"
        assert sub.get("x-example", "").startswith(f"{name}:"), f"{where} has no x-example for {name}:"
        assert sub.get("x-expected"), f"{where} has no x-expected"


def test_schema_defaults_match_the_dataclasses():
    s = config.schema()
    fields = {f.name: f.default for f in dataclasses.fields(ClusterConfig)}
    for key in ("heartbeat_interval", "heartbeat_timeout", "meter_interval", "join_timeout"):
        assert s["properties"][key]["default"] == fields[key]
    assert s["$defs"]["ssh"]["properties"]["port"]["default"] == SshOptions().port
    policy = {f.name: f.default for f in dataclasses.fields(RestartPolicy)}
    assert s["properties"]["restart"]["default"] == policy == fields["restart"].__dict__
    assert {k: sub["default"] for k, sub in s["properties"]["restart"]["properties"].items()} == policy
    assert s["$defs"]["host"]["properties"]["cores"]["default"] == "auto"


def test_a_range_written_in_the_schema_is_checked(tmp_path, monkeypatch):
    s = copy.deepcopy(config.schema())
    s["$defs"]["host"]["properties"]["cores"]["anyOf"][0]["maximum"] = 64
    monkeypatch.setattr(config, "_schema", lambda: s)
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, "hosts:\n  - address: localhost\n    cores: 65\n"))
    assert info.value.line == 3 and "the most is 64" in str(info.value)


def test_a_keyword_the_checker_does_not_know_is_refused(monkeypatch):
    s = copy.deepcopy(config.schema())
    s["properties"]["name"]["maxLength"] = 10
    with pytest.raises(RuntimeError, match="maxLength"):
        check_keywords(s)


def test_constructing_by_hand_fills_state_dir(tmp_path):
    c = ClusterConfig(name="t", path=tmp_path / "t.yaml", keys=tmp_path / "t.key", hosts=())
    assert c.state_dir == tmp_path / ".termite"


def test_loading_writes_nothing(tmp_path):
    path = write(tmp_path, "hosts: [{address: localhost}]\n")
    load(path)
    assert os.listdir(tmp_path) == ["cluster.yaml"]
