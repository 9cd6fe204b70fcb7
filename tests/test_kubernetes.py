"""Kubernetes (issue 21): the manifests, offline, and termite-launch --kubernetes, for real, in network namespaces.

No Kubernetes cluster and no container runtime are reachable here, so:

- deploy/kubernetes/*.yaml (and the Secret ``python -m termite_launcher.kubernetes
  secret`` prints) are validated against the Kubernetes 1.30 and 1.37 JSON schemas
  bundled by kubernetes-validate (the ``k8s`` extra; those tests skip without it),
  in strict mode (an unknown field fails), and checked to agree with each other:
  labels, ports, the Secret's name and key, and the env termite-launch --kubernetes
  reads, parsed by the launcher's own ``settings``.  deploy/Dockerfile is checked
  to agree with them (user, entrypoint, the job's script); it is not built.
- The pods are real: each is a network namespace of its own, on a bridge, whose
  /etc/hosts (``ip netns exec`` mounts /etc/netns/NS/hosts there) resolves the
  Service's name to the pods' addresses, as a headless Service's DNS name does.
  The launchers run with the env of the StatefulSet's container (the downward
  API's values filled in), start real nodes, find each other by name
  resolution and connect their nodes; a pod added to the name is found, one
  removed and stopped leaves nothing behind; the Job's command runs
  examples/pi.py on the nodes; the probes answer as the kubelet would see them.

What only a real cluster shows (not tested): the kubelet acting on the probes,
CoreDNS listing only ready pods, the Secret mounted with fsGroup, the image.
"""

from __future__ import annotations

import base64
import itertools
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

import termite
from termite_launcher import kubernetes
from termite_launcher.kubernetes import SettingsError, node_addresses, private_key_copy, resolve, settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
MANIFEST = DEPLOY / "kubernetes" / "termite.yaml"
JOB = DEPLOY / "kubernetes" / "job.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"
NODECODE = str(Path(__file__).resolve().parent / "nodecode")
KUBERNETES_VERSIONS = ("1.30", "1.37")  # the oldest still commonly run, and the newest kubernetes-validate 1.37 bundles


# -- the manifests --------------------------------------------------------------------------


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def one(docs: list[dict], kind: str) -> dict:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def service() -> dict:
    return one(documents(MANIFEST), "Service")


def statefulset() -> dict:
    return one(documents(MANIFEST), "StatefulSet")


def job() -> dict:
    return one(documents(JOB), "Job")


def container(workload: dict) -> dict:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return only


def cpu_cores(quantity) -> int:
    """A CPU quantity as the downward API gives it with divisor 1: whole cores, rounded up."""
    text = str(quantity)
    return math.ceil(int(text[:-1]) / 1000) if text.endswith("m") else math.ceil(float(text))


def environment(workload: dict, pod_name: str = "termite-0", pod_ip: str = "10.0.0.7") -> dict[str, str]:
    """The container's env as the kubelet fills it in (fieldRef and resourceFieldRef resolved)."""
    spec = container(workload)
    env = {}
    for item in spec.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"])
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[item["name"]] = {"status.podIP": pod_ip, "metadata.name": pod_name}[source["fieldRef"]["fieldPath"]]
        else:
            ref = source["resourceFieldRef"]
            assert ref["containerName"] == spec["name"]
            assert str(ref.get("divisor", "1")) == "1"
            resource, kind = ref["resource"].split(".")
            env[item["name"]] = str(cpu_cores(spec["resources"][resource][kind]))
    return env


def secret_from_command() -> dict:
    done = subprocess.run([sys.executable, "-m", "termite_launcher.kubernetes", "secret"],
                          capture_output=True, text=True, timeout=60, check=True)
    return yaml.safe_load(done.stdout)


def every_manifest() -> list[tuple[str, dict]]:
    found = [(f"{path.name}:{doc['kind']}", doc) for path in (MANIFEST, JOB) for doc in documents(path)]
    return found + [("secret command:Secret", secret_from_command())]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_manifests_validate_against_the_kubernetes_schemas(version):
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed: pip install -e '.[k8s]'"
    )
    manifests = every_manifest()
    assert {doc["kind"] for _, doc in manifests} == {"Service", "StatefulSet", "Job", "Secret"}
    for name, doc in manifests:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} is not a valid Kubernetes {version} resource at "
                        f"{'.'.join(map(str, exc.path))}: {exc.message}")


