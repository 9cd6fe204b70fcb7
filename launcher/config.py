"""cluster.yaml: read, check against the shipped schema, cross-check, fill defaults.

The pipeline (after ray's cluster config):

1. *read*: the file is composed into YAML nodes, which know their line, so
   every error can say where it is;
2. *schema*: the nodes are checked against ``cluster.schema.json``, shipped
   in this package, by the general checker in termite_launcher.schema (it
   reads the keywords there, and the annotations ``x-expected``, what a value
   must be, and ``x-example``, the fix shown): a new key, range or default
   is an edit of the schema, not of code;
3. *cross-field rules*, here (`_build`): local or remote, duplicate
   addresses and labels, heartbeat_timeout > heartbeat_interval,
   restart.max_backoff >= restart.backoff, ``slurm:`` only with
   ``hosts: slurm``, and the paths that must exist on this machine;
4. *build* the frozen `ClusterConfig`.

``hosts: slurm`` leaves ``hosts`` empty and sets ``slurm``
(`SlurmSettings`): which hosts, and how many nodes on each, are the
allocation's, known only inside it, so termite_launcher.slurm fills them in
when a cluster starts (``in_allocation``) and says what to do outside one.

Every failure is one `ConfigError` naming the file and line, the key path,
the bad value and the fix::

    cluster.yaml:7: hosts[1].cores: 'many' is not a number of nodes or 'auto'; write e.g. cores: auto or cores: 4

The reference of every key is the ``description`` in the schema (and the
commented starter file ``termite-launch --init`` writes: termite_launcher.starter).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import os
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import termite
from termite_launcher.schema import Checker, ConfigError, check_keywords, check_yaml

__all__ = [
    "ConfigError",
    "SshOptions",
    "HostConfig",
    "RestartPolicy",
    "SlurmSettings",
    "ClusterConfig",
    "load",
    "schema",
    "LOCAL_ADDRESSES",
]

#: Addresses that mean this machine; a host there without ssh: is local.
LOCAL_ADDRESSES = frozenset({"localhost", "127.0.0.1", "::1"})

SCHEMA_FILE = "cluster.schema.json"


@dataclass(frozen=True)
class SshOptions:
    """How to log in to a remote host."""

    user: str | None = None  # None: the current user (or ~/.ssh/config's)
    port: int = 22
    key: str | None = None  # an absolute path to a private key (checked to exist)
    options: tuple[str, ...] = ()  # extra ``-o Name=value`` options


@dataclass(frozen=True)
class HostConfig:
    """One machine and the nodes to start on it."""

    address: str  # "localhost", an IP or a host name
    cores: int | None  # None means auto: the launcher counts the host's cores
    bind: str  # the address its nodes listen on (and are reached at)
    python: str  # the Python that runs its nodes
    ssh: SshOptions | None  # None for a local host
    workdir: str | None = None  # the folder nodes run in (remote, None: the ssh login folder)
    env: tuple[tuple[str, str], ...] = ()  # extra environment variables
    label: str = ""  # the dashboard's name for it; load() fills in the address
    slurm: bool = False  # a host of the Slurm allocation: its nodes are tasks of an srun job step

    @property
    def local(self) -> bool:
        """True when the nodes are started here as processes, False over SSH or by Slurm."""
        return self.ssh is None and not self.slurm


@dataclass(frozen=True)
class RestartPolicy:
    """How the launcher restarts a node whose process ends (cluster.yaml's ``restart:``).

    As an Erlang supervisor's intensity and period, counted per node: at most
    ``intensity`` restarts of one node within ``period`` seconds; at the next
    exit the node stays down.  The n-th restart within the period waits
    ``backoff * 2 ** (n - 1)`` seconds, at most ``max_backoff``.
    """

    intensity: int = 5
    period: float = 60.0
    backoff: float = 0.5
    max_backoff: float = 10.0

    def delay(self, restarts_in_period: int) -> float:
        """Seconds to wait before the next restart, after ``restarts_in_period`` restarts already."""
        return min(self.max_backoff, self.backoff * 2 ** min(restarts_in_period, 30))


@dataclass(frozen=True)
class SlurmSettings:
    """``hosts: slurm`` (or ``termite-launch --slurm``): the nodes are started in the Slurm allocation.

    The settings of cluster.yaml's ``slurm:``; termite_launcher.slurm reads
    the allocation and starts the nodes.
    """

    python: str  # the Python that runs the nodes (default: the launcher's)
    workdir: str | None = None  # srun --chdir (None: the launcher's folder)
    env: tuple[tuple[str, str], ...] = ()  # extra environment variables
    srun: tuple[str, ...] = ()  # extra srun options
    line: int | None = None  # where ``hosts: slurm`` is written (None: --slurm asked for it)


@dataclass(frozen=True)
class ClusterConfig:
    """A checked cluster.yaml, with every default filled in."""

    name: str
    path: Path  # the yaml file (absolute)
    keys: Path  # the cluster key file; the launcher creates it if missing
    hosts: tuple[HostConfig, ...]  # with slurm: the allocation's, once in_allocation() has read it
    heartbeat_interval: float = 0.5
    heartbeat_timeout: float = 3.0
    meter_interval: float = 1.0
    join_timeout: float = 30.0
    restart: RestartPolicy = RestartPolicy()
    slurm: SlurmSettings | None = None  # hosts: slurm
    # Always a Path once built: None (only when constructing by hand) means
    # <folder of the yaml>/.termite.
    state_dir: Path = None  # type: ignore[assignment]

    def __post_init__(self):
        if self.state_dir is None:
            object.__setattr__(self, "state_dir", Path(self.path).parent / ".termite")


def load(path: str | os.PathLike, *, slurm: bool = False) -> ClusterConfig:
    """Read and check a cluster.yaml; raise ConfigError saying what to fix.

    ``slurm``: start the nodes in the Slurm allocation, whatever ``hosts:``
    says (``termite-launch --slurm``).
    """
    label = os.fspath(path)
    file = Path(path).expanduser().absolute()
    try:
        text = file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(
            label, None, "", label, f"no such file (looked for {file})",
            "write a starter one, this machine with one node per core and every other key commented: "
            + ("termite-launch --init" if label == "cluster.yaml" else f"termite-launch --init {label}"),
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            label, None, "", label, "is a folder, not a cluster.yaml file",
            f"give the yaml file in it, e.g. {Path(label) / 'cluster.yaml'}",
        ) from None
    except PermissionError:
        raise ConfigError(label, None, "", label, "cannot be read (permission denied)",
                          "make it readable: chmod u+r " + label) from None
    except UnicodeDecodeError as exc:
        line = file.read_bytes().count(b"\n", 0, exc.start) + 1
        raise ConfigError(label, line, "", None, "is not UTF-8 text", "save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(label, None, "", label, f"cannot be read ({exc.strerror or exc})",
                          "check the path") from None
    config = _load_text(text, file, label)
    if slurm and config.slurm is None:
        config = dataclasses.replace(config, hosts=(), slurm=SlurmSettings(python=sys.executable))
    return config


def schema() -> dict:
    """The cluster.yaml schema (a copy): every key's type, range, default and description."""
    return copy.deepcopy(_schema())


# --------------------------------------------------------------------------
# 1. Read and 2. schema (termite_launcher.schema)
# --------------------------------------------------------------------------


@functools.cache
def _schema() -> dict:
    text = resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")
    root = json.loads(text)
    check_keywords(root, SCHEMA_FILE)
    return root


def _load_text(text: str, file: Path, label: str) -> ClusterConfig:
    data, checker = check_yaml(text, _schema(), label, SCHEMA_FILE)
    return _build(data, checker, file)


# --------------------------------------------------------------------------
# 3. Cross-field rules and 4. build
# --------------------------------------------------------------------------


def _is_loopback(address: str) -> bool:
    address = address.lower()
    return address in LOCAL_ADDRESSES or address.startswith("127.")


def _local_path(text: str, folder: Path) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else folder / path


def _build(data: dict, checker: Checker, file: Path) -> ClusterConfig:
    folder = file.parent
    error, line_of = checker.error, checker.line_of

    name, state_dir, _ = termite.cluster_state(file, data)  # as scripts find it (termite.Executor(cluster=...))
    if state_dir.exists() and not state_dir.is_dir():
        given = data.get("state_dir", str(state_dir))
        raise error(line_of("state_dir"), "state_dir", given,
                    f"{given!r} is a file, not a folder (looked up {state_dir})",
                    "give a folder, e.g. state_dir: .termite")
    keys = _local_path(data["keys"], folder) if "keys" in data else state_dir / f"{name}.key"
    if keys.is_dir():
        given = data.get("keys", str(keys))
        raise error(line_of("keys"), "keys", given,
                    f"{given!r} is a folder, not a key file (looked up {keys})",
                    f"give a file path, e.g. keys: {Path(data.get('keys', '.termite')) / (name + '.key')}")

    interval, timeout = data["heartbeat_interval"], data["heartbeat_timeout"]
    if timeout <= interval:
        if "heartbeat_timeout" in checker.lines or "heartbeat_interval" not in checker.lines:
            raise error(line_of("heartbeat_timeout"), "heartbeat_timeout", timeout,
                        f"{timeout} is not more than heartbeat_interval ({interval}), so every node would be down",
                        f"make it several intervals, e.g. heartbeat_timeout: {_nice(interval * 6)}")
        raise error(line_of("heartbeat_interval"), "heartbeat_interval", interval,
                    f"{interval} is not less than heartbeat_timeout ({timeout}, the default), "
                    "so every node would be down",
                    f"make it a fraction of the timeout, e.g. heartbeat_interval: {_nice(timeout / 6)}, "
                    f"or set heartbeat_timeout: {_nice(interval * 6)}")

    restart = data["restart"]
    if restart["max_backoff"] < restart["backoff"]:
        key = "restart.max_backoff" if "restart.max_backoff" in checker.lines else "restart.backoff"
        raise error(line_of(key), key, restart[key.split(".")[1]],
                    f"max_backoff ({restart['max_backoff']}{'' if key.endswith('max_backoff') else ', the default'}) "
                    f"is less than backoff ({restart['backoff']}), "
                    "so restarts would wait less the more often a node fails",
                    f"make max_backoff at least backoff, e.g. restart: {{backoff: {_nice(restart['backoff'])}, "
                    f"max_backoff: {_nice(max(10, restart['backoff'] * 20))}}}")

    if data["hosts"] == "slurm":
        hosts, slurm = (), _slurm(data.get("slurm", {}), checker, folder)
    elif "slurm" in data:
        raise error(line_of("slurm"), "slurm", data["slurm"],
                    "is for hosts: slurm, and hosts: is a list here",
                    "write hosts: slurm to start the nodes in a Slurm allocation, or remove slurm:")
    else:
        hosts, slurm = tuple(_host(i, h, checker, folder) for i, h in enumerate(data["hosts"])), None

    # Each address once: more nodes on a host is cores:, not a second entry.
    # (localhost and 127.0.0.1 may both be listed: two "hosts" on this machine
    # with, say, different Pythons.)
    first_at: dict[str, int] = {}
    labels: dict[str, int] = {}
    for i, host in enumerate(hosts):
        address = host.address.lower()
        if address in first_at:
            j = first_at[address]
            raise error(line_of(f"hosts[{i}].address"), f"hosts[{i}].address", host.address,
                        f"{host.address!r} is already hosts[{j}] on line {line_of(f'hosts[{j}]')}",
                        "list each host once; for more nodes on it set its cores:")
        first_at[address] = i
        if host.label in labels:
            j = labels[host.label]
            raise error(line_of(f"hosts[{i}].label"), f"hosts[{i}].label", host.label,
                        f"{host.label!r} is already the label of hosts[{j}]",
                        "give each host its own label, e.g. label: " + f"{host.label}-2")
        labels[host.label] = i

    # Nodes on another machine cannot reach nodes that listen on loopback.
    away = [i for i, h in enumerate(hosts) if not _is_loopback(h.bind)]
    if away:
        for i, host in enumerate(hosts):
            if _is_loopback(host.bind):
                key = f"hosts[{i}].bind" if f"hosts[{i}].bind" in checker.lines else f"hosts[{i}].address"
                raise error(line_of(key), key, host.bind if key.endswith("bind") else host.address,
                            f"{host.address!r} listens on loopback ({host.bind}), which the nodes of "
                            f"hosts[{away[0]}] ({hosts[away[0]].address}) cannot reach",
                            "write this machine's address as the other hosts see it, with local: true, "
                            "e.g. address: 192.168.1.10 and local: true")

    return ClusterConfig(
        name=name,
        path=file,
        keys=keys,
        hosts=hosts,
        heartbeat_interval=float(interval),
        heartbeat_timeout=float(timeout),
        meter_interval=float(data["meter_interval"]),
        join_timeout=float(data["join_timeout"]),
        restart=RestartPolicy(
            intensity=restart["intensity"], period=float(restart["period"]),
            backoff=float(restart["backoff"]), max_backoff=float(restart["max_backoff"]),
        ),
        slurm=slurm,
        state_dir=state_dir,
    )


def _nice(x: float) -> str:
    return f"{x:g}"


def _host(i: int, h: dict, checker: Checker, folder: Path) -> HostConfig:
    error, line_of = checker.error, checker.line_of
    kp = f"hosts[{i}]"
    address = h["address"]
    ssh_value = h.get("ssh")
    has_ssh = ssh_value is not None and ssh_value is not False
    local_flag = h.get("local")

    if local_flag is True and has_ssh:
        raise error(line_of(f"{kp}.local"), f"{kp}.local", True,
                    "true contradicts the ssh: section (a host with ssh: is reached over SSH)",
                    "remove ssh: for a host that is this machine, or local: for one reached over SSH")
    local = not has_ssh and (local_flag if local_flag is not None else _is_loopback(address))
    if not local and not has_ssh:
        if local_flag is False:
            raise error(line_of(f"{kp}.local"), f"{kp}.local", False,
                        "false says this host is reached over SSH, but it has no ssh: section",
                        "add ssh: true (or ssh: {user: me, key: ~/.ssh/id_ed25519}), or remove local: false")
        raise error(line_of(f"{kp}.address"), f"{kp}.address", address,
                    f"{address!r} is another machine, so it needs an ssh: section",
                    "add ssh: true (or ssh: {user: me, port: 22, key: ~/.ssh/id_ed25519}), "
                    f"or local: true if {address} is this machine")

    ssh = None
    if has_ssh:
        settings = ssh_value if isinstance(ssh_value, dict) else checker.defaults("#/$defs/ssh")  # ssh: true
        ssh = _ssh(f"{kp}.ssh", settings, checker, folder)

    cores = h["cores"]
    cores = None if cores == "auto" else cores

    bind = h.get("bind") or ("127.0.0.1" if _is_loopback(address) else address)

    python = h.get("python")
    if python is None:
        python = sys.executable if local else "python3"
    elif local:
        python = _local_python(python, f"{kp}.python", checker, folder)

    workdir = h.get("workdir")
    if workdir is not None and local:
        path = _local_path(workdir, folder)
        if not path.is_dir():
            raise error(line_of(f"{kp}.workdir"), f"{kp}.workdir", workdir,
                        f"{workdir!r} is not a folder (looked up {path})",
                        "give a folder that exists on this machine, or leave workdir out")
        workdir = str(path)

    env = tuple((k, str(v)) for k, v in h.get("env", {}).items())
    return HostConfig(address=address, cores=cores, bind=bind, python=python, ssh=ssh,
                      workdir=workdir, env=env, label=h.get("label") or address)


def _slurm(s: dict, checker: Checker, folder: Path) -> SlurmSettings:
    """``hosts: slurm``'s settings.  The Python and the folder are on the allocated hosts, not
    necessarily here: only a folder given relative to the yaml file is made absolute."""
    workdir = s.get("workdir")
    if workdir is not None:
        workdir = str(_local_path(workdir, folder))
    return SlurmSettings(
        python=s.get("python") or sys.executable,
        workdir=workdir,
        env=tuple((k, str(v)) for k, v in s.get("env", {}).items()),
        srun=tuple(s["srun"]) if "srun" in s else (),
        line=checker.line_of("hosts"),
    )


def _ssh(kp: str, s: dict, checker: Checker, folder: Path) -> SshOptions:
    key = s.get("key")
    if key is not None:
        path = _local_path(key, folder)
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "does not exist"
            raise checker.error(checker.line_of(f"{kp}.key"), f"{kp}.key", key,
                                f"{key!r} {what} (looked up {path})",
                                "give the path of a private key, e.g. key: ~/.ssh/id_ed25519, "
                                "or leave key out to use ssh's own keys")
        key = str(path)
    raw = s.get("options", ())
    if isinstance(raw, dict):
        options = tuple(f"{k}={_ssh_word(v)}" for k, v in raw.items())
    else:
        options = tuple(raw)
    return SshOptions(user=s.get("user"), port=s["port"], key=key, options=options)


def _ssh_word(v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


def _local_python(python: str, kp: str, checker: Checker, folder: Path) -> str:
    if os.sep in python or (os.altsep and os.altsep in python) or python.startswith("~"):
        path = _local_path(python, folder)
        found = str(path) if path.is_file() and os.access(path, os.X_OK) else None
        looked = str(path)
    else:
        found = shutil.which(python)
        looked = f"{python} on PATH"
    if found is None:
        raise checker.error(checker.line_of(kp), kp, python, f"{python!r} is not a Python here (looked up {looked})",
                            f"give the path of a Python with termite installed, e.g. python: {sys.executable}, "
                            "or leave python out to use the one running termite-launch")
    return found
