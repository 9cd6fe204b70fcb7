"""Checks tests/test_kubernetes.py runs inside a pod's network namespace (``ip netns exec NS python pod_checks.py``).

    python pod_checks.py mesh KEYS HOST:PORT...             each node's peers, as JSON {node: [peer, ...]}
    python pod_checks.py busy KEYS HOST:PORT SECONDS URL    that node holds its GIL for SECONDS (one C call):
                                                            the probes at URL while it does, and after, as JSON
    python pod_checks.py probe SECONDS URL STATUS...        ask each URL in turn until it answers STATUS (all
                                                            within SECONDS); print each last answer, as JSON
"""

import json
import sys
import time
import urllib.error
import urllib.request

import termite
from stalls import stall
from termite.executor import local_address_towards


async def peers():
    """On a node: the nodes it is connected to."""
    return [f"{peer.host}:{peer.port}" for peer in termite.nodes()]


async def reply_peers(reply_to):
    termite.send(reply_to, ("peers", f"{termite.current_node().host}:{termite.current_node().port}", await peers()))


def _address(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def mesh(keys, addresses):
    here_host = local_address_towards(_address(addresses[0])[0])
    with termite.Node(host=here_host, port=0, keys=keys, client=True) as here:
        me = f"{here.ref.host}:{here.ref.port}"
        found = {}
        for address in addresses:
            ref = here.connect(*_address(address), timeout=10)
            here.spawn_on(ref, reply_peers, here.pid)
            _, node, its_peers = here.receive(("peers", str, list), timeout=10)
            found[node] = sorted(peer for peer in its_peers if peer != me)
    print(json.dumps(found))


def busy(keys, address, seconds, health):
    """That node holds its GIL for ``seconds`` in one C call: the probes while it does, and after."""
    here_host = local_address_towards(_address(address)[0])
    with termite.Node(host=here_host, port=0, keys=keys, client=True) as here:
        ref = here.connect(*_address(address), timeout=10)
        here.spawn_on(ref, stall, seconds, here.pid)
        _, staller = here.receive(("ready to stall", termite.Pid), timeout=10)
        here.send(staller, "go")
        during = _answers(seconds + 5, [(f"{health}/ready", 503), (f"{health}/live", 200)])
        here.receive(("stalled", termite.Pid), timeout=seconds + 30)
        after = _answers(30, [(f"{health}/ready", 200)])
    print(json.dumps({"during": during, "after": after}))


def probe(seconds, pairs):
    print(json.dumps(_answers(seconds, pairs)))


def _answers(seconds, pairs):
    """For each (url, status) in turn: ask until it answers that status, or ``seconds`` after the start."""
    deadline = time.monotonic() + seconds
    answers = []
    for url, status in pairs:
        while True:
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    got, body = answer.status, answer.read().decode()
            except urllib.error.HTTPError as error:
                got, body = error.code, error.read().decode()
            except OSError as error:
                got, body = None, str(error)
            if got == status or time.monotonic() > deadline:
                answers.append({"status": got, "body": body})
                break
            time.sleep(0.2)  # the kubelet's way: ask again
    return answers


if __name__ == "__main__":
    import pod_checks  # the functions the nodes run are then pod_checks's, which they import, not __main__'s

    command, *args = sys.argv[1:]
    if command == "mesh":
        pod_checks.mesh(args[0], args[1:])
    elif command == "busy":
        pod_checks.busy(args[0], args[1], float(args[2]), args[3])
    else:
        pod_checks.probe(float(args[0]), [(url, int(status)) for url, status in zip(args[1::2], args[2::2])])
