"""Layer 2, the network: processes of other nodes, used as if local.

The codec (messages to bytes: codec, pickling, diagnosis), cluster keys, the
transport (ZeroMQ sockets, CURVE admission, heartbeats; zmq_native for the
loaded libzmq), control frame kinds (frames), the distribution endpoint
(endpoint, watches, unborn), distribution's public face and global names.
Imports only termite._core.
"""
