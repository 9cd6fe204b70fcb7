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

The thread lives until ``stop``: the nodes it forks die with it
(PR_SET_PDEATHSIG).  termite is imported only here, when a run starts, not
whenever pytest loads the plugin.
"""

from __future__ import annotations

import json
import os
import queue
import threading
from pathlib import Path

import pytest

__all__ = ["ClusterLink"]


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

    def start(self, first_workers) -> None:
        """Bring the cluster up on a thread; ``first_workers()`` is called there once it is."""
        try:
            self.basetemp = self.config._tmp_path_factory.getbasetemp()  # as xdist: a worker's is a folder in it
        except Exception:  # noqa: BLE001 - workers then make their own
            self.basetemp = None
        self.thread = threading.Thread(
            target=self._run, args=(first_workers,), name="termite-pytest-cluster", daemon=True
        )
        self.thread.start()

    def _run(self, first_workers) -> None:
        cluster = here = None
        try:
            cluster, here, nodes, how = self._join_or_start()
            self.hub = here.spawn(_hub, self.events)
            self.node, self.nodes, self.how, self.cluster = here, nodes, how, cluster
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

    def stop(self) -> None:
        """End the thread: the controller's node, and the cluster if this run started it."""
        self.stop_event.set()
        self.thread.join(self.cluster_config.join_timeout + 60)

    # -- talking to the workers' relays ---------------------------------------------

    def command(self, worker, command: dict) -> None:
        """Send ``command`` to ``worker``'s pytest (held until its relay's pid is known)."""
        line = json.dumps(command)
        if worker.relay is None:
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
        """End ``worker``'s pytest at once, if its relay is known."""
        if worker.relay is not None:
            self.node.send(worker.relay, ("kill",))

    def spawn_relay(self, worker) -> None:
        """Have the hub spawn ``worker``'s relay on its node (it answers on the event queue)."""
        args = list(self.config.invocation_params.args)
        env = {}
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        info = {
            "id": worker.name,
            "count": self.planned,
            "testrunuid": self.testrunuid,
            # On another host that folder does not exist: workers there make their own.
            "basetemp": str(self.basetemp / worker.name) if worker.local and self.basetemp is not None else None,
            "cwd_on_path": self.cwd_on_path,
        }
        show_output = self.config.getoption("capture", "fd") == "no"  # -s: what tests print is shown here
        relay_args = ([json.dumps(info), *args], worker.cwd, env, show_output)
        self.node.send(self.hub, ("spawn", worker.key, worker.node, relay_args))

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
