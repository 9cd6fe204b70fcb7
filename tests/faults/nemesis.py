"""The nemesis: real faults done to real node processes, each bounded in time and undone in a finally.

=========  ===========================================================  ==========================
fault      how                                                          undone by
=========  ===========================================================  ==========================
kill       SIGKILL to the node's OS process                             nothing: the node is gone
pause      SIGSTOP, then SIGCONT ``seconds`` later                      SIGCONT (finally)
stall      a process spawned on the node runs ``sum(range(n))``, one    the call's own end: n is
           C call that holds the GIL (fault_workloads.gil_stall)        calibrated on the node
cut        nftables drops every TCP packet to or from the node:         flushing the cut chain
           its listening port both ways, and the connections it         (finally); the table is
           opened (marked by its process's group id at their first      deleted with the cluster
           packet)
=========  ===========================================================  ==========================

Nodes are started by :class:`FaultNode` (``python -m termite.node`` as
termite.testing.NodeProcess does) with a group id of their own, so that the
firewall can tell a node's packets from others' on loopback, and with a
lifetime after which the node exits by itself even if the test died.

The cut needs root and the ``nft`` command (Debian's ``nftables`` package);
without them :func:`cut_unavailable` says why, and cut schedules skip.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque

import termite
from fault_workloads import start_stall

__all__ = ["KINDS", "FaultNode", "Firewall", "Nemesis", "FaultRecord", "cut_unavailable", "sweep_stale_tables", "new_gid"]

KINDS = ("kill", "pause", "stall", "cut")

#: ``python -m termite.node ...`` that dies with the process that started it
#: (argv[2]) and exits by itself after argv[1] seconds, even if that process
#: hangs: a test that fails leaves no node behind.
_BOUNDED = """\
import ctypes, os, runpy, signal, sys, threading
ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: SIGKILL when the parent (thread) ends
if os.getppid() != int(sys.argv[2]):
    sys.exit(3)  # it ended before prctl took effect