def test_the_validation_fails_a_manifest_with_a_mistake():
    """The check above can fail: a misspelt field and a wrong type are both caught, offline."""
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed: pip install -e '.[k8s]'"
    )
    misspelt = statefulset()
    container(misspelt)["readinesProbe"] = container(misspelt).pop("readinessProbe")
    wrong_type = statefulset()
    wrong_type["spec"]["replicas"] = "two"
    for doc in (misspelt, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)


def test_the_headless_service_selects_the_statefulsets_pods_and_not_the_jobs():
    svc, sts = service(), statefulset()
    assert svc["spec"]["clusterIP"] == "None"  # headless: its name resolves to the pods' own addresses
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert sts["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    assert not svc["spec"]["selector"].items() <= job()["spec"]["template"]["metadata"]["labels"].items()


def test_each_node_of_a_pod_has_its_port_in_the_service_and_the_container():
    sts = statefulset()
    s = settings(environment(sts))
    resources = container(sts)["resources"]
    assert resources["requests"] == resources["limits"], "Guaranteed QoS: requests = limits"
    assert s.nodes_per_pod == cpu_cores(resources["limits"]["cpu"]) >= 1  # one node per core
    wanted = {f"node-{i}": port for i, (_, port) in enumerate(node_addresses(["pod"], s.port, s.nodes_per_pod))}
    assert {p["name"]: p["port"] for p in service()["spec"]["ports"]} == wanted
    ports = {p["name"]: p["containerPort"] for p in container(sts)["ports"]}
    assert ports == {**wanted, "health": s.health_port}


def test_the_pods_env_is_what_the_launcher_reads():
    sts, svc = statefulset(), service()
    env = environment(sts, pod_name="termite-1", pod_ip="10.0.0.8")
    unread = set(env) - set(kubernetes.ENVIRONMENT)
    assert not unread, f"set in the manifest, not read by the launcher: {unread}"
    s = settings(env)
    assert (s.service, s.pod_ip, s.pod_name) == (svc["metadata"]["name"], "10.0.0.8", "termite-1")
    spec = container(sts)
    assert spec["args"] == ["termite-launch", "--kubernetes"]
    for probe, path in (("startupProbe", "/live"), ("readinessProbe", "/ready"), ("livenessProbe", "/live")):
        assert spec[probe]["httpGet"] == {"path": path, "port": "health"}
    # The key: the Secret's item, mounted where TERMITE_KEYS says.
    (mount,) = [m for m in spec["volumeMounts"] if Path(s.keys).parent == Path(m["mountPath"])]
    (volume,) = [v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["items"] == [{"key": kubernetes.KEY_FILE_NAME, "path": Path(s.keys).name}]
    assert volume["secret"]["secretName"] == kubernetes.DEFAULT_SECRET
    # /tmp is writable (the key's private copy goes there) on a read-only root file system.
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    assert "/tmp" in {m["mountPath"] for m in spec["volumeMounts"]}


def test_the_job_sees_the_cluster_as_the_pods_do():
    pod, job_env = settings(environment(statefulset())), environment(job())
    assert set(job_env) <= set(kubernetes.ENVIRONMENT)
    s = settings(job_env, job=True)
    assert (s.service, s.port, s.nodes_per_pod, s.keys) == (pod.service, pod.port, pod.nodes_per_pod, pod.keys)
    spec = container(job())
    assert spec["args"][:3] == ["termite-launch", "--kubernetes", "--run"]
    (key_volume,) = [v for v in job()["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert key_volume in statefulset()["spec"]["template"]["spec"]["volumes"]
    (mount,) = [m for m in spec["volumeMounts"] if m["name"] == key_volume["name"]]
    assert Path(mount["mountPath"]) / key_volume["secret"]["items"][0]["path"] == Path(s.keys)


def test_the_secret_command_makes_the_secret_the_pods_mount(tmp_path):
    secret = secret_from_command()
    volume = statefulset()["spec"]["template"]["spec"]["volumes"][0]["secret"]
    assert secret["metadata"]["name"] == volume["secretName"]
    assert set(secret["data"]) == {item["key"] for item in volume["items"]}
    mounted = tmp_path / "cluster.key"
    mounted.write_bytes(base64.b64decode(secret["data"][kubernetes.KEY_FILE_NAME]))
    mounted.chmod(0o440)  # as a Secret is mounted with defaultMode 0440 and an fsGroup: termite refuses that mode
    with pytest.raises(termite.KeyFileError):
        termite.load_keys(mounted)
    (tmp_path / "private").mkdir(mode=0o700)
    copy = private_key_copy(str(mounted), str(tmp_path / "private"))
    assert os.stat(copy).st_mode & 0o777 == 0o600
    assert Path(copy).read_bytes() == mounted.read_bytes()
    termite.load_keys(copy)  # a real key
    assert secret_from_command()["data"] != secret["data"]  # a new key each time


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, the rest) of each instruction: continued lines joined, comments and here-documents left out."""
    found, lines = [], iter(text.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        word, _, rest = line.partition(" ")
        found.append((word.upper(), rest.strip()))
        if (here := re.search(r"<<-?'?(\w+)'?", rest)) is not None:
            for body in lines:
                if body.strip() == here[1]:
                    break
    return found


def test_the_image_runs_the_pods_command_as_the_pods_user():
    text = DOCKERFILE.read_text()
    instructions = dockerfile_instructions(text)
    stages = [rest for word, rest in instructions if word == "FROM"]
    assert stages == ["python:3.11-slim AS builder", "python:3.11-slim"]
    runtime = text[text.rindex("\nFROM "):]
    assert "gcc" not in runtime  # the compiler stays in the builder
    user = [rest for word, rest in instructions if word == "USER"][-1]
    security = statefulset()["spec"]["template"]["spec"]["securityContext"]
    assert user == f"{security['runAsUser']}:{security['runAsGroup']}" and security["runAsUser"] != 0
    assert json.loads([rest for word, rest in instructions if word == "ENTRYPOINT"][0]) == ["tini", "--"]
    assert json.loads([rest for word, rest in instructions if word == "CMD"][0]) == container(statefulset())["args"]
    for workload in (statefulset(), job()):  # args, not command: tini stays PID 1 and passes SIGTERM on
        assert "command" not in container(workload)
    script = container(job())["args"][3]
    assert "COPY examples/ /opt/termite/examples/" in text and script.startswith("/opt/termite/examples/")
    assert (ROOT / "examples" / Path(script).name).is_file()


# -- the launcher's pieces ------------------------------------------------------------------


def test_resolve_gives_every_address_of_a_name_once():
    assert "127.0.0.1" in resolve("localhost")
    assert resolve("localhost", socket.AF_INET6) in ([], ["::1"])
    assert resolve("no-such-service.invalid") == []
    assert node_addresses(["10.0.0.1", "10.0.0.2"], 7100, 2) == [
        ("10.0.0.1", 7100), ("10.0.0.1", 7101), ("10.0.0.2", 7100), ("10.0.0.2", 7101),
    ]


@pytest.mark.parametrize(
    "change, variable",
    [
        ({"TERMITE_SERVICE": ""}, "TERMITE_SERVICE"),
        ({"POD_IP": ""}, "POD_IP"),
        ({"POD_IP": "termite-0"}, "POD_IP"),
        ({"TERMITE_PORT": "70000"}, "TERMITE_PORT"),
        ({"TERMITE_NODES_PER_POD": "0"}, "TERMITE_NODES_PER_POD"),
        ({"TERMITE_DISCOVERY_INTERVAL": "soon"}, "TERMITE_DISCOVERY_INTERVAL"),
    ],
)
def test_a_bad_setting_is_named_with_its_fix(change, variable):
    env = {**environment(statefulset()), **change}
    with pytest.raises(SettingsError, match=variable) as caught:
        settings(env)
    assert "env" in str(caught.value)  # where to set it


def test_a_pod_without_its_settings_or_key_does_not_start(tmp_path):
    env = {**os.environ, **environment(statefulset()), "TERMITE_KEYS": str(tmp_path / "none.key")}
    del env["POD_IP"]
    done = _launch(env)
    assert done.returncode == 2 and "POD_IP is not set" in done.stderr, done.stderr
    env["POD_IP"] = "127.0.0.1"
    done = _launch(env)
    assert done.returncode == 2 and f"no cluster key at {tmp_path / 'none.key'} (TERMITE_KEYS)" in done.stderr
    done = _launch(env, "--detach")
    assert done.returncode == 2 and "--kubernetes takes no cluster file" in done.stderr


def _launch(env, *extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "termite_launcher", "--kubernetes", *extra], env=env,
                          capture_output=True, text=True, timeout=60)


# -- pods as network namespaces -------------------------------------------------------------

_NETNS_PREFIX = "tk8s-"
_runs = itertools.count()


class PodNetwork:
    """Network namespaces on one bridge (itself in a namespace of its own): a pod network.

    Each namespace gets an address on 10.78.0.0/24 and a hosts file,
    /etc/netns/NS/hosts, which ``ip netns exec`` mounts over /etc/hosts: what
    :meth:`set_service` writes there is what the Service's name resolves to.
    Nothing is changed in the root namespace but those files.
    """

    def __init__(self):
        self.prefix = f"{_NETNS_PREFIX}{os.getpid()}-{next(_runs)}"
        self.switch = f"{self.prefix}-sw"
        self.namespaces: list[str] = []
        self.addresses: dict[str, str] = {}
        self.service_lines = ""

    def start(self) -> None:
        _ip("netns", "add", self.switch)
        self.namespaces.append(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")

    def add(self, name: str, host: int) -> str:
        """A namespace (a pod) at 10.78.0.HOST; its name."""
        netns, veth, address = f"{self.prefix}-{name}", f"v{host}", f"10.78.0.{host}"
        _ip("netns", "add", netns)
        self.namespaces.append(netns)
        _ip("-n", self.switch, "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _ip("-n", self.switch, "link", "set", veth, "master", "br0", "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        _ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        _ip("-n", netns, "link", "set", "eth0", "up")
        os.makedirs(f"/etc/netns/{netns}", exist_ok=True)
        self.addresses[netns] = address
        self._write_hosts(netns)
        return netns

    def set_service(self, name: str, addresses: list[str]) -> None:
        """From now on ``name`` resolves to ``addresses`` in every namespace (as DNS lists ready pods)."""
        self.service_lines = "".join(f"{address} {name}\n" for address in addresses)
        for netns in self.addresses:
            self._write_hosts(netns)

    def _write_hosts(self, netns: str) -> None:
        path = f"/etc/netns/{netns}/hosts"
        text = "127.0.0.1 localhost\n::1 localhost\n" + self.service_lines
        with open(path, "a+") as f:  # rewritten in place: a running namespace has this very file mounted
            f.seek(0)
            f.truncate()
            f.write(text)

    def popen(self, netns: str, argv, env, **options) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", netns, *argv], env=env, **options)

    def run(self, netns: str, argv, env, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", netns, *argv], env=env, capture_output=True, text=True,
                              timeout=timeout)

    def pids(self, netns: str) -> set[int]:
        done = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=10)
        return {int(pid) for pid in done.stdout.split()}

    def close(self) -> None:
        for netns in reversed(self.namespaces):
            _remove_netns(netns)


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")


def _remove_netns(netns: str) -> None:
    for _ in range(50):  # every process left in it, by pid
        done = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, timeout=10)
        pids = [int(pid) for pid in done.stdout.split()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    subprocess.run(["ip", "netns", "del", netns], capture_output=True, timeout=10)
    shutil.rmtree(f"/etc/netns/{netns}", ignore_errors=True)


def _clear_dead_runs() -> None:
    """Namespaces a killed run of this file left (their pid is in their name)."""
    for netns in os.listdir("/run/netns") if os.path.isdir("/run/netns") else ():
        match = re.fullmatch(rf"{_NETNS_PREFIX}(\d+)-\d+-\w+", netns)
        if match and not os.path.exists(f"/proc/{match[1]}"):
            _remove_netns(netns)


@pytest.fixture
def pod_network():
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("pods as network namespaces need Linux, root and `ip` (iproute2)")
    _clear_dead_runs()
    network = PodNetwork()
    try:
        network.start()
    except RuntimeError as exc:
        network.close()
        pytest.skip(f"cannot make network namespaces here: {exc}")
    try:
        yield network
    finally:
        network.close()


class Launcher:
    """``termite-launch --kubernetes`` in a namespace, its output read as it comes."""

    def __init__(self, network: PodNetwork, netns: str, argv, env):
        self.proc = network.popen(netns, [sys.executable, "-m", "termite_launcher", "--kubernetes", *argv], env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            with self._changed:
                self.lines.append(raw.decode(errors="replace"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("")  # the end
            self._changed.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30.0, after: int = 0) -> re.Match:
        """The first line (from line ``after`` on) that matches ``pattern``; fails with the output so far."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        with self._changed:
            while True:
                for line in self.lines[after:]:
                    if (found := regex.search(line)) is not None:
                        return found
                left = deadline - time.monotonic()
                if left <= 0 or (self.lines and self.lines[-1] == ""):
                    pytest.fail(f"no line matching {pattern!r} within {timeout} s; output:\n{''.join(self.lines)}")
                self._changed.wait(left)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def _pod_env(pod: str, address: str, keys: str) -> dict[str, str]:
    """The StatefulSet's container env for the pod ``pod`` at ``address``, as the kubelet gives it."""
    env = dict(os.environ)
    env.update(environment(statefulset(), pod_name=pod, pod_ip=address))
    env["TERMITE_KEYS"] = keys  # the Secret is not mounted here: the same key, in a file with the mount's mode
    env["TERMITE_DISCOVERY_INTERVAL"] = "0.5"  # a test's pace; 5 s by default
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), NODECODE, os.environ.get("PYTHONPATH")]))
    return env


