"""``termite-launch --init``: a commented starter cluster.yaml, the reference of every key.

As written it is this machine with one node per core, so ``termite-launch
cluster.yaml`` works at once.  Every other key is there too, commented out,
with its default or an example and what it does: a several-machine
``hosts:`` list to put in place of the first, and the cluster's settings.
(tests/test_launcher_cli.py checks that the file, and each commented block
uncommented, pass the launcher's own checks, and that every key of the
schema, launcher/cluster.schema.json, is in it.)
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["starter_text", "write_starter"]

_STARTER = """\
# The cluster termite-launch starts:   termite-launch {file}
#
# As written: this machine, one node per core.  Every other key is below,
# commented out, with its default or an example: uncomment and edit.  Paths
# are relative to this file's folder, and ~ is your home.  termite-launch
# checks this file and names the line of any mistake, with the fix.

hosts:                         # the machines to start nodes on, each listed once
  - address: localhost         # localhost, 127.0.0.1 or ::1 is this machine: its nodes start here
    cores: auto                # how many nodes: auto (one per core) or a number, e.g. cores: 4
    # label: here              # its name on the dashboard; default: the address
    # python: /usr/bin/python3 # the Python that runs its nodes; default: the one running termite-launch
    # workdir: .               # the folder its nodes run in; default: the one termite-launch runs in
    # env: {{OMP_NUM_THREADS: "1"}}   # extra environment variables for its nodes
    # bind: 127.0.0.1          # the address its nodes listen on; default: 127.0.0.1 here, else the address

# Several machines: put a list like this one in place of hosts: above.  The
# nodes of every host must reach the others', so this machine is listed by the
# address the others know it by, with local: true (no SSH).  The other hosts
# are reached over SSH, and need Python with termite installed.
#
# hosts:
#   - address: 192.168.1.10            # this machine, as the others reach it
#     local: true                      # its nodes start here, without SSH
#     cores: auto
#   - address: 192.168.1.20            # a host name or IP address; the user goes in ssh:
#     cores: 8                         # or auto: one per core, counted on that host
#     python: /home/me/venv/bin/python # default: python3
#     workdir: ~/work                  # where its code is; default: the login folder
#     env: {{OMP_NUM_THREADS: "1"}}
#     label: gpu-box
#     ssh:                             # or ssh: true, for ssh's defaults and ~/.ssh/config
#       user: me                       # default: your user, or ~/.ssh/config's User
#       port: 22
#       key: ~/.ssh/id_ed25519         # the private key to log in with; default: ssh's choice
#       options: {{StrictHostKeyChecking: accept-new}}   # ssh -o Name=value options

# In a Slurm allocation (salloc, or an sbatch script): the allocation's hosts,
# one node per allocated CPU, started with srun as one job step.  Put this in
# place of hosts: above (or keep the file and run termite-launch --slurm).
#
# hosts: slurm
# slurm:                               # optional
#   python: /home/me/venv/bin/python   # default: the one running termite-launch
#   workdir: ~/work                    # where the nodes run; default: where termite-launch runs
#   env: {{OMP_NUM_THREADS: "1"}}
#   srun: [--mem-per-cpu=2G]           # extra srun options

# Settings, with their defaults:
#
{name_line}# the cluster's name (dashboard, file names); default: this file's name
{keys_line}# the cluster's secret key: created if missing, copied to every host
# state_dir: .termite           # where the running cluster's state and the nodes' logs go
# heartbeat_interval: 0.5       # seconds between the heartbeats of each node to the others
# heartbeat_timeout: 3.0        # seconds of silence before a node is down (more than heartbeat_interval)
# idle_close: 300               # seconds a session with nothing in flight or held stays open (0: always)
# meter_interval: 1.0           # seconds between the load reports of each node (dashboard, dispatch)
# join_timeout: 30.0            # seconds to wait for every node to start and join
# restart:                      # a node whose process ends is restarted, as an Erlang supervisor does:
#   intensity: 5                #   at most this many times within period seconds, then it stays down
#   period: 60                  #   (intensity: 0 never restarts)
#   backoff: 0.5                #   seconds before its first restart; each next one waits twice as long,
#   max_backoff: 10             #   at most this long
#
# Keys starting with x- are ignored: a place for YAML anchors, e.g.
# x-worker: &worker {{cores: 8, python: /home/me/venv/bin/python}}
# and then, in a host:   <<: *worker
"""


def starter_text(name: str = "cluster", file: str = "cluster.yaml") -> str:
    """The starter cluster.yaml, for a file named ``file`` (a cluster named ``name``)."""
    column = 32  # where the comments of the settings start
    return _STARTER.format(
        file=file,
        name_line=f"# name: {name}".ljust(column - 1) + " ",
        keys_line=f"# keys: .termite/{name}.key".ljust(column - 1) + " ",
    )


def write_starter(path: str | os.PathLike) -> Path:
    """Write the starter at ``path``; FileExistsError (nothing written) if there is a file there."""
    path = Path(path)
    with open(path, "x", encoding="utf-8") as file:  # "x": never over a file the user has
        file.write(starter_text(path.stem, path.name))  # the default name: the file's stem
    return path
