"""The key/value server, a generic server plugin (paper, section 5.2).

    (define key/value-generic-server-plugin
      (make-generic-server-plugin
        (lambda ()                       ; INIT
          (print "Key-Value server starting")
          (make-dict))
        (lambda (term from state)        ; CALL
          (match term
            (('store key val) (dict-set! state key val) (list 'reply 'ok state))
            (('lookup key) (list 'reply (dict-ref state key) state))))
        (lambda (term state)             ; CAST
          (match term
            ('stop (list 'stop 'normal state))))
        (lambda (reason state)           ; TERMINATE
          (print "Key-Value server terminating"))))

    (define (kv:start) (generic-server-start-link key/value-generic-server-plugin))
    (define (kv:stop server) (generic-server-cast server 'stop))
    (define (kv:store server key val) (generic-server-call server (list 'store key val)))
    (define (kv:lookup server key) (generic-server-call server (list 'lookup key)))

The plugin is a subclass of termite.GenServer; the generic server is
termite.gen_server (Erlang's gen_server).
"""

import termite
from termite import gen_server


class KeyValue(gen_server.GenServer):
    async def init(self):                                     # INIT
        print("Key-Value server starting")
        return {}

    async def handle_call(self, term, sender, state):        # CALL
        match term:
            case ("store", key, val):
                state[key] = val
                return ("reply", "ok", state)
            case ("lookup", key):
                return ("reply", state.get(key), state)

    async def handle_cast(self, term, state):                 # CAST
        match term:
            case "stop":
                return ("stop", "normal", state)
        return ("noreply", state)

    async def terminate(self, reason, state):                 # TERMINATE
        print("Key-Value server terminating")


def kv_start():
    return gen_server.start(KeyValue(), link=True)           # generic-server-start-link


def kv_stop(server):
    gen_server.cast(server, "stop")


async def kv_store(server, key, val):
    return await gen_server.call(server, ("store", key, val))


async def kv_lookup(server, key):
    return await gen_server.call(server, ("lookup", key))


async def main():
    server = kv_start()
    print("kv_store(server, 'apple', 3) =>", await kv_store(server, "apple", 3))
    print("kv_store(server, 'pear', 5)  =>", await kv_store(server, "pear", 5))
    print("kv_lookup(server, 'apple')   =>", await kv_lookup(server, "apple"))
    print("kv_lookup(server, 'pear')    =>", await kv_lookup(server, "pear"))
    ref = termite.monitor(server)
    kv_stop(server)
    down = await termite.receive(termite.where(termite.Down, lambda m: m.ref == ref))
    print("kv_stop(server), then Down   =>", down.reason)
    return down.reason


if __name__ == "__main__":
    termite.run(main)