def _keys(tmp_path: Path) -> tuple[str, str]:
    """A cluster key as a pod has it mounted (mode 0440), and the same in a private file, for the test's checks."""
    private = tmp_path / "private.key"
    termite.generate_keys(private)
    mounted = tmp_path / "mounted" / "cluster.key"
    mounted.parent.mkdir()
    shutil.copy(private, mounted)
    mounted.chmod(0o440)  # as Kubernetes mounts the Secret (defaultMode 0440, with the pod's fsGroup)
    return str(mounted), str(private)


def _checks(network: PodNetwork, netns: str, env, *args, timeout: float = 60) -> dict:
    done = network.run(netns, [sys.executable, os.path.join(NODECODE, "pod_checks.py"), *args], env, timeout)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def _mesh(net: PodNetwork, netns: str, keys: str, private: str, nodes: list[str]) -> dict[str, list[str]]:
    """Each of ``nodes``: the others of ``nodes`` it is connected to, asked of it with termite.nodes()
    (its peers also include the launchers' own nodes)."""
    found = _checks(net, netns, _pod_env("check", "", keys), "mesh", private, *nodes)
    return {node: [peer for peer in peers if peer in nodes] for node, peers in found.items()}


@pytest.mark.timeout(240)
def test_pods_find_each_other_through_the_services_name_and_a_job_runs_on_them(pod_network, tmp_path):
    net = pod_network
    name = environment(statefulset())["TERMITE_SERVICE"]
    pods = {f"termite-{i}": net.add(f"p{i}", 10 + i) for i in range(3)}
    job_ns = net.add("job", 20)
    keys, private = _keys(tmp_path)
    address = {pod: net.addresses[netns] for pod, netns in pods.items()}
    per_pod = int(environment(statefulset())["TERMITE_NODES_PER_POD"])
    launchers = {}
    try:
        # Two pods, both listed by the Service's name.
        net.set_service(name, [address["termite-0"], address["termite-1"]])
        for pod in ("termite-0", "termite-1"):
            launchers[pod] = Launcher(net, pods[pod], [], _pod_env(pod, address[pod], keys))
        for pod in ("termite-0", "termite-1"):
            launchers[pod].wait_for(rf"pod {pod}: {per_pod} nodes up")
            launchers[pod].wait_for(rf"2 pods found through {name} .*connected to all {2 * per_pod} nodes")
        nodes = [f"{host}:{port}" for host, port in node_addresses(
            [address["termite-0"], address["termite-1"]], 7100, per_pod)]
        assert _mesh(net, job_ns, keys, private, nodes) == {node: sorted(set(nodes) - {node}) for node in nodes}

        # Scale up: a third pod starts, and the name lists it once it is ready.
        launchers["termite-2"] = Launcher(net, pods["termite-2"], [], _pod_env("termite-2", address["termite-2"], keys))
        launchers["termite-2"].wait_for(rf"pod termite-2: {per_pod} nodes up")
        net.set_service(name, list(address.values()))
        for pod in pods:
            launchers[pod].wait_for(rf"3 pods found through {name} .*connected to all {3 * per_pod} nodes")
        nodes = [f"{host}:{port}" for host, port in node_addresses(list(address.values()), 7100, per_pod)]
        assert _mesh(net, job_ns, keys, private, nodes) == {node: sorted(set(nodes) - {node}) for node in nodes}

        # The Job's command, with the Job's env: examples/pi.py on every node the name lists.
        job_env = {**_pod_env("job", "", keys), **environment(job()), "TERMITE_KEYS": keys}
        del job_env["POD_IP"], job_env["POD_NAME"]
        argv = container(job())["args"][1:]
        argv[argv.index("--run") + 1] = str(ROOT / "examples" / "pi.py")  # where the image has it
        argv[-1] = "8"  # tasks: a test's share of the machine
        done = net.run(job_ns, [sys.executable, "-m", "termite_launcher", *argv], job_env, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"on {3 * per_pod} nodes of 3 pods found through {name}" in done.stderr
        assert re.search(r"pi is about 3\.1\d* \(8 tasks", done.stdout), done.stdout

        # Scale down: the last pod leaves the name and is stopped (SIGTERM, as the kubelet sends).
        net.set_service(name, [address["termite-0"], address["termite-1"]])
        before = len(launchers["termite-0"].lines)
        assert launchers["termite-2"].stop() == 128 + signal.SIGTERM
        assert net.pids(pods["termite-2"]) == set(), "the pod's nodes outlived its launcher"
        launchers["termite-0"].wait_for(rf"2 pods found through {name} .*connected to all {2 * per_pod} nodes",
                                        after=before)
    finally:
        for launcher in launchers.values():
            launcher.stop()


@pytest.mark.timeout(180)
def test_the_probes_say_live_and_ready_a_busy_node_is_live_and_a_killed_node_restarts(pod_network, tmp_path):
    net = pod_network
    name = environment(statefulset())["TERMITE_SERVICE"]
    netns = net.add("p0", 10)
    address = net.addresses[netns]
    net.set_service(name, [address])
    keys, private = _keys(tmp_path)
    env = _pod_env("termite-0", address, keys)
    health = f"http://{address}:{environment(statefulset())['TERMITE_HEALTH_PORT']}"
    pod = Launcher(net, netns, [], env)
    try:
        pids = dict(re.findall(r"(\d+\.\d+\.\d+\.\d+:\d+) \(pid (\d+)\)", pod.wait_for(r"pod termite-0: .* up: .*")[0]))
        pod.wait_for(rf"1 pod found through {name} .*connected to all")
        ready, live = _checks(net, netns, env, "probe", "10", f"{health}/ready", "200", f"{health}/live", "200")
        assert ready["status"] == 200 and live["status"] == 200, (ready, live)
        assert ready["body"] == f"ok: {address}:7100 up, {address}:7101 up\n"
        assert _checks(net, netns, env, "probe", "1", f"{health}/metrics", "404")[0]["status"] == 404

        # A node holding its GIL for seconds: unresponsive, so not ready; alive all the same.
        busy = _checks(net, netns, env, "busy", private, f"{address}:7101", "10", health)
        not_ready, still_live = busy["during"]
        assert not_ready == {"status": 503, "body": f"failing: {address}:7100 up, {address}:7101 unresponsive\n"}
        assert still_live["status"] == 200, still_live
        assert busy["after"][0]["status"] == 200, busy  # ready again once it answers

        # A node killed: the launcher starts it again on its port; ready again once it is connected.
        before = len(pod.lines)
        os.kill(int(pids[f"{address}:7101"]), signal.SIGKILL)
        pod.wait_for(rf"node {address}:7101 killed by signal 9 \(SIGKILL\); restarting it in 0.5 s", after=before)
        pod.wait_for(rf"node {address}:7101 restarted \(pid \d+\)", after=before)
        (ready,) = _checks(net, netns, env, "probe", "20", f"{health}/ready", "200")
        assert ready == {"status": 200, "body": f"ok: {address}:7100 up, {address}:7101 up\n"}
    finally:
        status = pod.stop()
    assert status == 128 + signal.SIGTERM
    assert net.pids(netns) == set()
