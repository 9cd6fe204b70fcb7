"""The cluster a ``pytest --termite`` run uses, and the relays its workers run under.

:class:`ClusterLink` does, on a thread of its own (so the cluster comes up
while pytest collects):

1. joins the running cluster of the cluster.yaml if its state file says one
   runs (its nodes least loaded first), or starts it with
   termite_launcher.cluster.Cluster (and stops it at the end);
   ``--termite-copy`` first copies the rootdir to every remote host;
2. runs the controller's own termite node, and on it the *hub*: the process
   that spawns each worker's relay on its node (termite_launcher/pytest_relay.py)
   and passes everything the relays and the cluster say to the controller's
   event queue;
3. spawns the first workers (the controller's callback), then puts
   ``("setup",)`` on the queue, or ``("setup-failed", exc)``.

A worker on a local node is no relay's child but this process's
(termite_launcher/pytest_local.py): when every host is local the first ones
are forked before the thread starts (:meth:`ClusterLink.start_early`), and
run tests while the nodes start; the controller ties each to its node once
the nodes are up (:meth:`ClusterLink.bind`).

The thread lives until ``stop``: the nodes it forks die with it
(PR_SET_PDEATHSIG).  termite is imported only here, when a run starts, not
whenever pytest loads the plugin.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
from pathlib import Path

import pytest

from termite_launcher.pytest_local import LocalWorker, can_fork

__all__ = ["ClusterLink"]

#: The niceness of the cluster's thread when the workers are local, and so of the nodes it
#: starts and of this process's own node: they must not slow the tests down (see _yield_to_tests).
#: The lowest priority: at nice 5 the starting nodes still took a quarter of a core from tests
#: burning CPU (the sample suite's 50 x 20 ms took 0.3 s longer than under xdist; at 19, no
#: longer); with two such tests on two cores a node at 19 still starts in 1.5 s, and heartbeats.
NODES_NICE = 19


class ClusterLink:
    """The controller's node, its hub, and the nodes workers run on: ``(ref, label, local, cwd)``."""

    def __init__(self, config, cluster_config, events: queue.SimpleQueue, notes: list[str], *, testrunuid: str,
                 cwd_on_path: bool):
        self.config = config
        self.cluster_config = cluster_config
        self.events = events
        self.notes = notes
        self.testrunuid = testrunuid
        self.cwd_on_path = cwd_on_path
        self.basetemp = None
        self.up = False  # node, hub, nodes, how and planned are set
        self.node = self.hub = self.cluster = None
        self.nodes: list[tuple] = []
        self.how = ""
        self.planned = 0  # workers started first: one per node, at most --termite-workers
        self.thread = None
        self.stop_event = threading.Event()
        self.early = False  # the first workers were started before the cluster (all hosts are local)
        self.local_nodes: dict[str, tuple] = {}  # label -> (OS pid, HostConfig or None) of each local node
        self.show_output = config.getoption("capture", "fd") == "no"  # -s: what tests print is shown here

    # -- workers before the cluster ------------------------------------------------

    def early_hosts(self) -> list:
        """The host of each worker that may start before the cluster is up: all local hosts, or none.

        As many as the cluster will have nodes (a node is a core), at most ``--termite-workers``.
        """
        hosts = self.cluster_config.hosts
        if not hosts or not all(host.local for host in hosts):
            return []
        plan = [host for host in hosts for _ in range(host.cores or os.cpu_count() or 1)]
        return plan[: self.config.getoption("termite_workers") or len(plan)]

    def start_early(self, workers: list, hosts: list) -> None:
        """Start ``workers`` (one per host of ``hosts``) now, forked if this process has no thread yet."""
        self._basetemp()
        self.planned = len(workers)
        self.early = True
        started: list[LocalWorker] = []
        for worker, host in zip(workers, hosts):
            process = LocalWorker(worker.key, self.events, self.show_output)
            info = self._info(worker)
            if can_fork(host.python):
                process.fork(info, self._args(), dict(host.env))
            else:
                process.exec(host.python, info, self._args(), worker.cwd, dict(host.env))
            worker.process = process
            started.append(process)
        for process in started:  # threads only once every fork is done
            process.read()

    def bind(self, worker, node) -> None:
        """Tie an early ``worker`` to ``node`` (one of ``nodes``): it ends when that node's process does."""
        ref, label, local, cwd = node
        worker.bind(ref, label)
        self.command(worker, {"cmd": "node", "pid": self.local_nodes[label][0]})

    def _basetemp(self) -> None:
        if self.basetemp is None:
            try:
                self.basetemp = self.config._tmp_path_factory.getbasetemp()  # as xdist: a worker's is a folder in it
            except Exception:  # noqa: BLE001 - workers then make their own
                self.basetemp = None

    def start(self, first_workers) -> None:
        """Bring the cluster up on a thread; ``first_workers()`` is called there once it is."""
        self._basetemp()
        self.thread = threading.Thread(
            target=self._run, args=(first_workers,), name="termite-pytest-cluster", daemon=True
        )
        self.thread.start()

    def _run(self, first_workers) -> None:
        cluster = here = None
        if self.early:
            self._yield_to_tests()
        try:
            cluster, here, nodes, how = self._join_or_start()
            self.hub = here.spawn(_hub, self.events)
            self.node, self.nodes, self.how, self.cluster = here, nodes, how, cluster
            if not self.planned:  # else early workers were started for a plan
                limit = self.config.getoption("termite_workers") or len(nodes)
                self.planned = min(limit, len(nodes))
            self.up = True
            first_workers()
            self.events.put(("setup",))  # after the spawns: from now on only the main thread touches workers
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            self.events.put(("setup-failed", exc))
        self.stop_event.wait()
        if here is not None:
            here.stop()
        if cluster is not None:
            cluster.stop()

    def _yield_to_tests(self) -> None:
        """On the cluster's thread, when the workers are this host's: leave the cores to the tests.

        The local workers run tests while the nodes start (a node's start is an interpreter's,
        termite's import, a socket), and the nodes then only watch; on a busy host, at a lower
        priority they take from the tests only what the tests leave.  Linux's niceness is a
        thread's, and what the thread forks (the nodes) and starts (this process's node) inherit it.
        """
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NODES_NICE)
        except (OSError, AttributeError):
            pass

    def stop(self) -> None:
        """End the thread: the controller's node, and the cluster if this run started it."""
        self.stop_event.set()
        self.thread.join(self.cluster_config.join_timeout + 60)

    # -- talking to the workers' relays ---------------------------------------------

    def command(self, worker, command: dict) -> None:
        """Send ``command`` to ``worker``'s pytest (held until its relay's pid is known)."""
        line = json.dumps(command)
        if worker.process is not None:
            worker.process.command(line)
        elif worker.relay is None:
            worker.outbox.append(line)
        else:
            self.node.send(worker.relay, line)

    def relay_spawned(self, worker, relay) -> None:
        """``worker``'s relay runs as ``relay``: what was held for it goes now."""
        worker.relay = relay
        for line in worker.outbox:
            self.node.send(relay, line)
        worker.outbox.clear()

    def kill(self, worker) -> None:
        """End ``worker``'s pytest at once (if its relay is known, on a remote node)."""
        if worker.process is not None:
            worker.process.kill()
        elif worker.relay is not None:
            self.node.send(worker.relay, ("kill",))

    def spawn(self, worker) -> None:
        """Start ``worker`` on its node: a child of this process on a local node, else under a relay there."""
        local = self.local_nodes.get(worker.label)
        if local is None:
            self._spawn_relay(worker)
            return
        node_pid, host = local
        info = dict(self._info(worker), node_pid=node_pid)
        process = LocalWorker(worker.key, self.events, self.show_output)
        python, env = (host.python, dict(host.env)) if host else (sys.executable, {})
        process.exec(python, info, self._args(), worker.cwd, env)
        worker.process = process
        worker.state = "started"
        process.read()

    def _spawn_relay(self, worker) -> None:
        """Have the hub spawn ``worker``'s relay on its node (it answers on the event queue)."""
        env = {}
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        relay_args = ([json.dumps(self._info(worker)), *self._args()], worker.cwd, env, self.show_output)
        self.node.send(self.hub, ("spawn", worker.key, worker.node, relay_args))

    def _args(self) -> list[str]:
        return list(self.config.invocation_params.args)

    def _info(self, worker) -> dict:
        return {
            "id": worker.name,
            "count": self.planned,
            "testrunuid": self.testrunuid,
            # On another host that folder does not exist: workers there make their own.
            "basetemp": str(self.basetemp / worker.name) if worker.local and self.basetemp is not None else None,
            "cwd_on_path": self.cwd_on_path,
        }

    # -- joining or starting ------------------------------------------------------

    def _join_or_start(self):
        from termite_launcher.cluster import Cluster, LaunchError, launcher_host, pid_alive, read_state

        import termite

        config = self.cluster_config
        hosts = {host.address: host for host in config.hosts}
        if self.config.getoption("termite_copy"):
            self._copy_code([host for host in config.hosts if not host.local and not host.slurm])
        network = dict(
            host=launcher_host(config), port=0, keys=str(config.keys),
            heartbeat_interval=config.heartbeat_interval, heartbeat_timeout=config.heartbeat_timeout,
        )  # fmt: skip
        state_file = config.state_dir / f"{config.name}.json"
        if state_file.exists() and config.keys.exists():
            state = read_state(state_file)
            here = termite.Node(**network, client=True).start()
            nodes = []
            for node in state.get("nodes", ()):
                if not node.get("remote") and not pid_alive(node["os_pid"]):
                    continue  # a node of a cluster that has ended
                host, port = node["address"].rsplit(":", 1)
                try:
                    ref = here.connect(host, int(port), timeout=min(3.0, config.join_timeout))
                except termite.Timeout:
                    continue
                host_config = hosts.get(node.get("host"))
                if not node.get("remote"):
                    self.local_nodes[node["address"]] = (node["os_pid"], host_config)
                nodes.append((ref, node["address"], not node.get("remote"), host_config))
            if nodes:
                nodes = self._by_load(here, nodes)
                return None, here, [self._place(*n) for n in nodes], f"joined running cluster {config.name!r}"
            here.stop()
        cluster = Cluster(config)
        try:
            cluster.start()  # it makes the key file if there is none yet
        except LaunchError as exc:
            raise pytest.UsageError(f"--termite: {exc}") from None
        try:
            here = termite.Node(**network, client=True).start()
            cluster.joined(here, config.join_timeout)
        except BaseException:
            cluster.stop()
            raise
        nodes = [(node.ref, node.address, node.host.local, node.host) for node in cluster.nodes]
        self.local_nodes.update((node.address, (node.os_pid, node.host)) for node in cluster.nodes if node.host.local)
        return cluster, here, [self._place(*n) for n in nodes], f"started cluster {config.name!r}"

    def _copy_code(self, hosts) -> None:
        """``--termite-copy``: the rootdir into each remote host's workdir, all at once, before any node starts."""
        from termite_launcher.ssh import RemoteError, copy_folder

        root = self.config.rootpath
        errors: list[RemoteError] = []

        def copy(host):
            try:
                copy_folder(host, root)
            except RemoteError as exc:
                errors.append(exc)

        copiers = [threading.Thread(target=copy, args=(host,), daemon=True) for host in hosts]
        for copier in copiers:
            copier.start()
        for copier in copiers:
            copier.join()
        if errors:
            raise pytest.UsageError(f"--termite-copy: {errors[0]}")
        self.notes.extend(f"copied {root} to {host.label or host.address}:{host.workdir}" for host in hosts)

    def _by_load(self, here, nodes):
        """The nodes of a running cluster, least loaded first (idle nodes take the first workers)."""
        import termite

        def load(node):
            try:
                return here.run(termite.node_load, node[0], 2.0).value
            except Exception:  # noqa: BLE001 - a node that does not answer goes last
                return float("inf")

        loads = {node[1]: load(node) for node in nodes}
        return sorted(nodes, key=lambda node: loads[node[1]])

    def _place(self, ref, label, local, host):
        """Where a worker runs on a node: this folder, or its counterpart under a remote host's workdir."""
        here = self.config.invocation_params.dir
        if local or host is None or not host.workdir:
            return ref, label, local, str(here)
        try:
            relative = Path(here).relative_to(self.config.rootpath)
        except ValueError:
            relative = Path()
        return ref, label, local, str(Path(host.workdir) / relative)


async def _hub(events: queue.SimpleQueue):
    """On the controller's node: spawn relays (linked), and pass everything they and the cluster say to ``events``."""
    from termite_launcher.pytest_relay import relay

    import termite

    termite.trap_exit(True)  # a relay's end, or its node's loss, comes as Exit(pid, reason)
    termite.monitor_node(None)
    me = termite.self()
    while True:
        msg = await termite.receive()
        if msg.__class__ is tuple and msg and msg[0] == "spawn":
            _, key, ref, relay_args = msg
            try:
                pid = termite.spawn(relay, me, key, *relay_args, node=ref, link=True)
            except Exception as exc:  # noqa: BLE001 - said as the worker's failure
                events.put(("tw-error", key, f"could not spawn its relay: {type(exc).__name__}: {exc}"))
            else:
                events.put(("tw-spawned", key, pid))
        else:
            events.put(msg)