timer = threading.Timer(float(sys.argv[1]), os._exit, (3,))
timer.daemon = True
timer.start()
sys.argv = sys.argv[3:]
runpy.run_module("termite.node", run_name="__main__", alter_sys=True)
"""


def _read_into(stream, lines: deque) -> None:
    with stream:
        lines.extend(stream)


class FaultNode:
    """A node in its own OS process, with its own group id (for the firewall), stopped by its pid.

    Start several with :meth:`launch` then :meth:`ready` each: they boot in parallel.
    """

    def __init__(self, name: str, args: list[str], path: list[str], lifetime: float = 300.0, gid: int | None = None):
        self.name = name
        self.gid = gid
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([*path, *filter(None, [env.get("PYTHONPATH")])])
        extra = {"group": gid} if gid is not None else {}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOUNDED, str(lifetime), str(os.getpid()), "termite.node", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tempfile.gettempdir(),  # not the repository: ``-c`` puts the working folder first on sys.path
            **extra,
        )
        self.ref: termite.NodeRef | None = None
        self.log_tail: deque[str] = deque(maxlen=300)
        self._log_reader: threading.Thread | None = None
        self.stopped = False  # SIGSTOPped and not yet continued

    def ready(self) -> "FaultNode":
        """Wait for the node's announcement (``termite node HOST:PORT incarnation HEX``)."""
        line = self.proc.stdout.readline()
        self._log_reader = threading.Thread(target=_read_into, args=(self.proc.stderr, self.log_tail), daemon=True)
        self._log_reader.start()
        if not line.startswith("termite node "):
            self.stop()
            raise RuntimeError(f"node {self.name} did not start: {line!r}\n{self.logged()}")
        _, _, address, _, incarnation = line.split()
        host, port = address.rsplit(":", 1)
        self.ref = termite.NodeRef(host, int(port), int(incarnation, 16))
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def logged(self) -> str:
        if self.proc.poll() is not None and self._log_reader is not None:
            self._log_reader.join(5)
        return "".join(self.log_tail)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGCONT (a stopped node cannot end), SIGTERM, then SIGKILL after ``timeout`` s."""
        if self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.stopped = False
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.proc.stdout:
            self.proc.stdout.close()
        if self._log_reader is not None:
            self._log_reader.join(5)


# -- the firewall -------------------------------------------------------------------

_TABLES = re.compile(r"table inet (termite_faults_(\d+)_\d+)")
_table_serials = iter(range(1, 1 << 30))


def _nft(*args: str, stdin: str | None = None) -> None:
    subprocess.run(["nft", *args], input=stdin, text=True, check=True, capture_output=True, timeout=10)


def cut_unavailable() -> str | None:
    """Why connections cannot be cut here, or None if they can."""
    if os.geteuid() != 0:
        return "cutting connections needs root (nftables rules)"
    if shutil.which("nft") is None:
        return "cutting connections needs the nft command: apt-get install -y nftables"
    probe = f"termite_faults_{os.getpid()}_0"
    try:
        _nft("-f", "-", stdin=f"table inet {probe} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n"
                              f"  meta skgid 1 ct mark 0 ct mark set 1\n }}\n}}\n")
        _nft("delete", "table", "inet", probe)
    except (subprocess.SubprocessError, OSError) as exc:
        detail = getattr(exc, "stderr", "") or exc
        return f"nftables with conntrack is not usable here: {str(detail).strip()[:200]}"
    return None


def sweep_stale_tables() -> list[str]:
    """Delete the tables of test processes that ended without deleting theirs; return their names."""
    try:
        listing = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    swept = []
    for name, owner in _TABLES.findall(listing):
        try:
            os.kill(int(owner), 0)
        except ProcessLookupError:
            try:
                _nft("delete", "table", "inet", name)
                swept.append(name)
            except subprocess.SubprocessError:
                pass
        except PermissionError:
            pass
    return swept


class Firewall:
    """One nftables table for one cluster: marks each node's connections; cuts a node on demand.

    A node runs with a group id of its own (``gid``).  From the moment the
    table exists, the first packet of every connection that node opens marks
    the connection with that gid (conntrack mark), so both directions of it
    can be dropped later; the node's listening port is matched by number.
    """

    def __init__(self):
        self.table = f"termite_faults_{os.getpid()}_{next(_table_serials)}"
        _nft("-f", "-", stdin=(
            f"table inet {self.table} {{\n"
            f"  chain cut {{\n  }}\n"
            f"  chain marks {{\n  }}\n"
            f"  chain out {{\n    type filter hook output priority 0; policy accept;\n    jump marks\n    jump cut\n  }}\n"
            f"}}\n"
        ))
        self._cuts = 0

    def mark(self, gid: int) -> None:
        """Mark every connection a process of group ``gid`` opens from now on."""
        _nft("add", "rule", "inet", self.table, "marks", "meta", "skgid", str(gid), "ct", "mark", "0",
             "ct", "mark", "set", str(gid))

    def cut(self, node: FaultNode) -> None:
        """Drop every packet to or from ``node``: its listening port, and the connections it opened."""
        port = str(node.ref.port)
        rules = (["tcp", "dport", port, "drop"], ["tcp", "sport", port, "drop"], ["ct", "mark", str(node.gid), "drop"])
        for rule in rules:
            _nft("add", "rule", "inet", self.table, "cut", *rule)
        self._cuts += 1

    def heal(self) -> None:
        _nft("flush", "chain", "inet", self.table, "cut")

    def close(self) -> None:
        try:
            _nft("delete", "table", "inet", self.table)
        except subprocess.SubprocessError:
            pass


# -- faults -------------------------------------------------------------------------


@dataclasses.dataclass
class FaultRecord:
    """What the nemesis did: ``kind`` to node ``victim`` from ``start`` to ``end`` (time.time())."""

    kind: str
    victim: str
    planned: float  # seconds it was to last (0 for kill)
    start: float = 0.0
    end: float = 0.0
    detail: str = ""

    def text(self) -> str:
        took = f"{self.end - self.start:.2f} s" if self.end else "unfinished"
        return f"{self.kind} {self.victim} for {self.planned:g} s (took {took}){': ' + self.detail if self.detail else ''}"


class Nemesis:
    """Faults done to the nodes of one cluster; every one ends within its bound, even on error.

    ``controller``: the test's termite.Node (it spawns the stall);
    ``observer``: a process there that receives the stall's report.
    """

    def __init__(self, nodes: dict[str, FaultNode], controller: termite.Node, observer, firewall: Firewall | None):
        self.nodes = nodes
        self.controller = controller
        self.observer = observer
        self.firewall = firewall
        self.done: list[FaultRecord] = []

    def apply(self, kind: str, victim: str, seconds: float) -> FaultRecord:
        record = FaultRecord(kind, victim, 0.0 if kind == "kill" else seconds)
        self.done.append(record)
        getattr(self, kind)(self.nodes[victim], seconds, record)
        return record

    def kill(self, node: FaultNode, seconds: float, record: FaultRecord) -> None:
        record.start = time.time()
        node.kill()
        record.end = time.time()

    def pause(self, node: FaultNode, seconds: float, record: FaultRecord) -> None:
        record.start = time.time()
        node.signal(signal.SIGSTOP)
        node.stopped = True
        try:
            time.sleep(seconds)
        finally:
            node.signal(signal.SIGCONT)
            node.stopped = False
            record.end = time.time()

    def stall(self, node: FaultNode, seconds: float, record: FaultRecord) -> None:
        """Hold the node's GIL for ``seconds``; returns when the stall should be over (its report may lag)."""
        record.start = time.time()
        try:
            self.controller.spawn(start_stall, node.ref, seconds, self.observer)
            time.sleep(seconds)
        finally:
            record.end = time.time()

    def cut(self, node: FaultNode, seconds: float, record: FaultRecord) -> None:
        if self.firewall is None:
            raise RuntimeError("no firewall: cut_unavailable() says why")
        record.start = time.time()
        try:
            self.firewall.cut(node)
            time.sleep(seconds)
        finally:
            self.firewall.heal()
            record.end = time.time()

    def undo_all(self) -> None:
        """Whatever happens: continue every stopped node, heal every cut."""
        for node in self.nodes.values():
            if node.stopped:
                node.signal(signal.SIGCONT)
                node.stopped = False
        if self.firewall is not None:
            try:
                self.firewall.heal()
            except subprocess.SubprocessError:
                pass


def new_gid(rng: random.Random | None = None) -> int:
    """A group id no other node of any cluster here is likely to have (also its conntrack mark)."""
    return (rng or random.SystemRandom()).randrange(1 << 20, 1 << 31)
