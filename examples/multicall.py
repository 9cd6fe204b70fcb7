"""One request to the server of a name on many nodes: gen_server.multi_call and abcast (Erlang's).

    {Replies, BadNodes} = gen_server:multi_call([node() | nodes()], counter, get),
    gen_server:abcast(nodes(), counter, {add, 5})

Two more nodes run in other OS processes.  A counter is registered as
"counter" here and on node2; node3 has none, so it is a bad node.
"""

import termite
from termite import gen_server
from termite.testing import NodeProcess


class Counter(gen_server.GenServer):
    async def handle_call(self, request, sender, count):  # "get"
        return ("reply", count, count)

    async def handle_cast(self, msg, count):  # ("add", n)
        return ("noreply", count + msg[1])


async def main(node2_address, node3_address):
    node1 = termite.current_node()
    node2 = await termite.connect(*node2_address)
    node3 = await termite.connect(*node3_address)
    name = {node1: "node1", node2: "node2", node3: "node3"}
    for node in (node1, node2):
        await gen_server.start_wait(Counter(), 0, name="counter", node=node)

    everyone = [node1, node2, node3]
    gen_server.abcast(everyone, "counter", ("add", 5))  # no answer; node3 just does not get it
    replies, bad = await gen_server.multi_call(everyone, "counter", "get", timeout=5)
    print("abcast ('add', 5), multi_call 'get' =>", ", ".join(f"{name[n]}: {count}" for n, count in replies))
    print("bad nodes                          =>", ", ".join(name[n] for n in bad))
    return replies, bad


if __name__ == "__main__":
    # Two more nodes holding this script's session key: they admit each other and no one else.
    node2, node3 = NodeProcess("--keys", termite.session_keys()), NodeProcess("--keys", termite.session_keys())
    try:
        termite.run(main, node2.ref.address, node3.ref.address, network=termite.Network(keys=termite.session_keys()))
    finally:
        node2.stop()
        node3.stop()
