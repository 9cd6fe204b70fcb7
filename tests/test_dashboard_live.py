"""The live dashboard in a real terminal (tmux): log records and lines said land in the events pane.

termite-launch draws with rich; a log record written to the terminal while it
redraws lands over the table.  While the dashboard shows, the launcher's own
log records (a node "is down") are events, and lines said on the cluster
(termite.say) are printed above the dashboard and are events too.
"""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

import termite

NODECODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "nodecode")  # what the nodes import

import sayers
from terminals import TMUX, alive, until

pytestmark = pytest.mark.skipif(not shutil.which("tmux"), reason="tmux is not installed")






def _in_pane(line: str) -> bool:
    return line.startswith("│")


@pytest.mark.timeout(120)
def test_log_records_and_lines_said_go_to_the_events_pane_not_over_the_dashboard(tmp_path):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(textwrap.dedent("""
        hosts:
          - address: localhost
            cores: 2
        heartbeat_timeout: 1.0
        heartbeat_interval: 0.1
        meter_interval: 0.2
        """))
    session = f"termite-dash-{os.getpid()}"
    # tmux gives a session its server's environment, not ours: say which termite (and test code) to use
    path = os.pathsep.join(filter(None, [NODECODE, os.environ.get("PYTHONPATH")]))
    command = (f"env PYTHONPATH={shlex.quote(path)} {sys.executable} -m termite_launcher {cluster};"
               " echo EXITED $?; sleep 60")
    subprocess.run([*TMUX, "new-session", "-d", "-s", session, "-x", "120", "-y", "50", "-c", str(tmp_path), command],
                   check=True)
    state = {"nodes": []}  # the nodes it runs, from its state file
    try:
        until(session, lambda text: text.count(" up ") >= 2 and "events" in text)
        state = json.loads((tmp_path / ".termite" / "cluster.json").read_text())
        victim = state["nodes"][0]
        os.kill(victim["os_pid"], signal.SIGKILL)
        # termite's transport logs the loss in the launcher's process: an event, of its level
        screen = until(session, lambda text: any(_in_pane(line) and "is down" in line for line in text.splitlines()))
        warned = [line for line in screen.splitlines() if "is down" in line]
        assert all(_in_pane(line) for line in warned), screen
        assert any(f"warning      termite.transport: node {victim['address']} is down" in line for line in warned)

        until(session, lambda text: "up ↻1" in text)  # the killed node, restarted
        with termite.Executor(cluster=str(cluster)) as pool:
            here = pool.node
            nodes = here.run(termite.nodes)
            for node in nodes:  # the restarted one learns the console's name as the launcher reconnects
                here.spawn_on(node, sayers.console_known, 20, here.pid)
            assert {here.receive(("console", termite.NodeRef, bool), timeout=30)[2] for _ in nodes} == {True}
            list(pool.map(termite.say, ["said on the cluster"] * 4, range(4)))
        screen = until(session, lambda text: sum(_in_pane(line) and " said " in line
                                                  for line in text.splitlines()) == 4)
        pane = [line for line in screen.splitlines() if _in_pane(line) and " said " in line]
        above = [line for line in screen.splitlines() if line.startswith("[") and "said on the cluster" in line]
        assert sorted(line.split()[-1] for line in above) == ["0", "1", "2", "3"], screen  # printed above the table
        assert sorted(line.split()[-2] for line in pane) == ["0", "1", "2", "3"], screen
        assert all(line.split()[3].endswith("/2]") for line in pane)  # thunks: under their node's runner

        state = json.loads((tmp_path / ".termite" / "cluster.json").read_text())
        subprocess.run([*TMUX, "send-keys", "-t", session, "C-c"], check=True)
        until(session, lambda text: "EXITED" in text)
    finally:
        subprocess.run([*TMUX, "kill-session", "-t", session], capture_output=True)
    assert state["nodes"] and not any(alive(node["os_pid"]) for node in state["nodes"])  # it stopped them all

